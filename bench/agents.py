#!/usr/bin/env python3
"""What tools and JSON schemas cost (grammar-constrained generation), stdlib only.

Against a running `hearth serve` (or any OpenAI-compatible chat endpoint): the same question
asked plainly, with a tool under `auto` and under `required`, and with a JSON schema, each
streamed ROUNDS times. Reports, per mode, the median time to the first streamed piece and the
median generation rate (the server's `timings.predicted_per_second`), and both as ratios to the
plain request measured in the same run.

    bench/agents.py URL MODEL [ROUNDS]     # e.g. bench/agents.py http://127.0.0.1:11434 smollm2 5
"""
import http.client
import json
import statistics
import sys
import time
import urllib.parse

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
          "city": {"type": "string"}}, "required": ["name", "age", "city"], "additionalProperties": False}
QUESTION = "What is the weather in Paris? Describe it."

MODES = {
    "plain": {},
    "tools auto": {"tools": [WEATHER], "tool_choice": "auto"},
    "tools required": {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
    "json schema": {"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}},
}


def run(url, model, extra):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 64,
            "temperature": 0, "stream": True, **extra}
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, (resp.status, resp.read()[:300])
    first = None
    rate = None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        obj = json.loads(line[6:])
        delta = (obj.get("choices") or [{}])[0].get("delta") or {}
        if first is None and (delta.get("content") or delta.get("tool_calls")):
            first = time.perf_counter() - t0
        if obj.get("timings"):
            rate = obj["timings"]["predicted_per_second"]
    return first, rate


def main():
    url, model = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    run(url, model, {})  # load the model
    results = {}
    for name, extra in MODES.items():
        ttft, rate = [], []
        for _ in range(rounds):
            f, r = run(url, model, extra)
            if f is not None:
                ttft.append(f * 1000)
            if r:
                rate.append(r)
        results[name] = (statistics.median(ttft) if ttft else float("nan"), statistics.median(rate) if rate else float("nan"))
    base_ttft, base_rate = results["plain"]
    print("| mode | TTFT ms | vs plain | gen tok/s | vs plain |")
    print("|---|---|---|---|---|")
    for name, (ttft, rate) in results.items():
        print(f"| {name} | {ttft:.1f} | {ttft / base_ttft:.2f}x | {rate:.1f} | {rate / base_rate:.2f}x |")


if __name__ == "__main__":
    main()

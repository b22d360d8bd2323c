#!/usr/bin/env python3
"""Serving benchmark, stdlib only (run by bench/serve.sh).

Against an OpenAI-compatible /v1/completions endpoint (hearth serve, or upstream llama-server):
- single-stream generation tok/s measured by the client over a streamed response (time from
  the first to the last token chunk, 128 tokens, ignore_eos);
- aggregate generated tok/s of N concurrent streams (N = 1, 4, 8): all tokens over wall time.

    bench/serve.py URL MODEL [--label NAME]   # prints one JSON object per line
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

N_GEN = 128


def stream_completion(url, model, prompt, n):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": n, "temperature": 0,
                       "stream": True, "ignore_eos": True, "cache_prompt": False})
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, (resp.status, resp.read()[:300])
    first = last = None
    chunks = 0
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        obj = json.loads(data)
        choices = obj.get("choices") or []
        if choices and choices[0].get("text"):
            now = time.perf_counter()
            first = first or now
            last = now
            chunks += 1
    conn.close()
    return first, last, chunks


def main():
    url, model = sys.argv[1], sys.argv[2]
    label = sys.argv[sys.argv.index("--label") + 1] if "--label" in sys.argv else url
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else "all"
    prompts = [f"Story number {i}: once upon a time" for i in range(64)]
    # Warm up (loads the model).
    stream_completion(url, model, "Hello", 8)
    # Single stream, 3 runs.
    if only in ("all", "single"):
        rates = []
        for i in range(3):
            first, last, chunks = stream_completion(url, model, prompts[i], N_GEN)
            rates.append((chunks - 1) / (last - first))
        print(json.dumps({"label": label, "test": "single", "tok_s": sum(rates) / len(rates)}), flush=True)
    if only == "single":
        return
    for n in (1, 4, 8):
        results = [None] * n
        def worker(k):
            results[k] = stream_completion(url, model, prompts[8 + k + n], N_GEN)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        tokens = sum(r[2] for r in results)
        print(json.dumps({"label": label, "test": f"agg{n}", "tok_s": tokens / wall, "tokens": tokens}), flush=True)


if __name__ == "__main__":
    main()

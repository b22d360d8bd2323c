"""Claude Code, the real CLI (`@anthropic-ai/claude-code`, pinned and installed by
scripts/test.sh), pointed at `hearth serve` with ANTHROPIC_BASE_URL: a whole tool-using session.

Claude Code sends what it always sends (`/v1/messages?beta=true`, streamed, its ~2,000-token
system prompt as blocks with `cache_control`, `thinking`, `context_management`, `metadata`,
`max_tokens`, 32000 unless CLAUDE_CODE_MAX_OUTPUT_TOKENS says less as here, `x-api-key`); the model calls its Read tool, Claude Code reads the file and
sends the result back, and hearth answers that turn too. The test model is tiny: what it says
after the result is not checked (it tends to call Read again), only that the loop works and no
request fails.

HEARTH_CLAUDE_CODE is the `claude` binary; without it the test is skipped (scripts/test.sh
always sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from e2e_support import agent_cli, create_greedy

SECRET = "The secret word is pineapple."
SESSION_TIMEOUT = 600


@pytest.fixture(scope="module")
def claude() -> Path:
    return agent_cli("HEARTH_CLAUDE_CODE")


@pytest.fixture(scope="module")
def url(serve_another):
    # A server of its own: the long prompts must not stay in the session server's slots.
    with serve_another() as url:
        yield url


def test_a_claude_code_session_calls_a_tool_and_gets_its_result_answered(claude, url, tmp_path):
    # A copy of the test model that samples greedily (Claude Code sends no temperature), so
    # the session goes the same way each time.
    create_greedy(url, "smollm2-greedy")
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text(SECRET + "\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "hearth-test",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # Its `max_tokens` (32000 by default): a greedy tiny model running on in a string would
        # otherwise take many minutes to reach it on 2 cores.
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "1024",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    run = subprocess.run(
        [
            str(claude), "-p", "Read the file hello.txt and tell me the secret word.",
            "--model", "smollm2-greedy", "--max-turns", "3", "--output-format", "stream-json", "--verbose",
            "--tools", "Read",
        ],
        cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=SESSION_TIMEOUT,
    )
    events = []
    for line in run.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    said = f"exit {run.returncode}\nstdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-2000:]}"
    assert events and events[0].get("type") == "system", said
    assert events[0].get("tools") == ["Read"], said

    def blocks(kind: str, role: str):
        for i, e in enumerate(events):
            if e.get("type") == role:
                for b in e["message"].get("content") or []:
                    if isinstance(b, dict) and b.get("type") == kind:
                        yield i, b

    calls = [(i, b) for i, b in blocks("tool_use", "assistant") if b["name"] == "Read"]
    assert calls, f"no Read call: {said}"
    at, first = calls[0]
    assert first["id"], said
    # Claude Code ran each call and sent its result back: the file, or its own complaint about
    # the arguments (the tiny model, greedy, fills Read's optional `pages` with "" or runs on
    # in that string until the token limit cuts the call, which Claude Code reports as JSON it
    # cannot parse) ...
    results = {b["tool_use_id"]: b for _, b in blocks("tool_result", "user")}
    for _, c in calls:
        r = results.get(c["id"])
        assert r is not None, f"no result for {c}: {said}"
        assert r.get("is_error") or SECRET in json.dumps(r), said
        assert "hello.txt" in json.dumps(c) + json.dumps(r), said
    # ... and hearth answered the request that carried the result.
    assert any(e.get("type") == "assistant" for e in events[at + 2:]), said
    final = events[-1]
    assert final.get("type") == "result", said
    assert final.get("api_error_status") is None, said
    assert final.get("subtype") in ("success", "error_max_turns"), said
    assert final["usage"]["input_tokens"] > 0, said

"""opencode, the real CLI (`opencode-ai`, pinned and installed by scripts/test.sh), pointed at
`hearth serve` as an OpenAI-compatible provider: a tool-using `opencode run` session.

opencode sends what it always sends: chat completions, streamed with
`stream_options.include_usage`, `max_tokens` (the model's output limit from opencode's config),
its ~7,000-token system prompt and function tools with `tool_choice: "auto"`, and a second
request at the same time (the session's title, no tools). The model calls opencode's `read`
tool, opencode reads the file and sends the result back as a `tool` message, and hearth answers
that request too.

The test model is tiny and greedy, and what it does depends on the whole prompt, which holds the
working directory and the date. Given opencode's 10 tools, on some paths it called `read`, then
`write`, then `todowrite` with a list that never ended (opencode's default `max_tokens` is
32000: 2,198 tokens in 190 s and counting). So opencode's config leaves it the three read-only
tools (`read`, `glob`, `grep`, whose arguments are short) and an output limit of 512 tokens.
The session is stopped once the loop has gone round (greedy, it calls the tools again and
again): a tool call, opencode's result, and the next step answered. What is checked is
opencode's own event stream (`--format json`): the calls, their results, the steps that
answered them, no error.

HEARTH_OPENCODE is the `opencode` launcher; without it the test is skipped (scripts/test.sh
always sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from e2e_support import agent_cli, create_greedy, run_until

SECRET = "The secret word is pineapple."
SESSION_SECONDS = 240


@pytest.fixture(scope="module")
def opencode() -> Path:
    return agent_cli("HEARTH_OPENCODE")


@pytest.fixture(scope="module")
def url(serve_another):
    # A server of its own, two slots for opencode's two requests at once, each about 8,000
    # tokens.
    with serve_another("-c", "16384") as url:
        yield url


def test_an_opencode_session_calls_a_tool_and_gets_its_result_answered(opencode, url, tmp_path):
    # Greedy (opencode sends no temperature), so the session goes the same way each time.
    create_greedy(url, "opencode-greedy", num_predict=256)
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text(SECRET + "\n")
    (work / "opencode.json").write_text(json.dumps({
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "hearth": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "hearth",
                "options": {"baseURL": f"{url}/v1", "apiKey": "hearth-test"},
                "models": {
                    "opencode-greedy": {
                        "name": "opencode-greedy",
                        "tool_call": True,
                        "limit": {"context": 16384, "output": 512},
                    }
                },
            }
        },
        "model": "hearth/opencode-greedy",
        "autoupdate": False,
        "share": "disabled",
        # Only the read-only tools (see the module's text).
        "tools": {t: False for t in ("bash", "edit", "write", "task", "todowrite", "webfetch", "skill")},
    }))
    home = tmp_path / "home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "XDG_STATE_HOME": str(home / ".local/state"),
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    out_path = tmp_path / "events.jsonl"
    err_path = tmp_path / "stderr.txt"
    with open(out_path, "w") as out_file, open(err_path, "w") as err_file:
        proc = subprocess.Popen(
            [str(opencode), "run", "--pure", "--format", "json", "Read the file hello.txt and tell me the secret word."],
            cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out_file, stderr=err_file, start_new_session=True,
        )
    # Until the loop has gone round once or the session ends by itself.
    stopped = run_until(proc, lambda: _answered(_events(out_path))[1], SESSION_SECONDS)
    events = _events(out_path)
    said = (
        f"exit {proc.returncode} (stopped: {stopped})\nevents:\n{out_path.read_text()[-4000:]}\n"
        f"stderr:\n{err_path.read_text()[-3000:]}"
    )
    assert not [e for e in events if e.get("type") == "error"], said
    uses, answered = _answered(events)
    assert uses, f"no tool call: {said}"
    first = uses[0]["part"]
    assert first["callID"], said
    # opencode ran it: the file (greedy, the starter model reads it), or opencode's complaint
    # about the arguments the tiny model wrote ...
    state = first["state"]
    assert state["status"] in ("completed", "error"), said
    if first["tool"] == "read" and state["status"] == "completed":
        assert SECRET in state["output"], said
    # ... and hearth answered the request that carried the result: a step after it finished.
    assert answered, f"nothing answered the request with the result of {first['callID']}: {said}"


def _events(path: Path) -> list[dict]:
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line opencode is still writing
    return events


def _answered(events: list[dict]) -> tuple[list[dict], bool]:
    """The tool calls opencode ran, and whether a step after the first one's finished."""
    uses = [e for e in events if e.get("type") == "tool_use"]
    if not uses:
        return uses, False
    at = events.index(uses[0])
    # The step that made the call finishes, the next one starts with the result in its request
    # and finishes when hearth has answered it.
    finished = [e for e in events[at + 1:] if e.get("type") == "step_finish"]
    return uses, len(finished) >= 2

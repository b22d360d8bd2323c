"""Codex, the real CLI (`@openai/codex`, pinned and installed by scripts/test.sh), pointed at
`hearth serve` as a `wire_api = "responses"` provider: a tool-using `codex exec` session.

Codex sends what it always sends (`POST /v1/responses`, streamed, `Authorization: Bearer`, its
~5,000-token instructions as `developer` input items, function tools with `strict: false`,
`tool_choice: "auto"`, `parallel_tool_calls`, `reasoning`, `store: false`, `include`,
`prompt_cache_key`, `client_metadata`; no `max_output_tokens`, no temperature). The model
calls one of Codex's tools, Codex runs it and sends a `function_call_output` back in the next
request, and hearth answers that one too. Codex's goal, multi-agent, image and web-search
tools are switched off to keep the prompt short on 2 cores (3 function tools stay: its shell
session tools and request_user_input).

The test model is tiny and never finishes the task on its own: greedy, it calls the same tool
again and again until a call runs past the stored token limit (Codex then reports the
response's `incomplete` status, as it would from OpenAI). So the session is stopped once the loop
has gone round (a call, its output, the model's next item), and what is checked is Codex's own
record of it (the rollout file in CODEX_HOME/sessions): calls made, the first one's output sent
back, hearth answering the request that carried it, and no error in the stream but the model's
own token limit.

HEARTH_CODEX is the `codex` launcher; without it the test is skipped (scripts/test.sh always
sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from e2e_support import agent_cli, create_greedy, run_until

SECRET = "The secret word is pineapple."
SESSION_SECONDS = 180
# The only error a session may report: the tiny model running past the stored token limit.
MODEL_LIMIT = "Incomplete response returned, reason: max_output_tokens"


@pytest.fixture(scope="module")
def codex() -> Path:
    return agent_cli("HEARTH_CODEX")


@pytest.fixture(scope="module")
def url(serve_another):
    # A server of its own: the long prompts must not stay in the session server's slots.
    # Codex's first request is about 5,900 tokens, and each turn adds its call and output.
    with serve_another("-c", "16384") as url:
        yield url


def test_a_codex_session_calls_tools_and_gets_their_outputs_answered(codex, url, tmp_path):
    # Greedy (Codex sends no temperature) so the session goes the same way each time, and a
    # token limit of the model's own (Codex sends none) so a runaway call ends in seconds.
    create_greedy(url, "codex-greedy", num_predict=256)
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text(
        'model = "codex-greedy"\n'
        'model_provider = "hearth"\n'
        "[model_providers.hearth]\n"
        'name = "hearth"\n'
        f'base_url = "{url}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "HEARTH_TEST_KEY"\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text(SECRET + "\n")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "CODEX_HOME": str(home),
        "HEARTH_TEST_KEY": "hearth-test",
        "NO_PROXY": "127.0.0.1,localhost",
        "RUST_LOG": "error",
    }
    args = [
        str(codex), "exec", "--json", "--skip-git-repo-check", "-s", "read-only",
        "--disable", "goals", "--disable", "multi_agent", "--disable", "view_image", "-c", 'web_search="disabled"',
        "Read the file hello.txt and tell me the secret word.",
    ]
    with open(tmp_path / "stdout.txt", "w") as out_file, open(tmp_path / "stderr.txt", "w") as err_file:
        proc = subprocess.Popen(
            args, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out_file, stderr=err_file, start_new_session=True,
        )
    # Until the loop has gone round once (a call, its output, the next answer) or the session
    # ends by itself.
    stopped = run_until(proc, lambda: _answered(_rollout_items(home))[1], SESSION_SECONDS)
    out, err = (tmp_path / "stdout.txt").read_text(), (tmp_path / "stderr.txt").read_text()
    said = f"exit {proc.returncode} (stopped: {stopped})\nstdout:\n{out[-4000:]}\nstderr:\n{err[-3000:]}"

    events = []
    for line in out.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    assert any(e.get("type") == "turn.started" for e in events), said
    # No failed request, dropped stream or retry: the only error allowed is the model's limit.
    errors = [e for e in events if e.get("type") in ("error", "turn.failed")]
    for e in errors:
        message = e.get("message") or (e.get("error") or {}).get("message")
        assert message == MODEL_LIMIT, said
    for bad in ("Reconnecting", "stream disconnected", "unexpected status", "error sending request"):
        assert bad not in out + err, said

    items = _rollout_items(home)
    names = {"exec_command", "write_stdin", "request_user_input"}
    calls, answered = _answered(items)
    assert calls, f"no function call in the rollout: {said}"
    for call in calls:
        assert call["name"] in names, call
        assert call["call_id"], call
        json.loads(call["arguments"])  # complete calls only: a cut one ends the turn instead
    # Codex ran the first call and sent its output back, and hearth answered the request that
    # carried it: the model's next item follows the output.
    assert answered, f"nothing answered the request with {calls[0]['call_id']}'s output: {said}"


def _rollout_items(home: Path) -> list[dict]:
    """The response items of Codex's record of the session (CODEX_HOME/sessions/.../rollout-*.jsonl)."""
    rollouts = sorted((home / "sessions").rglob("rollout-*.jsonl")) if (home / "sessions").is_dir() else []
    assert len(rollouts) <= 1, rollouts
    items = []
    for line in rollouts[0].read_text().splitlines() if rollouts else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line Codex is still writing
        if record.get("type") == "response_item":
            items.append(record["payload"])
    return items


def _answered(items: list[dict]) -> tuple[list[dict], bool]:
    """The function calls in ITEMS, and whether the model answered after the first one's output."""
    calls = [it for it in items if it.get("type") == "function_call"]
    if not calls:
        return calls, False
    outputs = [i for i, it in enumerate(items) if it.get("type") == "function_call_output" and it.get("call_id") == calls[0]["call_id"]]
    if not outputs:
        return calls, False
    later = items[outputs[0] + 1:]
    return calls, any(it.get("type") == "function_call" or it.get("role") == "assistant" for it in later)

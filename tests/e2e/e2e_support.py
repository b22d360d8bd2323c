"""Constants and helpers shared by the end-to-end tests."""

from __future__ import annotations

import struct
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Seconds any one request may take. Generous: the model is small, but a 2-core machine may be
# busy with other work.
REQUEST_TIMEOUT = 300.0

MODEL = "smollm2"
MODEL_TAGGED = "smollm2:latest"
CAPITAL_PROMPT = "What is the capital of France?"
# Upstream llama.cpp's greedy continuation of the chat prompt above, 32 tokens.
GREEDY_CAPITAL = (REPO / "crates/engine/tests/reference/greedy_capital.txt").read_text(encoding="utf-8")
GREEDY_TOKENS = 32
# Tokens of the chat prompt above rendered with SmolLM2's template (its default system prompt).
CAPITAL_PROMPT_TOKENS = 37
EMBEDDING_DIM = 576
# A prompt whose greedy answer under a JSON grammar is a short, complete object (without a
# grammar the model wraps it in a Markdown code block).
JSON_PROMPT = 'Give the capital of France as a JSON object with the key "capital".'


def write_tiny_gguf(path: Path) -> None:
    """A minimal GGUF (v3, no tensors) with a llama architecture: a small, distinct model
    file for registry pulls (the store checks the GGUF header, not that llama.cpp loads it)."""

    def string(s: str) -> bytes:
        b = s.encode()
        return struct.pack("<Q", len(b)) + b

    kv = [("general.architecture", "llama"), ("general.name", "hearth e2e tiny")]
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv))
    for key, value in kv:
        out += string(key) + struct.pack("<I", 8) + string(value)  # 8: string
    out += b"\0" * (-len(out) % 32)
    path.write_bytes(out)

# The key a second server is started with (`--api-key`) to test authentication.
API_KEY = "hearth-e2e-key"


def agent_cli(variable: str) -> Path:
    """The real agent CLI that the environment variable VARIABLE names (scripts/test.sh installs
    each, pinned, and sets its variable); the test is skipped without it."""
    import os

    import pytest

    given = os.environ.get(variable)
    if not given:
        pytest.skip(f"{variable} is not set (scripts/test.sh installs the CLI and sets it)")
    path = Path(given)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{variable}={given} is not an executable", pytrace=False)
    return path


def create_greedy(url: str, name: str, **parameters) -> None:
    """A copy of the test model named NAME that samples greedily (agent CLIs send no
    temperature), so a session goes the same way each time; PARAMETERS are stored too."""
    import httpx

    created = httpx.post(
        f"{url}/api/create",
        json={"model": name, "from": MODEL, "stream": False, "parameters": {"temperature": 0, **parameters}},
        timeout=REQUEST_TIMEOUT,
    )
    assert created.status_code == 200, created.text


def run_until(proc, done, seconds: float) -> bool:
    """Waits for PROC (started with start_new_session=True) to end, at most SECONDS, stopping it
    early once `done()` is true: an agent session with the tiny test model never ends by itself.
    Whether it had to be stopped."""
    import os
    import signal
    import subprocess
    import time

    deadline = time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline and not done():
        time.sleep(1)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return True

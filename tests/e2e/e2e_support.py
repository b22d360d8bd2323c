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

"""The Ollama API (`/api/*`) through the official `ollama` SDK (and raw HTTP for bodies the
SDK would not send)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import ollama
import pytest

from e2e_support import (
    CAPITAL_PROMPT,
    CAPITAL_PROMPT_TOKENS,
    EMBEDDING_DIM,
    GREEDY_CAPITAL,
    GREEDY_TOKENS,
    JSON_PROMPT,
    MODEL,
    MODEL_TAGGED,
)

GREEDY = {"temperature": 0, "num_predict": GREEDY_TOKENS}


def names(client) -> list[str]:
    return [m.model for m in client.list().models]


def test_list(oll):
    models = {m.model: m for m in oll.list().models}
    assert MODEL_TAGGED in models, list(models)
    m = models[MODEL_TAGGED]
    assert m.size and m.size > 50_000_000
    assert m.digest and len(m.digest) == 64
    assert m.modified_at is not None
    assert m.details.format == "gguf"
    assert m.details.family == "llama"
    assert m.details.quantization_level == "Q4_1"


def test_show(oll):
    r = oll.show(MODEL)
    assert r.modelinfo is not None
    assert r.modelinfo["general.architecture"] == "llama"
    assert r.modelinfo["llama.embedding_length"] == EMBEDDING_DIM
    assert "completion" in (r.capabilities or [])
    assert r.details.family == "llama"
    assert "<|im_start|>" in (r.template or ""), "the model's own chat template"
    assert r.modified_at is not None


def test_chat_streamed_greedy_matches_upstream_llama_cpp(oll):
    parts = list(oll.chat(model=MODEL, messages=[{"role": "user", "content": CAPITAL_PROMPT}], options=GREEDY, stream=True))
    assert len(parts) > 2
    assert all(p.message.role == "assistant" for p in parts)
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) == GREEDY_CAPITAL
    last = parts[-1]
    assert last.done_reason == "length"
    assert last.prompt_eval_count == CAPITAL_PROMPT_TOKENS
    assert last.eval_count == GREEDY_TOKENS
    assert last.total_duration and last.total_duration > 0
    assert last.model == MODEL_TAGGED


def test_chat_not_streamed(oll):
    r = oll.chat(model=MODEL, messages=[{"role": "user", "content": CAPITAL_PROMPT}], options=GREEDY, stream=False)
    assert r.message.content == GREEDY_CAPITAL
    assert r.done and r.done_reason == "length"


def test_generate(oll):
    r = oll.generate(model=MODEL, prompt=CAPITAL_PROMPT, options=GREEDY)
    # generate renders the prompt with the chat template, like chat with one user message.
    assert r.response == GREEDY_CAPITAL
    assert r.done and r.done_reason == "length"
    assert r.prompt_eval_count == CAPITAL_PROMPT_TOKENS
    assert r.eval_count == GREEDY_TOKENS


def test_generate_raw_matches_openai_completions(oll, oai):
    r = oll.generate(model=MODEL, prompt="The sky is", raw=True, options={"temperature": 0, "num_predict": 8})
    c = oai.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    assert r.response == c.choices[0].text
    assert r.eval_count == 8


def test_generate_format_json_is_a_json_object(oll):
    r = oll.generate(
        model=MODEL,
        prompt=JSON_PROMPT,
        format="json",
        options={"temperature": 0, "num_predict": 128},
    )
    try:
        value = json.loads(r.response)
    except json.JSONDecodeError as e:
        pytest.fail(f"format json gave text that is not JSON ({e}): {r.response!r}")
    assert isinstance(value, dict), r.response
    assert r.done_reason == "stop", "the object ends the generation"


def test_chat_format_schema_is_a_json_object(oll):
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    r = oll.chat(
        model=MODEL,
        messages=[{"role": "user", "content": JSON_PROMPT}],
        format=schema,
        options={"temperature": 0, "num_predict": 128},
    )
    try:
        value = json.loads(r.message.content)
    except json.JSONDecodeError as e:
        pytest.fail(f"a JSON schema format gave text that is not JSON ({e}): {r.message.content!r}")
    assert isinstance(value, dict), r.message.content
    assert r.done_reason == "stop"


def test_embed_list_input(oll):
    r = oll.embed(model=MODEL, input=["The sky is blue.", "Paris is the capital of France."])
    assert len(r.embeddings) == 2
    for v in r.embeddings:
        assert len(v) == EMBEDDING_DIM
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-3)
    assert r.embeddings[0] != r.embeddings[1]
    assert r.prompt_eval_count and r.prompt_eval_count > 0


def test_ps_shows_the_loaded_model(oll):
    oll.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 1})
    loaded = {m.model: m for m in oll.ps().models}
    assert MODEL_TAGGED in loaded, list(loaded)
    m = loaded[MODEL_TAGGED]
    assert m.expires_at is not None
    assert m.expires_at > datetime.now(timezone.utc), m.expires_at
    assert m.size and m.size > 0
    assert m.context_length and m.context_length > 0


def test_copy_then_delete(oll):
    copy = "smollm2-e2e-copy"
    assert oll.copy(MODEL, copy).status == "success"
    assert f"{copy}:latest" in names(oll)
    assert oll.show(copy).modelinfo["general.architecture"] == "llama"
    assert oll.delete(copy).status == "success"
    assert f"{copy}:latest" not in names(oll)
    assert MODEL_TAGGED in names(oll), "deleting a copy leaves the original"
    with pytest.raises(ollama.ResponseError) as e:
        oll.delete(copy)
    assert e.value.status_code == 404


def test_create_from_model_with_a_system_prompt(oll, http):
    name, system = "smollm2-e2e-pirate", "You are a pirate."
    try:
        r = oll.create(model=name, from_=MODEL, system=system)
        assert r.status == "success"
        assert f"{name}:latest" in names(oll)
        shown = oll.show(name)
        assert f'SYSTEM """{system}"""' in (shown.modelfile or "")
        # The SDK's ShowResponse has no `system` field: read it from the raw answer.
        raw = http.post("/api/show", json={"model": name})
        assert raw.status_code == 200
        assert raw.json()["system"] == system
        # The system prompt replaces the template's default one in the prompt.
        g = oll.generate(model=name, prompt=CAPITAL_PROMPT, options={"temperature": 0, "num_predict": 1})
        assert g.prompt_eval_count != CAPITAL_PROMPT_TOKENS
    finally:
        try:
            oll.delete(name)
        except ollama.ResponseError:
            pass


@pytest.fixture(scope="module")
def pulled(oll, registry):
    """The progress of one pull of the fixture's `library/tiny:1`."""
    return list(oll.pull(registry.reference, insecure=True, stream=True))


class TestPull:
    """`pull` from a local Ollama-style registry (hearth-fixture) over plain http."""

    def test_status_lines(self, pulled):
        statuses = [p.status for p in pulled]
        assert statuses[0] == "pulling manifest", statuses
        assert statuses[-1] == "success", statuses
        assert any(s.startswith("pulling ") and s != "pulling manifest" for s in statuses), statuses

    def test_a_layer_completes(self, pulled):
        done = [p for p in pulled if p.total and p.completed == p.total]
        assert done, [p.model_dump() for p in pulled]

    def test_progress_digest_is_the_full_sha256(self, pulled):
        # Ollama sends the layer's whole digest ("sha256:" and 64 hex digits) with each
        # progress line; the status shows its first 12 hex digits.
        layers = [p for p in pulled if p.digest]
        assert layers, [p.model_dump() for p in pulled]
        for p in layers:
            hexpart = p.digest.removeprefix("sha256:")
            assert p.digest.startswith("sha256:") and len(hexpart) == 64, p.digest
            assert p.status == f"pulling {hexpart[:12]}", p.status

    def test_the_model_is_listed(self, oll, pulled, registry):
        assert registry.reference in names(oll)
        assert oll.show(registry.reference).modelinfo["general.architecture"] == "llama"

    def test_not_streamed_answers_once_done(self, url, pulled, registry):
        # The SDK's default (stream=False): one answer when the pull is over. The model is
        # already there, so it is quick; a short timeout keeps a hang from stalling the suite.
        client = ollama.Client(host=url, timeout=30)
        assert client.pull(registry.reference, insecure=True).status == "success"


def test_unknown_model_is_a_404(oll):
    with pytest.raises(ollama.ResponseError) as e:
        oll.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}], stream=False)
    assert e.value.status_code == 404
    assert "no-such-model" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        list(oll.generate(model="no-such-model", prompt="x", stream=True))
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        oll.show("no-such-model")
    assert e.value.status_code == 404


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/chat", {"model": MODEL, "messages": "What is the capital of France?"}, "messages"),
        ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ("/api/generate", {"model": MODEL, "prompt": "x", "options": {"temperature": "hot"}}, "options.temperature"),
        ("/api/embed", {"model": MODEL, "input": 5}, "input"),
        ("/api/generate", {"prompt": "x"}, "model"),
    ],
)
def test_malformed_body_is_a_400_naming_the_field(http, path, body, field):
    r = http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert isinstance(error, str)
    assert f"`{field}`" in error, error


def test_body_that_is_not_json_is_a_400(http):
    r = http.post("/api/chat", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str)

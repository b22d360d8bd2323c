"""The OpenAI API (`/v1/*`) through the official `openai` SDK."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import openai
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

CAPITAL_MESSAGES = [{"role": "user", "content": CAPITAL_PROMPT}]


def test_models_list_has_the_model(oai):
    ids = [m.id for m in oai.models.list()]
    assert MODEL_TAGGED in ids, ids


def test_models_retrieve(oai):
    m = oai.models.retrieve(MODEL_TAGGED)
    assert m.id == MODEL_TAGGED
    assert m.object == "model"
    assert isinstance(m.created, int)
    assert m.owned_by


def test_models_retrieve_unknown_is_not_found(oai):
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model:latest")


def test_chat_greedy_matches_upstream_llama_cpp(oai):
    r = oai.chat.completions.create(model=MODEL, messages=CAPITAL_MESSAGES, temperature=0, max_tokens=GREEDY_TOKENS)
    assert r.object == "chat.completion"
    assert r.model == MODEL_TAGGED
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == GREEDY_CAPITAL
    assert choice.finish_reason == "length"
    assert r.usage.prompt_tokens == CAPITAL_PROMPT_TOKENS
    assert r.usage.completion_tokens == GREEDY_TOKENS
    assert r.usage.total_tokens == CAPITAL_PROMPT_TOKENS + GREEDY_TOKENS


def test_chat_streamed_equals_non_streamed_with_usage_chunk(oai):
    stream = oai.chat.completions.create(
        model=MODEL,
        messages=CAPITAL_MESSAGES,
        temperature=0,
        max_tokens=GREEDY_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks, "no chunks"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "every chunk carries the same id"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == GREEDY_CAPITAL
    finish = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finish == ["length"]
    # The usage chunk is the last one, with no choices.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == CAPITAL_PROMPT_TOKENS
    assert last.usage.completion_tokens == GREEDY_TOKENS
    assert last.usage.total_tokens == CAPITAL_PROMPT_TOKENS + GREEDY_TOKENS
    assert all(c.usage is None for c in chunks[:-1])


def test_two_concurrent_streams_each_give_the_greedy_text(oai):
    # The server decodes both in one batch (--parallel 2); neither changes the other.
    def one(_):
        stream = oai.chat.completions.create(
            model=MODEL, messages=CAPITAL_MESSAGES, temperature=0, max_tokens=GREEDY_TOKENS, stream=True
        )
        return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(one, range(2))) == [GREEDY_CAPITAL, GREEDY_CAPITAL]


def test_chat_streamed_without_usage_has_no_usage_chunk(oai):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=CAPITAL_MESSAGES, temperature=0, max_tokens=4, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_completions_text(oai):
    r = oai.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert len(r.choices) == 1
    text = r.choices[0].text
    assert isinstance(text, str) and text.strip(), repr(text)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    # Greedy: the same request gives the same text.
    again = oai.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    assert again.choices[0].text == text


def check_embeddings(r, inputs: list[str]) -> list[list[float]]:
    assert r.object == "list"
    assert len(r.data) == len(inputs)
    assert [d.index for d in r.data] == list(range(len(inputs)))
    vectors = [d.embedding for d in r.data]
    for v in vectors:
        assert len(v) == EMBEDDING_DIM
        assert all(math.isfinite(x) for x in v)
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-3)
    assert vectors[0] != vectors[1]
    assert r.usage.prompt_tokens > 0
    return vectors


EMBED_INPUTS = ["The sky is blue.", "Paris is the capital of France."]


def test_embeddings_two_inputs_as_floats(oai):
    r = oai.embeddings.create(model=MODEL, input=EMBED_INPUTS, encoding_format="float")
    vectors = check_embeddings(r, EMBED_INPUTS)
    # One input alone gives the same vector as in the batch.
    alone = oai.embeddings.create(model=MODEL, input=EMBED_INPUTS[1], encoding_format="float").data[0].embedding
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(alone, vectors[1]))


def test_embeddings_two_inputs_sdk_defaults(oai):
    # Without encoding_format the SDK asks for "base64" (little-endian float32) and decodes it,
    # as OpenAI, Ollama and llama-server answer.
    r = oai.embeddings.create(model=MODEL, input=EMBED_INPUTS)
    floats = oai.embeddings.create(model=MODEL, input=EMBED_INPUTS, encoding_format="float")
    vectors = check_embeddings(r, EMBED_INPUTS)
    for v, f in zip(vectors, (d.embedding for d in floats.data)):
        assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(v, f))


def test_json_mode_output_is_a_json_object(oai):
    r = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": JSON_PROMPT}],
        temperature=0,
        max_tokens=128,
        response_format={"type": "json_object"},
    )
    text = r.choices[0].message.content
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        pytest.fail(f"response_format json_object gave text that is not JSON ({e}): {text!r}")
    assert isinstance(value, dict), text
    assert r.choices[0].finish_reason == "stop", "the object ends the generation"


def test_bad_temperature_is_a_bad_request_naming_the_field(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL, messages=CAPITAL_MESSAGES, temperature=5, max_tokens=1)
    assert e.value.status_code == 400
    assert "temperature" in e.value.message


def test_messages_of_the_wrong_type_are_a_bad_request_naming_the_field(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL, messages="What is the capital of France?", max_tokens=1)
    assert "messages" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": 5}], max_tokens=1)
    assert "messages[0].content" in e.value.message


def test_unknown_model_is_not_found(oai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="no-such-model", messages=CAPITAL_MESSAGES, max_tokens=1)
    assert "no-such-model" in e.value.message
    with pytest.raises(openai.NotFoundError):
        oai.embeddings.create(model="no-such-model", input="x", encoding_format="float")

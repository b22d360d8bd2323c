"""Agents' features through the official SDKs: tool calls, JSON-schema output and reasoning in
OpenAI chat (`openai`), Ollama chat (`ollama`), the Anthropic Messages API (`anthropic`) and the
OpenAI Responses API (`openai`); and bad tool requests, which get a 400 that names what is wrong
while the server stays up.

SmolLM2's template has no tool syntax, so hearth describes the tools in the system prompt and
constrains the answer with a grammar: a required (or named) tool call is always a valid call whose
arguments match the tool's schema, even from this tiny model. Generation is greedy throughout, so
a streamed answer equals the same request not streamed.

These tests have a server of their own (like the session's, on its store): the long tool prompts
they leave in the slots' caches must not change the greedy answers that test_ollama.py and
test_openai.py compare with upstream llama.cpp's (see
test_greedy_answer_does_not_depend_on_what_the_slot_held_before).
"""

from __future__ import annotations

import json

import anthropic
import httpx
import ollama
import openai
import pytest
from pydantic import BaseModel

from e2e_support import API_KEY, CAPITAL_PROMPT, CAPITAL_PROMPT_TOKENS, GREEDY_TOKENS, MODEL, REQUEST_TIMEOUT

WEATHER_QUESTION = "What is the weather in Paris?"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME_PARAMS = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "description": "An IANA time zone, e.g. Europe/Paris"}},
    "required": ["timezone"],
    "additionalProperties": False,
}
WEATHER_DESCRIPTION = "Get the current weather in a city"
TIME_DESCRIPTION = "Get the current time in a time zone"
# What the weather tool answers when a test feeds a result back.
WEATHER_RESULT = '{"temperature": 18, "unit": "celsius", "sky": "sunny"}'

PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON_PROMPT = "Invent a person and give their name and age as JSON."

# A prompt whose greedy answer ends well within 64 tokens.
SHORT_PROMPT = "Hi"
SHORT_MAX = 64


@pytest.fixture(scope="module")
def url(serve_another):
    with serve_another() as url:
        yield url


@pytest.fixture(scope="module")
def oai(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=REQUEST_TIMEOUT, max_retries=0)


@pytest.fixture(scope="module")
def oll(url):
    return ollama.Client(host=url, timeout=REQUEST_TIMEOUT)


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def anth(url):
    return anthropic.Anthropic(base_url=url, api_key="x", timeout=REQUEST_TIMEOUT, max_retries=0)


class Person(BaseModel):
    name: str
    age: int


def oai_tool(name: str, description: str, parameters: dict) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


OAI_TOOLS = [oai_tool("get_weather", WEATHER_DESCRIPTION, WEATHER_PARAMS), oai_tool("get_time", TIME_DESCRIPTION, TIME_PARAMS)]


def check_weather_arguments(args) -> None:
    """`args` (a dict) matches WEATHER_PARAMS exactly."""
    assert isinstance(args, dict), args
    assert set(args) == {"city", "unit"}, args
    assert isinstance(args["city"], str) and args["city"], args
    assert args["unit"] in ("celsius", "fahrenheit"), args


def check_time_arguments(args) -> None:
    assert isinstance(args, dict), args
    assert set(args) == {"timezone"}, args
    assert isinstance(args["timezone"], str), args


def check_person(text: str) -> dict:
    """`text` is JSON matching PERSON_SCHEMA exactly."""
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as e:
        pytest.fail(f"the output is not JSON ({e}): {text!r}")
    assert isinstance(value, dict), text
    assert set(value) == {"name", "age"}, text
    assert isinstance(value["name"], str), text
    assert isinstance(value["age"], int) and not isinstance(value["age"], bool), text
    return value


def json_arguments(text: str) -> dict:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError) as e:
        pytest.fail(f"the tool call's arguments are not JSON ({e}): {text!r}")


# ---------------------------------------------------------------------------------------------
# OpenAI chat completions


def weather_call(oai, max_tokens=128, **extra):
    return oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": WEATHER_QUESTION}],
        tools=OAI_TOOLS,
        temperature=0,
        max_tokens=max_tokens,
        **extra,
    )


def test_chat_required_tool_call_has_valid_arguments(oai):
    r = weather_call(oai, tool_choice="required")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls, choice.message
    assert not choice.message.content
    for call in calls:
        assert call.type == "function"
        assert call.id
        assert call.function.name in ("get_weather", "get_time")
        args = json_arguments(call.function.arguments)
        (check_weather_arguments if call.function.name == "get_weather" else check_time_arguments)(args)
    assert len({c.id for c in calls}) == len(calls), "each call has its own id"


def test_chat_required_tool_call_streamed_equals_not_streamed(oai):
    whole = weather_call(oai, tool_choice="required").choices[0].message.tool_calls
    stream = weather_call(oai, tool_choice="required", stream=True)
    calls: dict[int, dict] = {}
    finish, content = [], ""
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            if choice.finish_reason:
                finish.append(choice.finish_reason)
            for piece in choice.delta.tool_calls or []:
                if piece.index not in calls:
                    # The first piece of a call carries its id, type and name.
                    assert piece.id and piece.function and piece.function.name, piece
                    assert piece.type == "function", piece
                    calls[piece.index] = {"id": piece.id, "name": piece.function.name, "arguments": ""}
                else:
                    assert piece.id in (None, calls[piece.index]["id"]), piece
                calls[piece.index]["arguments"] += (piece.function.arguments if piece.function else None) or ""
    assert finish == ["tool_calls"]
    assert content == ""
    assert sorted(calls) == list(range(len(calls))), "indexes count from 0"
    got = [(calls[i]["name"], json_arguments(calls[i]["arguments"])) for i in sorted(calls)]
    assert got == [(c.function.name, json.loads(c.function.arguments)) for c in whole]


def test_chat_named_tool_choice_calls_that_tool_once(oai):
    # The question is about the weather; the named tool is the other one.
    r = weather_call(oai, tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"]
    check_time_arguments(json_arguments(calls[0].function.arguments))


def test_chat_tool_choice_none_gives_text(oai):
    r = weather_call(oai, tool_choice="none", max_tokens=32)
    message = r.choices[0].message
    assert not message.tool_calls
    assert isinstance(message.content, str) and message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")


def test_chat_tool_result_fed_back_gets_a_text_answer(oai):
    # The agent loop as the SDK's docs write it: the assistant message goes back as it came.
    first = weather_call(oai, tool_choice="required").choices[0].message
    call = first.tool_calls[0]
    messages = [
        {"role": "user", "content": WEATHER_QUESTION},
        first,
        {"role": "tool", "tool_call_id": call.id, "content": WEATHER_RESULT},
    ]
    r = oai.chat.completions.create(
        model=MODEL, messages=messages, tools=OAI_TOOLS, tool_choice="none", temperature=0, max_tokens=64
    )
    message = r.choices[0].message
    assert not message.tool_calls
    assert isinstance(message.content, str) and message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    # The call and its result are in the prompt.
    question_only = weather_call(oai, tool_choice="none", max_tokens=1)
    assert r.usage.prompt_tokens > question_only.usage.prompt_tokens + 20


PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}}


def test_chat_json_schema_is_obeyed(oai):
    r = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PERSON_PROMPT}],
        response_format=PERSON_FORMAT,
        temperature=0,
        max_tokens=128,
    )
    check_person(r.choices[0].message.content)
    assert r.choices[0].finish_reason == "stop"


def test_chat_json_schema_streamed_equals_not_streamed(oai):
    kwargs = dict(
        model=MODEL,
        messages=[{"role": "user", "content": PERSON_PROMPT}],
        response_format=PERSON_FORMAT,
        temperature=0,
        max_tokens=128,
    )
    whole = oai.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(oai.chat.completions.create(stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check_person(text)
    assert text == whole


def test_chat_parse_with_a_pydantic_model(oai):
    r = oai.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": PERSON_PROMPT}],
        response_format=Person,
        temperature=0,
        max_tokens=128,
    )
    parsed = r.choices[0].message.parsed
    assert isinstance(parsed, Person), r.choices[0].message
    assert parsed == Person(**check_person(r.choices[0].message.content))


def test_chat_stream_helper_with_a_pydantic_model(oai):
    with oai.chat.completions.stream(
        model=MODEL,
        messages=[{"role": "user", "content": PERSON_PROMPT}],
        response_format=Person,
        temperature=0,
        max_tokens=128,
    ) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Person), final.choices[0].message


class Unit(BaseModel):
    name: str


class Weather(BaseModel):
    city: str
    unit: Unit


def test_chat_pydantic_function_tool_with_a_nested_model(oai):
    # pydantic puts nested models in `$defs` and points at them with `#/$defs/...`, relative to
    # the tool's own parameters schema.
    tool = openai.pydantic_function_tool(Weather)
    assert "$defs" in tool["function"]["parameters"]
    r = oai.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": WEATHER_QUESTION}],
        tools=[tool],
        tool_choice="required",
        temperature=0,
        max_tokens=128,
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "Weather"
    assert isinstance(call.function.parsed_arguments, Weather), call.function


# ---------------------------------------------------------------------------------------------
# Ollama chat


def get_weather(city: str) -> str:
    """
    Get the current weather in a city

    Args:
      city: The city, e.g. Paris

    Returns:
      The weather
    """
    return WEATHER_RESULT


def test_ollama_chat_with_a_python_function_as_tool(oll):
    r = oll.chat(
        model=MODEL,
        messages=[{"role": "user", "content": WEATHER_QUESTION}],
        tools=[get_weather],
        options={"temperature": 0, "num_predict": 128},
    )
    calls = r.message.tool_calls
    assert calls, r.message
    assert calls[0].function.name == "get_weather"
    args = calls[0].function.arguments
    assert isinstance(args, dict), args
    assert set(args) == {"city"} and isinstance(args["city"], str), args
    assert r.done_reason == "stop"


def test_ollama_format_schema_is_obeyed(oll):
    r = oll.chat(
        model=MODEL,
        messages=[{"role": "user", "content": PERSON_PROMPT}],
        format=Person.model_json_schema(),
        options={"temperature": 0, "num_predict": 128},
    )
    assert Person(**check_person(r.message.content))


def test_ollama_think_on_a_model_that_cannot_think_is_a_bad_request(oll):
    with pytest.raises(ollama.ResponseError) as e:
        oll.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], think=True, options={"num_predict": 1})
    assert e.value.status_code == 400
    assert "think" in e.value.error


def test_ollama_invalid_tool_schema_is_a_bad_request(http):
    # Raw HTTP: the SDK drops the keywords of a property it does not model (`$ref` among them).
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "tools": [tool], "stream": False, "options": {"num_predict": 1}}
    r = http.post("/api/chat", json=body)
    assert r.status_code == 400, r.text
    assert "schema" in r.json()["error"]


# ---------------------------------------------------------------------------------------------
# Anthropic Messages API
#
# The SDK has no `temperature` argument any more: greedy decoding goes in `extra_body`.

GREEDY_BODY = {"temperature": 0}
CAPITAL_MESSAGE = [{"role": "user", "content": CAPITAL_PROMPT}]

ANTH_TOOLS = [
    {"name": "get_weather", "description": WEATHER_DESCRIPTION, "input_schema": WEATHER_PARAMS},
    {"name": "get_time", "description": TIME_DESCRIPTION, "input_schema": TIME_PARAMS},
]


def chat_answer(oai, max_tokens: int, **extra):
    """OpenAI chat's greedy answer to CAPITAL_PROMPT: what the other APIs must answer too.

    (Not GREEDY_CAPITAL itself: with flash attention the greedy text of a prompt can depend on
    what its slot's cache held before, as with llama-server's prompt cache: a shared prefix's KV
    computed in another batch differs in the last bits; asked right after, the same prompt
    reuses this one's whole cache.)"""
    return oai.chat.completions.create(
        model=MODEL, messages=CAPITAL_MESSAGE, temperature=0, max_tokens=max_tokens, **extra
    ).choices[0]


def check_anthropic_error(e: anthropic.APIStatusError, status: int) -> str:
    """The error is in the Anthropic format; its message."""
    assert e.status_code == status
    body = e.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"], body
    return body["error"]["message"]


def test_anthropic_message_is_chat_s_greedy_text(oai, anth):
    want = chat_answer(oai, GREEDY_TOKENS)
    r = anth.messages.create(model=MODEL, max_tokens=GREEDY_TOKENS, messages=CAPITAL_MESSAGE, extra_body=GREEDY_BODY)
    assert r.type == "message" and r.role == "assistant"
    assert r.id
    assert [b.type for b in r.content] == ["text"]
    assert r.content[0].text == want.message.content
    assert r.stop_reason == {"length": "max_tokens", "stop": "end_turn"}[want.finish_reason]
    assert r.usage.input_tokens == CAPITAL_PROMPT_TOKENS
    assert r.usage.output_tokens == GREEDY_TOKENS or r.stop_reason == "end_turn"


def test_anthropic_message_that_ends(anth):
    r = anth.messages.create(
        model=MODEL,
        max_tokens=SHORT_MAX,
        system="You are a friendly assistant.",
        messages=[{"role": "user", "content": SHORT_PROMPT}],
        extra_body=GREEDY_BODY,
    )
    assert r.stop_reason == "end_turn"
    assert r.stop_sequence is None
    assert r.content[0].text.strip()
    assert 0 < r.usage.output_tokens < SHORT_MAX


def test_anthropic_stop_sequence(oai, anth):
    text = chat_answer(oai, GREEDY_TOKENS).message.content
    words = text.split()
    stop = words[len(words) // 2]
    r = anth.messages.create(
        model=MODEL, max_tokens=GREEDY_TOKENS, stop_sequences=[stop], messages=CAPITAL_MESSAGE, extra_body=GREEDY_BODY
    )
    assert r.stop_reason == "stop_sequence"
    assert r.stop_sequence == stop
    assert r.content[0].text == text[: text.index(stop)]


def test_anthropic_stream_helper_equals_not_streamed(anth):
    kwargs = dict(model=MODEL, max_tokens=GREEDY_TOKENS, messages=CAPITAL_MESSAGE, extra_body=GREEDY_BODY)
    whole = anth.messages.create(**kwargs)
    with anth.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_anthropic_raw_stream_events(anth):
    events = list(
        anth.messages.create(model=MODEL, max_tokens=3, messages=CAPITAL_MESSAGE, stream=True, extra_body=GREEDY_BODY)
    )
    kinds = [e.type for e in events if e.type != "ping"]
    assert kinds[:2] == ["message_start", "content_block_start"], kinds
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], kinds
    assert set(kinds[2:-3]) == {"content_block_delta"}, kinds
    start = events[0].message
    assert start.role == "assistant" and start.content == []
    # Clients read the prompt's size from message_start (as Anthropic sends it).
    assert start.usage.input_tokens == CAPITAL_PROMPT_TOKENS, start.usage
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert all(d.type == "text_delta" for d in deltas)
    assert "".join(d.text for d in deltas)
    message_delta = next(e for e in events if e.type == "message_delta")
    assert message_delta.delta.stop_reason == "max_tokens"
    assert message_delta.usage.output_tokens == 3


def check_weather_tool_use(message) -> anthropic.types.ToolUseBlock:
    assert message.stop_reason == "tool_use", message
    uses = [b for b in message.content if b.type == "tool_use"]
    assert uses, message.content
    for use in uses:
        assert use.id
        assert use.name in ("get_weather", "get_time")
        (check_weather_arguments if use.name == "get_weather" else check_time_arguments)(use.input)
    return uses[0]


def anthropic_weather_call(anth, max_tokens=128, **extra):
    return anth.messages.create(
        model=MODEL,
        max_tokens=max_tokens,
        tools=ANTH_TOOLS,
        messages=[{"role": "user", "content": WEATHER_QUESTION}],
        extra_body=GREEDY_BODY,
        **extra,
    )


def test_anthropic_tool_use_with_tool_choice_any(anth):
    check_weather_tool_use(anthropic_weather_call(anth, tool_choice={"type": "any"}))


def test_anthropic_tool_choice_tool_streamed(anth):
    # The input arrives as input_json_delta pieces that the helper joins and parses.
    with anth.messages.stream(
        model=MODEL,
        max_tokens=128,
        tools=ANTH_TOOLS,
        tool_choice={"type": "tool", "name": "get_time"},
        messages=[{"role": "user", "content": WEATHER_QUESTION}],
        extra_body=GREEDY_BODY,
    ) as stream:
        kinds = {e.delta.type for e in stream if e.type == "content_block_delta"}
        final = stream.get_final_message()
    assert "input_json_delta" in kinds, kinds
    use = check_weather_tool_use(final)
    assert [b.name for b in final.content if b.type == "tool_use"] == ["get_time"]
    check_time_arguments(use.input)


def test_anthropic_tool_choice_none_gives_text(anth):
    r = anthropic_weather_call(anth, tool_choice={"type": "none"}, max_tokens=16)
    assert [b.type for b in r.content] == ["text"]
    assert r.stop_reason in ("end_turn", "max_tokens")


def test_anthropic_tool_result_fed_back_is_answered(anth):
    first = anthropic_weather_call(anth, tool_choice={"type": "any"})
    use = check_weather_tool_use(first)
    # The agent loop as the SDK's docs write it: the assistant's content goes back as it came.
    r = anth.messages.create(
        model=MODEL,
        max_tokens=64,
        tools=ANTH_TOOLS,
        tool_choice={"type": "none"},
        messages=[
            {"role": "user", "content": WEATHER_QUESTION},
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": WEATHER_RESULT}]},
        ],
        extra_body=GREEDY_BODY,
    )
    assert r.stop_reason in ("end_turn", "max_tokens")
    assert [b.type for b in r.content] == ["text"]
    assert r.content[0].text.strip()


def test_anthropic_count_tokens(anth):
    r = anth.messages.count_tokens(model=MODEL, messages=CAPITAL_MESSAGE)
    assert r.input_tokens == CAPITAL_PROMPT_TOKENS
    with_tools = anth.messages.count_tokens(model=MODEL, tools=ANTH_TOOLS, messages=CAPITAL_MESSAGE)
    assert with_tools.input_tokens > r.input_tokens


def test_anthropic_beta_query_path(anth):
    # Claude Code calls /v1/messages?beta=true.
    r = anth.messages.create(
        model=MODEL, max_tokens=4, messages=CAPITAL_MESSAGE, extra_body=GREEDY_BODY, extra_query={"beta": "true"}
    )
    assert r.content[0].text
    assert r.usage.output_tokens == 4
    count = anth.messages.count_tokens(model=MODEL, messages=CAPITAL_MESSAGE, extra_query={"beta": "true"})
    assert count.input_tokens == CAPITAL_PROMPT_TOKENS


def test_anthropic_errors_are_in_the_anthropic_format(anth):
    with pytest.raises(anthropic.BadRequestError) as e:
        anth.messages.create(
            model=MODEL,
            max_tokens=4,
            tools=ANTH_TOOLS,
            tool_choice={"type": "tool", "name": "no_such_tool"},
            messages=[{"role": "user", "content": WEATHER_QUESTION}],
        )
    assert "no_such_tool" in check_anthropic_error(e.value, 400)
    with pytest.raises(anthropic.NotFoundError) as e:
        anth.messages.create(model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
    assert "no-such-model" in check_anthropic_error(e.value, 404)


def test_api_key_in_x_api_key_or_bearer(keyed_url):
    def client(**kwargs):
        return anthropic.Anthropic(base_url=keyed_url, timeout=REQUEST_TIMEOUT, max_retries=0, **kwargs)

    message = dict(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "Hi"}])
    # Anthropic's header alone (this SDK sends api_key as a bearer token: that header is omitted).
    x_api_key = client(api_key=API_KEY, default_headers={"Authorization": anthropic.omit, "X-Api-Key": API_KEY})
    assert x_api_key.messages.create(**message).usage.output_tokens == 1
    assert x_api_key.messages.count_tokens(model=MODEL, messages=message["messages"]).input_tokens > 0
    assert client(api_key=API_KEY).messages.create(**message).usage.output_tokens == 1
    wrong = client(api_key="wrong", default_headers={"Authorization": anthropic.omit, "X-Api-Key": "wrong"})
    with pytest.raises(anthropic.AuthenticationError) as e:
        wrong.messages.create(**message)
    assert e.value.status_code == 401
    with pytest.raises(anthropic.AuthenticationError):
        client(api_key="wrong").messages.create(**message)
    # The OpenAI SDK's bearer token, too.
    oai = openai.OpenAI(base_url=f"{keyed_url}/v1", api_key=API_KEY, timeout=REQUEST_TIMEOUT, max_retries=0)
    r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1)
    assert r.usage.completion_tokens == 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed_url}/v1", api_key="wrong", max_retries=0).models.list()


# ---------------------------------------------------------------------------------------------
# OpenAI Responses API

RESP_TOOLS = [
    {"type": "function", "name": "get_weather", "description": WEATHER_DESCRIPTION, "parameters": WEATHER_PARAMS, "strict": True},
    {"type": "function", "name": "get_time", "description": TIME_DESCRIPTION, "parameters": TIME_PARAMS, "strict": True},
]


def test_responses_create_is_chat_s_greedy_text(oai):
    want = chat_answer(oai, GREEDY_TOKENS)
    r = oai.responses.create(model=MODEL, input=CAPITAL_PROMPT, temperature=0, max_output_tokens=GREEDY_TOKENS)
    assert r.object == "response"
    assert r.output_text == want.message.content
    assert [item.type for item in r.output] == ["message"]
    assert r.usage.input_tokens == CAPITAL_PROMPT_TOKENS
    if want.finish_reason == "length":
        assert r.status == "incomplete"
        assert r.incomplete_details.reason == "max_output_tokens"
        assert r.usage.output_tokens == GREEDY_TOKENS
    else:
        assert r.status == "completed"


def test_responses_with_instructions_that_ends(oai):
    r = oai.responses.create(
        model=MODEL,
        instructions="You are a friendly assistant.",
        input=SHORT_PROMPT,
        temperature=0,
        max_output_tokens=SHORT_MAX,
    )
    assert r.status == "completed"
    message = r.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert r.output_text.strip()
    assert 0 < r.usage.output_tokens < SHORT_MAX


def test_responses_stream_helper(oai):
    kwargs = dict(model=MODEL, input=SHORT_PROMPT, temperature=0, max_output_tokens=SHORT_MAX)
    whole = oai.responses.create(**kwargs)
    assert whole.status == "completed", "the prompt's answer ends within the limit"
    with oai.responses.stream(**kwargs) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created", kinds
    assert kinds[-1] == "response.completed", kinds
    assert "response.output_text.delta" in kinds
    assert final.status == "completed"
    assert final.output_text == whole.output_text


def test_responses_stream_cut_short_ends_incomplete(oai):
    events = list(oai.responses.create(model=MODEL, input=CAPITAL_PROMPT, temperature=0, max_output_tokens=4, stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.incomplete", [e.type for e in events]
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta")


def weather_function_call(oai, **extra):
    return oai.responses.create(
        model=MODEL, input=WEATHER_QUESTION, tools=RESP_TOOLS, temperature=0, max_output_tokens=128, **extra
    )


def check_function_calls(r) -> list:
    calls = [item for item in r.output if item.type == "function_call"]
    assert calls, r.output
    for call in calls:
        assert call.call_id
        assert call.name in ("get_weather", "get_time")
        args = json_arguments(call.arguments)
        (check_weather_arguments if call.name == "get_weather" else check_time_arguments)(args)
    return calls


def test_responses_required_function_call(oai):
    r = weather_function_call(oai, tool_choice="required")
    assert r.status == "completed"
    check_function_calls(r)


def test_responses_function_call_streamed(oai):
    with oai.responses.stream(
        model=MODEL, input=WEATHER_QUESTION, tools=RESP_TOOLS, tool_choice="required", temperature=0, max_output_tokens=128
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert "response.function_call_arguments.done" in kinds, kinds
    assert final.status == "completed"
    check_function_calls(final)


def test_responses_named_function_call(oai):
    r = weather_function_call(oai, tool_choice={"type": "function", "name": "get_time"}, parallel_tool_calls=False)
    assert [c.name for c in check_function_calls(r)] == ["get_time"]


def test_responses_function_call_output_fed_back_gets_a_message(oai):
    first = weather_function_call(oai, tool_choice="required")
    calls = check_function_calls(first)
    # The agent loop as the SDK's docs write it: the output items go back as they came.
    items = [{"role": "user", "content": WEATHER_QUESTION}, *first.output]
    items += [{"type": "function_call_output", "call_id": c.call_id, "output": WEATHER_RESULT} for c in calls]
    r = oai.responses.create(
        model=MODEL, input=items, tools=RESP_TOOLS, tool_choice="none", temperature=0, max_output_tokens=64
    )
    assert [item.type for item in r.output] == ["message"]
    assert r.output_text.strip()


def test_responses_json_schema_text_format(oai):
    r = oai.responses.create(
        model=MODEL,
        input=PERSON_PROMPT,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA, "strict": True}},
        temperature=0,
        max_output_tokens=128,
    )
    assert r.status == "completed"
    check_person(r.output_text)


def test_responses_parse_with_a_pydantic_model(oai):
    r = oai.responses.parse(model=MODEL, input=PERSON_PROMPT, text_format=Person, temperature=0, max_output_tokens=128)
    assert isinstance(r.output_parsed, Person), r.output


def test_responses_previous_response_id_is_a_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model=MODEL, input="Hi", previous_response_id="resp_123", max_output_tokens=1)
    assert "previous_response_id" in e.value.message


# ---------------------------------------------------------------------------------------------
# Bad tool requests: a 400 that names what is wrong, and the server stays up


def tiny_chat(oai, **extra):
    return oai.chat.completions.create(
        model=MODEL, messages=extra.pop("messages", [{"role": "user", "content": "Hi"}]), max_tokens=1, **extra
    )


def assert_still_answers(oai):
    assert tiny_chat(oai, temperature=0).usage.completion_tokens == 1


def test_too_many_tools_is_a_bad_request_naming_the_limit(oai):
    tools = [oai_tool(f"tool_{i}", "a tool", {"type": "object", "properties": {"a": {"type": "string"}}}) for i in range(1000)]
    with pytest.raises(openai.BadRequestError) as e:
        tiny_chat(oai, tools=tools)
    assert "512" in e.value.message and "tools" in e.value.message


def test_a_50_kb_tool_schema_works_or_is_a_bad_request(oai):
    properties = {f"field_{i:04d}": {"type": "string", "description": f"field number {i} of a large schema"} for i in range(900)}
    parameters = {"type": "object", "properties": properties, "required": ["field_0000"]}
    assert len(json.dumps(parameters)) > 50_000
    try:
        r = tiny_chat(oai, tools=[oai_tool("big", "a tool with a large schema", parameters)], tool_choice="required")
        assert r.choices[0].finish_reason in ("tool_calls", "length")
    except openai.BadRequestError as e:
        # The tools take more tokens than the context holds: the message says so.
        assert "context" in e.message or "tool" in e.message, e.message
    assert_still_answers(oai)


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": 5},
        {"type": "object", "properties": {"a": {"$ref": "#/nope"}}},
        {"type": "object", "properties": {"a": {"type": "no-such-type"}}},
    ],
    ids=["type-not-a-string", "dangling-ref", "unknown-type"],
)
def test_invalid_tool_schema_is_a_bad_request(oai, parameters):
    with pytest.raises(openai.BadRequestError) as e:
        tiny_chat(oai, tools=[oai_tool("f", "a tool", parameters)])
    assert "schema" in e.value.message


def test_invalid_response_format_schema_is_a_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as e:
        tiny_chat(oai, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}})
    assert "schema" in e.value.message


def test_tool_call_without_a_name_in_history_is_a_bad_request_naming_the_field(oai):
    messages = [
        {"role": "user", "content": WEATHER_QUESTION},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": WEATHER_RESULT},
    ]
    with pytest.raises(openai.BadRequestError) as e:
        tiny_chat(oai, messages=messages, tools=OAI_TOOLS)
    assert "messages[1].tool_calls[0].function" in e.value.message
    assert "name" in e.value.message


def test_tool_call_with_arguments_that_are_not_json_in_history_is_a_bad_request(oai):
    messages = [
        {"role": "user", "content": WEATHER_QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{not json"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": WEATHER_RESULT},
    ]
    try:
        r = tiny_chat(oai, messages=messages, tools=OAI_TOOLS)
    except openai.BadRequestError as e:
        assert "arguments" in e.message
    else:
        # Accepted as text, as OpenAI does: it never parses what it gave back.
        assert r.choices
    assert_still_answers(oai)


def test_tool_choice_naming_a_missing_tool_is_a_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as e:
        tiny_chat(oai, tools=OAI_TOOLS, tool_choice={"type": "function", "function": {"name": "no_such_tool"}})
    assert "no_such_tool" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        tiny_chat(oai, tool_choice="required")
    assert "tool" in e.value.message
    assert_still_answers(oai)

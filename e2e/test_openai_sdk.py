"""The official `openai` Python SDK against the gateway, through every provider kind.

Answers are the emulator's deterministic echo: "Echo: <words of the last user message>".
"""

from __future__ import annotations

import base64
import json
import math
import struct
import time

import httpx
import openai
import pytest

from support import (
    LONG_PROMPT,
    PNG_1X1_B64,
    TIME_TOOL_OPENAI,
    WEATHER_TOOL_OPENAI,
    credential_header,
    dumps,
    echo,
    embedding_kinds,
    every_kind,
    header_dict,
    upstream_stop_sequences,
)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def streamed(client: openai.OpenAI, **kw):
    """All chunks of a streamed completion, and the text their deltas add up to."""
    chunks = list(client.chat.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


def finish_reasons(chunks) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def assembled_tool_calls(chunks) -> list[dict]:
    """Tool-call deltas put together by index, as a client does: id, name, arguments text."""
    calls: dict[int, dict] = {}
    for c in chunks:
        if not c.choices:
            continue
        for d in c.choices[0].delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
            if d.id:
                call["id"] = d.id
            if d.function and d.function.name:
                call["name"] += d.function.name
            if d.function and d.function.arguments:
                call["arguments"] += d.function.arguments
    return [calls[i] for i in sorted(calls)]


def last_upstream_body(stack, kind) -> dict:
    reqs = stack.upstream_requests(kind.vendor)
    assert reqs, f"the {kind.vendor} upstream received no request"
    return reqs[-1]["body"]


# --- chat -------------------------------------------------------------------------------------


@every_kind
def test_chat_completion(oai, kind):
    r = oai.chat.completions.create(model=kind.model, messages=user("hello gateway world"))
    assert r.object == "chat.completion"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: hello gateway world"
    assert choice.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@every_kind
def test_system_message_reaches_the_model(stack, oai, kind):
    r = oai.chat.completions.create(
        model=kind.model,
        messages=[
            {"role": "system", "content": "You are a terse pirate assistant."},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert r.choices[0].message.content == "Echo: hello there"
    assert "terse pirate" in dumps(last_upstream_body(stack, kind)), "the system prompt was dropped"


@every_kind
def test_multi_turn_conversation(oai, kind):
    r = oai.chat.completions.create(
        model=kind.model,
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
    )
    assert r.choices[0].message.content == "Echo: second question"


@every_kind
def test_stream_deltas_equal_the_non_streamed_text(oai, kind):
    whole = oai.chat.completions.create(model=kind.model, messages=user("stream me some words"))
    chunks, text = streamed(oai, model=kind.model, messages=user("stream me some words"))
    assert text == whole.choices[0].message.content == "Echo: stream me some words"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "every chunk of one stream has the same id"
    assert finish_reasons(chunks) == ["stop"]
    assert all(c.usage is None for c in chunks), "usage sent although include_usage was not asked"


@every_kind
def test_stream_include_usage_puts_usage_on_the_final_chunk(oai, kind):
    chunks, text = streamed(
        oai,
        model=kind.model,
        messages=user("count my tokens please"),
        stream_options={"include_usage": True},
    )
    assert text == "Echo: count my tokens please"
    final = chunks[-1]
    assert final.usage is not None, "the final chunk has no usage"
    assert final.choices == [], "the usage chunk should have no choices"
    assert final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0
    assert final.usage.total_tokens == final.usage.prompt_tokens + final.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1]), "usage on a chunk before the last"
    assert finish_reasons(chunks) == ["stop"]


# --- tools ------------------------------------------------------------------------------------


def _tool_follow_up(messages: list[dict], call_id: str, name: str, arguments: str) -> list[dict]:
    return messages + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny 21C"},
    ]


@every_kind
def test_tool_call_and_follow_up(stack, oai, kind):
    messages = user("weather in Paris")
    r = oai.chat.completions.create(model=kind.model, messages=messages, tools=[WEATHER_TOOL_OPENAI])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id, "a tool call needs an id to answer it"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"input": "weather in Paris"}

    follow = _tool_follow_up(messages, call.id, call.function.name, call.function.arguments)
    r2 = oai.chat.completions.create(model=kind.model, messages=follow, tools=[WEATHER_TOOL_OPENAI])
    assert r2.choices[0].finish_reason == "stop"
    assert not r2.choices[0].message.tool_calls, "the model called the tool again after its result"
    assert r2.choices[0].message.content.startswith("Echo:")
    assert "sunny 21C" in dumps(last_upstream_body(stack, kind)), "the tool result never reached the model"
    if kind.vendor in ("openai", "azure"):
        assert r2.choices[0].message.content == "Echo: tool said sunny 21C"


@every_kind
def test_streamed_tool_call_and_follow_up(stack, oai, kind):
    messages = user("weather in Rome")
    chunks, text = streamed(oai, model=kind.model, messages=messages, tools=[WEATHER_TOOL_OPENAI])
    assert text == ""
    assert finish_reasons(chunks) == ["tool_calls"]
    calls = assembled_tool_calls(chunks)
    assert len(calls) == 1
    call = calls[0]
    assert call["id"] and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"input": "weather in Rome"}

    follow = _tool_follow_up(messages, call["id"], call["name"], call["arguments"])
    chunks2, text2 = streamed(oai, model=kind.model, messages=follow, tools=[WEATHER_TOOL_OPENAI])
    assert finish_reasons(chunks2) == ["stop"]
    assert assembled_tool_calls(chunks2) == []
    assert text2.startswith("Echo:")
    assert "sunny 21C" in dumps(last_upstream_body(stack, kind)), "the tool result never reached the model"


@every_kind
def test_forced_tool_choice_calls_that_tool(oai, kind):
    r = oai.chat.completions.create(
        model=kind.model,
        messages=user("time in Tokyo"),
        tools=[WEATHER_TOOL_OPENAI, TIME_TOOL_OPENAI],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_time"
    assert json.loads(calls[0].function.arguments) == {"input": "time in Tokyo"}


@every_kind
def test_tool_choice_none_answers_in_text(oai, kind):
    r = oai.chat.completions.create(
        model=kind.model, messages=user("just talk"), tools=[WEATHER_TOOL_OPENAI], tool_choice="none"
    )
    assert not r.choices[0].message.tool_calls
    assert r.choices[0].message.content == "Echo: just talk"
    assert r.choices[0].finish_reason == "stop"


# --- request options ---------------------------------------------------------------------------


@every_kind
def test_json_mode_returns_parseable_json(oai, kind):
    r = oai.chat.completions.create(
        model=kind.model,
        messages=user("answer in JSON please"),
        response_format={"type": "json_object"},
    )
    content = r.choices[0].message.content
    try:
        parsed = json.loads(content)
    except (TypeError, json.JSONDecodeError) as e:
        pytest.fail(f"json_object answer is not JSON: {content!r} ({e})")
    assert isinstance(parsed, dict)


@every_kind
@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_output_cap_gives_a_length_finish(oai, kind, param):
    r = oai.chat.completions.create(
        model=kind.model, messages=user("one two three four five six"), **{param: 3}
    )
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "Echo: one two"


@every_kind
def test_streamed_output_cap_gives_a_length_finish(oai, kind):
    chunks, text = streamed(oai, model=kind.model, messages=user("one two three four five six"), max_tokens=3)
    assert text == "Echo: one two"
    assert finish_reasons(chunks) == ["length"]


@every_kind
def test_stop_sequences_reach_the_upstream(stack, oai, kind):
    r = oai.chat.completions.create(model=kind.model, messages=user("say something"), stop=["END", "\n\n"])
    assert r.choices[0].message.content == "Echo: say something"
    sent = upstream_stop_sequences(kind.vendor, last_upstream_body(stack, kind))
    assert sent == ["END", "\n\n"], f"upstream got stop sequences {sent!r}"


@every_kind
def test_image_content_part_is_accepted(stack, oai, kind):
    r = oai.chat.completions.create(
        model=kind.model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in this picture"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1X1_B64}"}},
                ],
            }
        ],
    )
    assert r.choices[0].message.content == "Echo: what is in this picture"
    assert PNG_1X1_B64 in dumps(last_upstream_body(stack, kind)), "the image was not passed upstream"


# --- models and embeddings ----------------------------------------------------------------------


def test_models_list(oai):
    ids = [m.id for m in oai.models.list()]
    assert {"smart", "gpt-4o"} <= set(ids), ids
    assert len(ids) == len(set(ids)), f"duplicate ids: {ids}"


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


@embedding_kinds
def test_embeddings_default_base64(stack, oai, kind):
    texts = ["first text", "second text"]
    r = oai.embeddings.create(model=kind.embed_model, input=texts)
    assert [d.index for d in r.data] == [0, 1]
    dims = len(r.data[0].embedding)
    assert dims > 0
    for d in r.data:
        assert len(d.embedding) == dims
        assert all(isinstance(x, float) and math.isfinite(x) for x in d.embedding)
        # The emulator's vectors have unit length: a wrong decoding would not.
        assert _norm(d.embedding) == pytest.approx(1.0, abs=1e-3)
    assert r.data[0].embedding != r.data[1].embedding
    again = oai.embeddings.create(model=kind.embed_model, input="first text")
    assert len(again.data) == 1
    assert again.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)


@embedding_kinds
def test_embeddings_base64_on_the_wire(oai, kind):
    """The SDK asks for base64; the gateway must answer in base64 (a string), whatever the
    upstream sent, and the string decodes to little-endian float32s."""
    raw = oai.embeddings.with_raw_response.create(
        model=kind.embed_model, input=["wire check"], encoding_format="base64", dimensions=32
    )
    body = json.loads(raw.http_response.text)
    emb = body["data"][0]["embedding"]
    assert isinstance(emb, str), f"asked for base64, got {type(emb).__name__}"
    blob = base64.b64decode(emb)
    assert len(blob) == 32 * 4
    floats = struct.unpack("<32f", blob)
    assert _norm(floats) == pytest.approx(1.0, abs=1e-3)


@embedding_kinds
def test_embeddings_dimensions_and_float_format(oai, kind):
    r = oai.embeddings.create(model=kind.embed_model, input=["a", "b", "c"], dimensions=64)
    assert len(r.data) == 3
    assert all(len(d.embedding) == 64 for d in r.data)
    f = oai.embeddings.create(model=kind.embed_model, input="a", dimensions=64, encoding_format="float")
    assert len(f.data[0].embedding) == 64
    assert f.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)


# --- errors -----------------------------------------------------------------------------------


def test_unknown_model_is_not_found(stack, oai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="no-such-model-xyz", messages=user("hi"))
    assert e.value.status_code == 404
    assert "no-such-model-xyz" in e.value.message
    assert e.value.response.headers.get("x-request-id")
    assert stack.upstream_requests() == [], "an unknown model still reached an upstream"


@every_kind
def test_provider_rate_limit_is_a_rate_limit_error(stack, oai, kind):
    # Longer than the router waits for (5 s): no retry, and no fallback on these routes.
    stack.fault({"kind": "status", "status": 429, "retry_after": 30}, model=kind.upstream_model, vendor=kind.vendor)
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model=kind.model, messages=user("hi"))
    assert e.value.status_code == 429
    assert e.value.type == "rate_limit_error", e.value.body


@every_kind
def test_provider_rate_limit_passes_retry_after(stack, oai, kind):
    stack.fault({"kind": "status", "status": 429, "retry_after": 30}, model=kind.upstream_model, vendor=kind.vendor)
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model=kind.model, messages=user("hi"))
    assert e.value.response.headers.get("retry-after") == "30"


def test_a_short_retry_after_is_waited_for_by_the_gateway(stack, oai):
    stack.fault({"kind": "status", "status": 429, "retry_after": 1}, model="gpt-4o", vendor="openai")
    started = time.monotonic()
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("wait for me"))
    assert raw.parse().choices[0].message.content == "Echo: wait for me"
    assert raw.headers.get("x-gateway-attempts") == "2"
    assert 1.0 <= time.monotonic() - started < 3.0


MALFORMED = {
    "truncated_json": b'{"model": "gpt-4o", "messages": [',
    "not_json": b"model=gpt-4o",
    "array_body": b"[1, 2, 3]",
    "no_messages": b'{"model": "gpt-4o"}',
    "messages_not_a_list": b'{"model": "gpt-4o", "messages": "hi"}',
    "empty_messages": b'{"model": "gpt-4o", "messages": []}',
    "no_model": b'{"messages": [{"role": "user", "content": "hi"}]}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_body_is_a_400_with_an_openai_error(stack, body):
    r = stack.http().post(
        f"{stack.gateway_url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json", "authorization": f"Bearer {stack.consumer_key}"},
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == "invalid_request_error"
    assert "code" in err and "param" in err
    assert r.headers.get("x-request-id")
    assert stack.upstream_requests() == []


def test_malformed_embeddings_body_is_a_400(stack):
    r = stack.http().post(
        f"{stack.gateway_url}/v1/embeddings",
        content=b'{"model": "text-embedding-3-small", "input": ',
        headers={"content-type": "application/json", "authorization": f"Bearer {stack.consumer_key}"},
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("field", ["api_base", "base_url", "api_key"])
def test_upstream_override_fields_are_refused(stack, oai, field):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(
            model="gpt-4o", messages=user("hi"), extra_body={field: "http://127.0.0.1:9/steal"}
        )
    assert e.value.status_code == 400
    assert e.value.param == field, e.value.body
    assert stack.upstream_requests() == [], "the request went upstream anyway"


# --- fallback ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [529, 500])
def test_fallback_when_the_primary_fails(stack, oai, status):
    # Twice: the router retries a 5xx once on the same target before falling back.
    stack.fault({"kind": "status", "status": status}, model="claude-sonnet-4-5", vendor="anthropic", times=2)
    raw = oai.chat.completions.with_raw_response.create(model="smart", messages=user("fall back please"))
    r = raw.parse()
    assert r.choices[0].message.content == "Echo: fall back please"
    assert raw.headers.get("x-gateway-fallback-reason") == "server_error"
    assert raw.headers.get("x-gateway-provider") == "openai"
    assert raw.headers.get("x-gateway-model") == "gpt-4o"
    tried = [q["body"].get("model") for q in stack.upstream_requests("anthropic")]
    assert tried == ["claude-sonnet-4-5"] * 2, f"the primary was not tried (twice) first: {tried}"


def test_fallback_for_a_stream(stack, oai):
    stack.fault({"kind": "status", "status": 529}, model="claude-sonnet-4-5", vendor="anthropic", times=2)
    with oai.chat.completions.with_streaming_response.create(
        model="smart", messages=user("stream after fallback"), stream=True
    ) as resp:
        assert resp.headers.get("x-gateway-fallback-reason") == "server_error"
        assert resp.headers.get("x-gateway-provider") == "openai"
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text == "Echo: stream after fallback"


def test_the_consumer_fallback_header(stack, oai):
    stack.fault({"kind": "status", "status": 503}, model="gpt-4o", vendor="openai", times=2)
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=user("any port in a storm"), extra_headers={"x-gateway-fallback": "smart"}
    )
    assert raw.parse().choices[0].message.content == "Echo: any port in a storm"
    assert raw.headers.get("x-gateway-provider") == "claude"
    assert raw.headers.get("x-gateway-attempts") == "3"


def test_a_slow_first_token_is_kept_alive_and_the_sdk_reads_through_the_comments(stack, oai):
    stack.fault({"kind": "slow_first_token", "ms": 1200}, model="gpt-4o", vendor="openai")
    r = stack.http().post(
        f"{stack.gateway_url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": user("patience"), "stream": True},
        headers={"authorization": f"Bearer {stack.consumer_key}"},
    )
    assert r.status_code == 200
    assert ": keep-alive" in r.text
    stack.fault({"kind": "slow_first_token", "ms": 1200}, model="gpt-4o", vendor="openai")
    text = "".join(
        c.choices[0].delta.content or ""
        for c in oai.chat.completions.create(model="gpt-4o", messages=user("patience"), stream=True)
        if c.choices
    )
    assert text == "Echo: patience"


def test_a_failure_after_keep_alive_reaches_the_sdk_as_an_error(stack, oai):
    """Committed (200) while waiting, then no first token in time: an error event, not an empty success."""
    stack.fault({"kind": "hang"}, model="gpt-4o-mini", vendor="openai")
    started = time.monotonic()
    with pytest.raises(openai.APIError) as e:
        list(oai.chat.completions.create(model="slow", messages=user("never"), stream=True))
    assert "first token" in str(e.value.message), e.value
    assert time.monotonic() - started < 5


def test_no_fallback_without_a_failure(stack, oai):
    raw = oai.chat.completions.with_raw_response.create(model="smart", messages=user("primary only"))
    assert raw.parse().choices[0].message.content == "Echo: primary only"
    assert raw.headers.get("x-gateway-provider") == "claude"
    assert raw.headers.get("x-gateway-model") == "claude-sonnet-4-5"
    assert raw.headers.get("x-gateway-fallback-reason") is None


def test_a_bad_request_does_not_fall_back(stack, oai):
    """The primary rejecting the request itself (400) is not something another model fixes."""
    stack.fault({"kind": "status", "status": 400, "message": "messages.0: bad block"},
                model="claude-sonnet-4-5", vendor="anthropic")
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="smart", messages=user("rejected"))
    assert stack.upstream_requests("openai") == [], "a bad request fell back to another model"


# --- credentials and headers --------------------------------------------------------------------


@every_kind
def test_consumer_credentials_never_reach_the_upstream(stack, kind):
    client = stack.openai(
        api_key=stack.consumer_key,
        default_headers={"x-api-key": stack.consumer_key, "api-key": stack.consumer_key, "x-goog-api-key": stack.consumer_key},
    )
    client.chat.completions.create(model=kind.model, messages=user("who am i"))
    list(client.chat.completions.create(model=kind.model, messages=user("who am i"), stream=True))
    reqs = stack.upstream_requests()
    assert len(reqs) == 2 and all(q["vendor"] == kind.vendor for q in reqs), reqs
    name, value = credential_header(kind.vendor, stack.emu_key)
    for q in reqs:
        headers = header_dict(q["headers"])
        assert headers.get(name) == value, f"upstream {name} header: {headers.get(name)!r}"
        leaked = {k: v for k, v in headers.items() if stack.consumer_key in v}
        assert not leaked, f"consumer credential forwarded upstream in {sorted(leaked)}"
        assert stack.consumer_key not in q["path"] and stack.consumer_key not in dumps(q["body"])


@every_kind
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_gateway_headers(oai, kind, stream):
    if stream:
        with oai.chat.completions.with_streaming_response.create(
            model=kind.model, messages=user("headers"), stream=True
        ) as resp:
            headers = resp.headers
            list(resp.parse())
    else:
        raw = oai.chat.completions.with_raw_response.create(model=kind.model, messages=user("headers"))
        headers = raw.headers
        raw.parse()
    assert headers.get("x-request-id")
    assert headers.get("x-gateway-provider") == kind.provider
    assert headers.get("x-gateway-model") == kind.upstream_model


def test_request_ids_differ(oai):
    a = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("a"))
    b = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=user("b"))
    assert a.headers["x-request-id"] != b.headers["x-request-id"]


@embedding_kinds
def test_embedding_headers(oai, kind):
    raw = oai.embeddings.with_raw_response.create(model=kind.embed_model, input="x")
    raw.parse()
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("x-gateway-provider") == kind.provider


# --- broken streams -----------------------------------------------------------------------------


@every_kind
def test_a_stream_cut_midway_raises(stack, oai, kind):
    full_text = oai.chat.completions.create(model=kind.model, messages=user(LONG_PROMPT)).choices[0].message.content
    assert full_text == echo(LONG_PROMPT)
    stack.fault({"kind": "cut_mid_stream", "after_events": 8}, model=kind.upstream_model, vendor=kind.vendor)
    received = ""
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for c in oai.chat.completions.create(model=kind.model, messages=user(LONG_PROMPT), stream=True):
            if c.choices:
                received += c.choices[0].delta.content or ""
    assert received != full_text, "the whole answer arrived although the upstream was cut"
    assert full_text.startswith(received), f"received {received!r} is not a prefix of {full_text!r}"


@every_kind
def test_the_gateway_still_serves_after_a_cut_stream(stack, oai, kind):
    stack.fault({"kind": "cut_mid_stream", "after_events": 3}, model=kind.upstream_model, vendor=kind.vendor)
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(oai.chat.completions.create(model=kind.model, messages=user(LONG_PROMPT), stream=True))
    _, text = streamed(oai, model=kind.model, messages=user("after the cut"))
    assert text == "Echo: after the cut"

"""The official `anthropic` Python SDK against the gateway's `/v1/messages`, which any provider
kind serves: Anthropic natively, the others translated."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from support import (
    LONG_PROMPT,
    PNG_1X1_B64,
    WEATHER_TOOL_ANTHROPIC,
    credential_header,
    dumps,
    echo,
    every_kind,
    header_dict,
)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def text_of(message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def last_upstream_body(stack, kind) -> dict:
    reqs = stack.upstream_requests(kind.vendor)
    assert reqs, f"the {kind.vendor} upstream received no request"
    return reqs[-1]["body"]


@every_kind
def test_messages_create(claude, kind):
    m = claude.messages.create(model=kind.model, max_tokens=64, messages=user("hello from the sdk"))
    assert m.type == "message"
    assert m.role == "assistant"
    assert [b.type for b in m.content] == ["text"]
    assert text_of(m) == echo("hello from the sdk")
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@every_kind
def test_messages_max_tokens_stop_reason(claude, kind):
    m = claude.messages.create(model=kind.model, max_tokens=3, messages=user("one two three four five six"))
    assert text_of(m) == "Echo: one two"
    assert m.stop_reason == "max_tokens"


@every_kind
def test_messages_system_prompt_reaches_the_model(stack, claude, kind):
    m = claude.messages.create(
        model=kind.model, max_tokens=16, system="You are a terse pirate assistant.", messages=user("ahoy")
    )
    assert text_of(m).startswith("Echo: ahoy")
    assert "terse pirate" in dumps(last_upstream_body(stack, kind)), "the system prompt was dropped"


@every_kind
def test_messages_stream_final_message(claude, kind):
    whole = claude.messages.create(model=kind.model, max_tokens=64, messages=user("stream this please"))
    with claude.messages.stream(model=kind.model, max_tokens=64, messages=user("stream this please")) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == text_of(whole) == echo("stream this please")
    assert text_of(final) == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@every_kind
def test_messages_image_block_is_accepted(stack, claude, kind):
    m = claude.messages.create(
        model=kind.model,
        max_tokens=16,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1X1_B64}},
                    {"type": "text", "text": "what is this"},
                ],
            }
        ],
    )
    assert text_of(m).startswith("Echo: what is this")
    assert PNG_1X1_B64 in dumps(last_upstream_body(stack, kind)), "the image was not passed upstream"


@every_kind
def test_tool_use_and_tool_result(stack, claude, kind):
    messages = user("weather in Paris")
    m = claude.messages.create(model=kind.model, max_tokens=64, messages=messages, tools=[WEATHER_TOOL_ANTHROPIC])
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.id and use.name == "get_weather"
    assert use.input == {"input": "weather in Paris"}

    follow = messages + [
        {"role": "assistant", "content": m.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny 21C"}]},
    ]
    m2 = claude.messages.create(model=kind.model, max_tokens=64, messages=follow, tools=[WEATHER_TOOL_ANTHROPIC])
    assert m2.stop_reason == "end_turn"
    assert not [b for b in m2.content if b.type == "tool_use"], "the model called the tool again"
    assert text_of(m2).startswith("Echo:")
    assert "sunny 21C" in dumps(last_upstream_body(stack, kind)), "the tool result never reached the model"


@every_kind
def test_streamed_tool_use(claude, kind):
    with claude.messages.stream(
        model=kind.model, max_tokens=64, messages=user("weather in Oslo"), tools=[WEATHER_TOOL_ANTHROPIC]
    ) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].name == "get_weather"
    assert uses[0].input == {"input": "weather in Oslo"}


@every_kind
def test_forced_tool_choice(claude, kind):
    time_tool = dict(WEATHER_TOOL_ANTHROPIC, name="get_time", description="The local time in a city.")
    m = claude.messages.create(
        model=kind.model,
        max_tokens=64,
        messages=user("time in Tokyo"),
        tools=[WEATHER_TOOL_ANTHROPIC, time_tool],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    uses = [b for b in m.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_time"
    assert uses[0].input == {"input": "time in Tokyo"}


# --- errors -----------------------------------------------------------------------------------


@every_kind
def test_rate_limit_is_a_rate_limit_error(stack, claude, kind):
    # Longer than the router waits for: no retry, no fallback on these routes.
    stack.fault({"kind": "status", "status": 429, "retry_after": 30}, model=kind.upstream_model, vendor=kind.vendor)
    with pytest.raises(anthropic.RateLimitError) as e:
        claude.messages.create(model=kind.model, max_tokens=8, messages=user("hi"))
    assert e.value.status_code == 429
    body = e.value.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] == "rate_limit_error", body


def test_unknown_model_is_not_found(stack, claude):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model-xyz", max_tokens=8, messages=user("hi"))
    body = e.value.body
    assert body.get("type") == "error" and body["error"]["type"] == "not_found_error", body
    assert stack.upstream_requests() == []


@pytest.mark.parametrize(
    "body",
    [b'{"model": "gpt-4o", "max_tokens": 8, "messages": [', b'{"model": "gpt-4o", "max_tokens": 8}'],
    ids=["truncated_json", "no_messages"],
)
def test_malformed_body_is_a_400_with_an_anthropic_error(stack, body):
    r = stack.http().post(
        f"{stack.gateway_url}/v1/messages",
        content=body,
        headers={"content-type": "application/json", "x-api-key": stack.consumer_key, "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == 400, r.text
    j = r.json()
    assert j.get("type") == "error", j
    assert j["error"]["type"] == "invalid_request_error"
    assert isinstance(j["error"]["message"], str) and j["error"]["message"]
    assert stack.upstream_requests() == []


def test_fallback_through_the_messages_route(stack, claude):
    stack.fault({"kind": "status", "status": 529}, model="claude-sonnet-4-5", vendor="anthropic", times=2)
    raw = claude.messages.with_raw_response.create(model="smart", max_tokens=64, messages=user("fall back"))
    m = raw.parse()
    assert text_of(m) == echo("fall back")
    assert raw.headers.get("x-gateway-fallback-reason") == "server_error"
    assert raw.headers.get("x-gateway-provider") == "openai"


# --- credentials, headers, broken streams ---------------------------------------------------------


@every_kind
def test_consumer_key_never_reaches_the_upstream(stack, kind):
    client = stack.anthropic(api_key=stack.consumer_key, default_headers={"authorization": f"Bearer {stack.consumer_key}"})
    client.messages.create(model=kind.model, max_tokens=8, messages=user("who am i"))
    with client.messages.stream(model=kind.model, max_tokens=8, messages=user("who am i")) as s:
        s.get_final_message()
    reqs = stack.upstream_requests()
    assert len(reqs) == 2 and all(q["vendor"] == kind.vendor for q in reqs), reqs
    name, value = credential_header(kind.vendor, stack.emu_key)
    for q in reqs:
        headers = header_dict(q["headers"])
        assert headers.get(name) == value, f"upstream {name} header: {headers.get(name)!r}"
        leaked = sorted(k for k, v in headers.items() if stack.consumer_key in v)
        assert not leaked, f"consumer credential forwarded upstream in {leaked}"


@every_kind
def test_gateway_headers(claude, kind):
    raw = claude.messages.with_raw_response.create(model=kind.model, max_tokens=8, messages=user("headers"))
    raw.parse()
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("x-gateway-provider") == kind.provider
    assert raw.headers.get("x-gateway-model") == kind.upstream_model


@every_kind
def test_a_stream_cut_midway_raises(stack, claude, kind):
    full = echo(LONG_PROMPT)
    stack.fault({"kind": "cut_mid_stream", "after_events": 8}, model=kind.upstream_model, vendor=kind.vendor)
    received = ""
    with pytest.raises((anthropic.APIError, httpx.HTTPError)):
        with claude.messages.stream(model=kind.model, max_tokens=256, messages=user(LONG_PROMPT)) as s:
            for t in s.text_stream:
                received += t
            s.get_final_message()
    assert received != full, "the whole answer arrived although the upstream was cut"
    assert full.startswith(received), f"received {received!r} is not a prefix of {full!r}"

"""What the tests share: the provider kinds under test and small helpers.

The gateway under test is configured (see conftest.py) with one provider of every kind, all
pointing at the one emulator process, which answers as each vendor on its own routes.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import pytest


#: What a consumer presents to the gateway as its key: it must never reach an upstream.
CONSUMER_KEY = "sk-consumer-" + secrets.token_hex(12)


@dataclass(frozen=True)
class Kind:
    """One provider kind, as a consumer addresses it and as the emulator sees it."""

    kind: str  # the provider `kind` in the gateway's config
    model: str  # what the consumer puts in `model`
    provider: str  # the provider's name: the expected `x-gateway-provider`
    upstream_model: str  # the model the upstream is asked for: `x-gateway-model`, fault key
    vendor: str  # the emulator's vendor routes this kind speaks to
    embed_model: str | None = None  # an embedding model served through this kind, if any

    def __str__(self) -> str:
        return self.kind


KINDS = [
    Kind("openai", "gpt-4o", "openai", "gpt-4o", "openai", "text-embedding-3-small"),
    Kind("azure_openai", "azure/gpt-4o", "azure", "gpt-4o", "azure", "azure/text-embedding-3-small"),
    Kind("anthropic", "claude-sonnet-4-5", "claude", "claude-sonnet-4-5", "anthropic"),
    Kind("gemini", "gem/gemini-2.0-flash", "gem", "gemini-2.0-flash", "gemini", "gem/text-embedding-004"),
    Kind("groq", "groq/llama-3.1-8b", "groq", "llama-3.1-8b", "openai"),
    Kind("openai_compatible", "compat/local-model", "compat", "local-model", "openai"),
]

EMBED_KINDS = [k for k in KINDS if k.embed_model]

#: Parametrize a test over every provider kind, with the kind as the test id.
every_kind = pytest.mark.parametrize("kind", KINDS, ids=str)
#: Over the kinds that serve embeddings (openai, azure, gemini).
embedding_kinds = pytest.mark.parametrize("kind", EMBED_KINDS, ids=str)


def credential_header(vendor: str, key: str) -> tuple[str, str]:
    """The header and value each vendor's upstream must receive: the gateway's key, never the
    consumer's."""
    return {
        "openai": ("authorization", f"Bearer {key}"),
        "azure": ("api-key", key),
        "anthropic": ("x-api-key", key),
        "gemini": ("x-goog-api-key", key),
    }[vendor]


def upstream_stop_sequences(vendor: str, body: dict) -> list[str] | None:
    """The stop sequences an upstream request carries, in that vendor's own field."""
    if vendor in ("openai", "azure"):
        stop = body.get("stop")
        return [stop] if isinstance(stop, str) else stop
    if vendor == "anthropic":
        return body.get("stop_sequences")
    if vendor == "gemini":
        return (body.get("generationConfig") or {}).get("stopSequences")
    raise ValueError(vendor)


def header_dict(headers) -> dict[str, str]:
    """A recorded request's `[[name, value], ...]` headers, lower-cased names."""
    return {k.lower(): v for k, v in headers}


def dumps(value) -> str:
    return json.dumps(value, sort_keys=True)


# A 1x1 transparent PNG, for image content parts.
PNG_1X1_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        },
    },
}

TIME_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        },
    },
}

WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"input": {"type": "string"}},
        "required": ["input"],
    },
}


def echo(prompt: str, cap: int | None = None) -> str:
    """The emulator's answer to `prompt`: "Echo: <words>", cut to `cap` words when the request
    caps output below that (as `crates/testkit/src/reply.rs` does)."""
    words = ["Echo:", *prompt.split()]
    if cap is not None:
        words = words[: max(cap, 1)]
    return " ".join(words)


#: A prompt long enough that its streamed echo has dozens of events, so a stream can be cut
#: in the middle.
LONG_PROMPT = " ".join(f"w{i}" for i in range(40))

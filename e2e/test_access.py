"""Consumers' access as an operator drives it: `gateway key …` and `gateway api …` against the
session gateway, and what an OpenAI SDK sees as a consequence."""

from __future__ import annotations

import os
import subprocess
import time

import openai
import pytest

from conftest import _binary


def cli(stack, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_ADMIN_URL=stack.admin_url, GATEWAY_ADMIN_TOKEN=stack.admin_token)
    p = subprocess.run([str(_binary("GATEWAY_BIN", "gateway")), *args], env=env,
                       capture_output=True, text=True, timeout=30)
    if ok:
        assert p.returncode == 0, f"gateway {' '.join(args)}: {p.stderr}"
    return p


def key_id(stack, label: str) -> str:
    keys = stack.admin("GET", "/admin/keys").json()
    return next(k["id"] for k in keys if k["label"] == label and k["revoked_at"] is None)


def ask(client: openai.OpenAI) -> str:
    r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    return r.choices[0].message.content


def test_a_cli_key_works_with_the_sdk_until_revoked(stack):
    p = cli(stack, "key", "create", "--label", "myapp", "--rate-limit", "100")
    key = p.stdout.strip()
    assert key.startswith("gw_live_") and len(key) == len("gw_live_") + 32, p.stdout
    assert "shown only this once" in p.stderr
    assert ask(stack.openai(api_key=key))

    listing = cli(stack, "key", "list").stdout
    assert "myapp" in listing and key[:12] in listing
    assert key not in listing, "the listing shows the key itself"

    cli(stack, "key", "revoke", key_id(stack, "myapp"))
    with pytest.raises(openai.AuthenticationError) as e:
        ask(stack.openai(api_key=key))
    assert "revoked" in str(e.value)
    assert key not in str(e.value)


def test_a_wrong_key_is_an_authentication_error_that_explains_the_prefix(stack):
    wrong = "sk-proj-this-is-an-openai-key-not-a-gateway-key"
    with pytest.raises(openai.AuthenticationError) as e:
        ask(stack.openai(api_key=wrong))
    assert e.value.status_code == 401
    assert "gw_" in e.value.message and wrong not in e.value.message
    assert e.value.code == "invalid_api_key"
    assert not stack.upstream_requests(), "a refused request reached the upstream"


def test_a_public_api_gated_behind_keys_keeps_its_url(stack):
    cli(stack, "api", "create", "helpdesk", "--auth", "public")
    url = f"{stack.gateway_url}/helpdesk/v1"
    anonymous = openai.OpenAI(base_url=url, api_key="anything", max_retries=0, timeout=30)
    assert ask(anonymous)

    cli(stack, "api", "update", "helpdesk", "--auth", "keys")
    with pytest.raises(openai.AuthenticationError):
        ask(anonymous)
    key = cli(stack, "key", "create", "--label", "helpdesk-app", "--api", "helpdesk").stdout.strip()
    assert ask(openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30))
    # Scoped to helpdesk: the default API refuses it, with a permission error.
    with pytest.raises(openai.PermissionDeniedError):
        ask(stack.openai(api_key=key))
    cli(stack, "api", "delete", "helpdesk")
    with pytest.raises(openai.NotFoundError):
        ask(openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=30))


def test_a_rotated_key_and_its_predecessor_both_work_during_the_grace(stack):
    old = cli(stack, "key", "create", "--label", "rotating").stdout.strip()
    p = cli(stack, "key", "rotate", key_id(stack, "rotating"), "--grace", "2s")
    new = p.stdout.strip()
    assert new != old and new.startswith("gw_live_")
    assert ask(stack.openai(api_key=old)) and ask(stack.openai(api_key=new))
    time.sleep(2.2)
    with pytest.raises(openai.AuthenticationError):
        ask(stack.openai(api_key=old))
    assert ask(stack.openai(api_key=new))


def test_a_suspended_consumer_is_refused_and_comes_back(stack):
    cli(stack, "consumer", "create", "--name", "globex", "--email", "it@globex.test")
    key = cli(stack, "key", "create", "--label", "globex-app", "--consumer", "globex").stdout.strip()
    assert ask(stack.openai(api_key=key))
    cli(stack, "consumer", "suspend", "globex")
    with pytest.raises(openai.PermissionDeniedError):
        ask(stack.openai(api_key=key))
    cli(stack, "consumer", "activate", "globex")
    assert ask(stack.openai(api_key=key))


def test_cli_mistakes_are_clear_errors(stack):
    p = cli(stack, "key", "create", "--label", "x", "--expires", "someday", ok=False)
    assert p.returncode != 0 and "expires" in p.stderr.lower()
    p = cli(stack, "api", "create", "v1", ok=False)
    assert p.returncode != 0 and "slug" in p.stderr
    p = cli(stack, "key", "revoke", "no-such-key", ok=False)
    assert p.returncode != 0 and "not found" in p.stderr.lower()

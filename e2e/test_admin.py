"""The admin API on its own port: providers and models, their secrets, health, and changes that
take effect on the data plane at once."""

from __future__ import annotations

import secrets
import socket

import openai
import pytest

from support import KINDS, every_kind


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def created(stack):
    """Names created by a test, deleted afterwards (models first: they target providers)."""
    made = {"models": [], "providers": []}
    yield made
    for name in made["models"]:
        stack.admin("DELETE", f"/admin/models/{name}")
    for name in made["providers"]:
        stack.admin("DELETE", f"/admin/providers/{name}")


def add_provider(stack, created, **body) -> dict:
    r = stack.admin("POST", "/admin/providers", json=body)
    assert r.status_code == 201, r.text
    created["providers"].append(body["name"])
    return r.json()


def add_model(stack, created, **body) -> dict:
    r = stack.admin("POST", "/admin/models", json=body)
    assert r.status_code == 201, r.text
    created["models"].append(body["name"])
    return r.json()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["no_token", "wrong_token"])
@pytest.mark.parametrize(
    "method,path",
    [("GET", "/admin/providers"), ("POST", "/admin/providers"), ("GET", "/admin/models"),
     ("DELETE", "/admin/models/smart"), ("GET", "/admin/providers/openai/health")],
)
def test_unauthorized_without_the_token(stack, method, path, token):
    r = stack.admin(method, path, token=token, json={} if method == "POST" else None)
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert err["type"] == "authentication_error"


def test_unauthorized_calls_change_nothing(stack):
    stack.admin("DELETE", "/admin/models/smart", token="wrong-token")
    assert stack.admin("GET", "/admin/models/smart").status_code == 200


def test_openapi_document(stack):
    r = stack.admin("GET", "/admin/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path in ("/admin/providers", "/admin/providers/{name}", "/admin/models", "/admin/models/{name}"):
        assert path in doc["paths"], path


# --- providers ---------------------------------------------------------------------------------


def test_provider_api_key_is_never_returned(stack, created):
    key = "sk-admin-secret-" + secrets.token_hex(8)
    name = unique("acme")
    body = {"name": name, "kind": "openai_compatible", "api_key": key,
            "base_url": f"{stack.emulator_url}/v1", "models": ["acme-model"]}
    r = stack.admin("POST", "/admin/providers", json=body)
    assert r.status_code == 201, r.text
    created["providers"].append(name)
    assert key not in r.text
    assert r.json()["has_api_key"] is True
    assert r.json()["kind"] == "openai_compatible"

    listing = stack.admin("GET", "/admin/providers")
    assert listing.status_code == 200
    assert key not in listing.text
    mine = [p for p in listing.json() if p["name"] == name]
    assert len(mine) == 1 and mine[0]["has_api_key"] is True

    one = stack.admin("GET", f"/admin/providers/{name}")
    assert one.status_code == 200 and key not in one.text and one.json()["has_api_key"] is True

    updated = stack.admin("PUT", f"/admin/providers/{name}", json={**body, "priority": 5})
    assert updated.status_code == 200, updated.text
    assert key not in updated.text and updated.json()["priority"] == 5

    audit = stack.admin("GET", "/admin/audit")
    assert audit.status_code == 200 and key not in audit.text

    health = stack.admin("GET", f"/admin/providers/{name}/health")
    assert key not in health.text


def test_configured_providers_hide_their_keys(stack):
    r = stack.admin("GET", "/admin/providers")
    assert r.status_code == 200
    assert stack.emu_key not in r.text
    names = {p["name"]: p for p in r.json()}
    for k in KINDS:
        assert names[k.provider]["kind"] == k.kind
        assert names[k.provider]["has_api_key"] is True


def test_provider_without_a_key_says_so(stack, created):
    p = add_provider(stack, created, name=unique("keyless"), kind="ollama", base_url=f"{stack.emulator_url}/v1")
    assert p["has_api_key"] is False


def test_bad_kind_is_a_400_naming_the_field(stack):
    r = stack.admin("POST", "/admin/providers",
                    json={"name": unique("bad"), "kind": "nonsense", "api_key": "k", "base_url": "http://127.0.0.1:1"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] is not None and err["param"].endswith("kind"), err
    assert "kind" in err["message"]


@pytest.mark.parametrize(
    "body,field",
    [
        ({"kind": "openai", "api_key": "k"}, "name"),
        ({"name": "x y/z", "kind": "openai", "api_key": "k"}, "name"),
        ({"name": "needs-url", "kind": "openai_compatible", "api_key": "k"}, "base_url"),
        ({"name": "bad-url", "kind": "openai", "api_key": "k", "base_url": "not a url"}, "base_url"),
    ],
    ids=["missing_name", "bad_name", "compatible_without_base_url", "bad_base_url"],
)
def test_invalid_provider_is_a_400_naming_the_field(stack, body, field):
    r = stack.admin("POST", "/admin/providers", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert field in (err.get("param") or "") + err["message"], err
    assert stack.admin("GET", f"/admin/providers/{body.get('name', '-')}").status_code == 404


def test_duplicate_provider_is_a_conflict(stack):
    r = stack.admin("POST", "/admin/providers",
                    json={"name": "openai", "kind": "openai", "api_key": "k", "base_url": f"{stack.emulator_url}/v1"})
    assert r.status_code == 409, r.text


def test_deleting_a_provider_in_use_is_a_conflict(stack):
    r = stack.admin("DELETE", "/admin/providers/claude")
    assert r.status_code == 409, r.text
    assert stack.admin("GET", "/admin/providers/claude").status_code == 200


def test_unknown_provider_is_404(stack):
    assert stack.admin("GET", "/admin/providers/nope-nope").status_code == 404
    assert stack.admin("GET", "/admin/providers/nope-nope/health").status_code == 404


# --- health -----------------------------------------------------------------------------------


@every_kind
def test_configured_provider_health_is_ok(stack, kind):
    r = stack.admin("GET", f"/admin/providers/{kind.provider}/health")
    assert r.status_code == 200, r.text
    h = r.json()
    assert h["provider"] == kind.provider
    assert h["ok"] is True, h


def test_health_fails_with_a_wrong_key(stack, created):
    name = unique("wrongkey")
    add_provider(stack, created, name=name, kind="openai_compatible", api_key="not-the-key",
                 base_url=f"{stack.emulator_url}/v1")
    h = stack.admin("GET", f"/admin/providers/{name}/health").json()
    assert h["ok"] is False and h.get("error"), h
    assert "not-the-key" not in str(h)


def test_health_fails_when_unreachable(stack, created):
    name = unique("down")
    add_provider(stack, created, name=name, kind="openai", api_key="k",
                 base_url=f"http://127.0.0.1:{closed_port()}/v1")
    h = stack.admin("GET", f"/admin/providers/{name}/health").json()
    assert h["ok"] is False and h.get("error"), h


def test_health_ok_for_a_new_provider(stack, created):
    name = unique("fresh")
    add_provider(stack, created, name=name, kind="openai_compatible", api_key=stack.emu_key,
                 base_url=f"{stack.emulator_url}/v1")
    h = stack.admin("GET", f"/admin/providers/{name}/health").json()
    assert h["ok"] is True, h


# --- models -----------------------------------------------------------------------------------


def test_a_new_model_is_usable_at_once(stack, created, oai):
    provider = unique("team")
    alias = unique("team-model")
    add_provider(stack, created, name=provider, kind="openai_compatible", api_key=stack.emu_key,
                 base_url=f"{stack.emulator_url}/v1")
    m = add_model(stack, created, name=alias, targets=[{"provider": provider, "model": "served-model"}])
    assert m["name"] == alias

    raw = oai.chat.completions.with_raw_response.create(
        model=alias, messages=[{"role": "user", "content": "brand new"}]
    )
    assert raw.parse().choices[0].message.content == "Echo: brand new"
    assert raw.headers.get("x-gateway-provider") == provider
    assert raw.headers.get("x-gateway-model") == "served-model"
    sent = stack.upstream_requests("openai")
    assert [q["body"]["model"] for q in sent] == ["served-model"]
    assert alias in [x.id for x in oai.models.list()]


def test_a_changed_model_routes_anew_at_once(stack, created, oai):
    alias = unique("moving")
    add_model(stack, created, name=alias, targets=[{"provider": "openai", "model": "gpt-4o"}])
    first = oai.chat.completions.with_raw_response.create(model=alias, messages=[{"role": "user", "content": "x"}])
    assert first.headers.get("x-gateway-provider") == "openai"

    r = stack.admin("PUT", f"/admin/models/{alias}",
                    json={"name": alias, "targets": [{"provider": "azure", "model": "gpt-4o"}]})
    assert r.status_code == 200, r.text
    second = oai.chat.completions.with_raw_response.create(model=alias, messages=[{"role": "user", "content": "x"}])
    assert second.headers.get("x-gateway-provider") == "azure"


def test_a_deleted_model_is_gone_at_once(stack, created, oai):
    alias = unique("doomed")
    add_model(stack, created, name=alias, targets=[{"provider": "openai", "model": "gpt-4o"}])
    oai.chat.completions.create(model=alias, messages=[{"role": "user", "content": "x"}])
    assert stack.admin("DELETE", f"/admin/models/{alias}").status_code == 204
    created["models"].remove(alias)
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model=alias, messages=[{"role": "user", "content": "x"}])
    assert alias not in [x.id for x in oai.models.list()]


def test_model_with_an_unknown_provider_is_a_400_naming_the_field(stack):
    name = unique("orphan")
    r = stack.admin("POST", "/admin/models", json={"name": name, "targets": [{"provider": "ghost", "model": "m"}]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "targets[0].provider" in (err.get("param") or ""), err
    assert stack.admin("GET", f"/admin/models/{name}").status_code == 404


def test_models_listing(stack):
    r = stack.admin("GET", "/admin/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()}
    assert models["smart"]["targets"] == [{"provider": "claude", "model": "claude-sonnet-4-5"}]
    assert models["smart"]["fallbacks"]["any"] == ["gpt-4o"]


def test_target_health_and_router_settings(stack, oai):
    oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "count me"}])
    r = stack.admin("GET", "/admin/health/targets")
    assert r.status_code == 200, r.text
    mine = [t for t in r.json() if t["provider"] == "openai" and t["model"] == "gpt-4o"]
    assert mine and mine[0]["requests"] >= 1 and mine[0]["state"] == "closed", r.json()
    settings = stack.admin("GET", "/admin/router").json()
    assert settings["circuit"]["open_for"] == "10s"
    bad = stack.admin("PUT", "/admin/router", json={"circuit": {"open_for": 10}})
    assert bad.status_code == 400 and "open_for" in bad.text, bad.text

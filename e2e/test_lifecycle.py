"""Operating the `gateway` binary: `config check`, the CLI against a running gateway, the first
start (admin token, encryption key), PostgreSQL as the store, graceful shutdown, and secrets kept
out of the logs.

Every test that needs particular start-up conditions starts its OWN gateway process (free
loopback ports, a temporary data dir) and stops it again whatever happens; upstreams are the
session's emulator (the `stack` fixture).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import openai
import pytest

from conftest import CONFIG_YAML, HOST, _binary, _free_ports
from support import CONSUMER_KEY, credential_header, echo

#: Bound on every wait in this file (start-up, a CLI command, an exit).
WAIT_S = 30.0
#: What a generated admin token looks like (`gwa_` + 32 random bytes in hex).
TOKEN_RE = re.compile(r"gwa_[0-9a-f]{64}")


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment without any GATEWAY_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    # No download from the model hub in tests: only loopback is reachable.
    env["GATEWAY_MODELS_AUTO_PULL"] = "off"
    env.update(extra)
    return env


# --- a gateway process of our own --------------------------------------------------------------


class GatewayProcess:
    """One `gateway start`, its stdout and stderr in files under `workdir`."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str):
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        env = dict(env)
        port, admin_port = _free_ports(2)
        env.setdefault("GATEWAY_PORT", str(port))  # a test may set its own (bad) values
        env.setdefault("GATEWAY_ADMIN_PORT", str(admin_port))
        env.setdefault("GATEWAY_BIND", HOST)
        env.setdefault("GATEWAY_LOG", "info")
        # These tests are about the process; without a key of their own they use the dev-mode
        # public default API (access has its own tests in test_access.py).
        env.setdefault("GATEWAY_DEV", "1")
        env.setdefault("GATEWAY_EGRESS_ALLOW", "127.0.0.0/8")  # the emulator is on loopback
        self.url = f"http://{HOST}:{env['GATEWAY_PORT']}"
        self.admin_url = f"http://{HOST}:{env['GATEWAY_ADMIN_PORT']}"
        self.env = env
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(_binary("GATEWAY_BIN", "gateway")), "start"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
            )

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def logs(self) -> str:
        return self.stdout + self.stderr

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def wait_ready(self) -> GatewayProcess:
        deadline = time.monotonic() + WAIT_S
        with httpx.Client(timeout=2, trust_env=False) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    pytest.fail(f"gateway exited with {self.proc.returncode} during start-up:\n{self.tail()}")
                try:
                    if c.get(f"{self.url}/readyz").status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        pytest.fail(f"gateway not ready after {WAIT_S}s:\n{self.tail()}")

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gateway still running {timeout}s later:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Sends `sig` and waits for the exit; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # --- clients -------------------------------------------------------------------------------
    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=CONSUMER_KEY, max_retries=0, timeout=30.0)

    def admin(self, method: str, path: str, token: str | None, **kw) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(timeout=30, trust_env=False) as c:
            return c.request(method, f"{self.admin_url}{path}", headers=headers, **kw)


@pytest.fixture
def spawn(tmp_path):
    """Starts gateways (`spawn(env, ready=True)`); all are killed at teardown whatever happened.
    Their logs are printed when the test fails (pytest shows captured output)."""
    procs: list[GatewayProcess] = []

    def _spawn(env: dict[str, str], *, ready: bool = True, name: str | None = None) -> GatewayProcess:
        p = GatewayProcess(env, tmp_path, name or f"gateway{len(procs) + 1}")
        procs.append(p)
        if ready:
            p.wait_ready()
        return p

    yield _spawn
    for p in procs:
        p.kill()
        print(f"--- {p.stderr_path.name} (last lines)\n{p.tail(60)}")


def emulator_config(stack, tmp_path: Path) -> Path:
    """The session's config file (one provider of every kind, all on the session emulator)."""
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG_YAML % {"emu": int(urlsplit(stack.emulator_url).port)})
    return path


def own_env(stack, tmp_path: Path, *, data: str = "data", config: bool = True, **extra: str) -> dict[str, str]:
    """Environment for a gateway of our own on the session emulator, with its own data dir."""
    env = base_env(EMU_KEY=stack.emu_key, GATEWAY_DATA_DIR=str(tmp_path / data))
    if config:
        env["GATEWAY_CONFIG"] = str(emulator_config(stack, tmp_path))
    env.update(extra)
    return env


def run_gateway(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(_binary("GATEWAY_BIN", "gateway")), *args],
        env=env, input=stdin if stdin is not None else "", capture_output=True, text=True, timeout=WAIT_S,
    )


# --- 1. gateway config check -------------------------------------------------------------------

SECRET_VAR = "LIFECYCLE_PROVIDER_SECRET"


@pytest.fixture
def check_env(tmp_path):
    """Runs `gateway config check FILE` with a secret in the environment; returns
    (completed process, combined output, file path, secret)."""
    secret = "sk-lifecycle-secret-" + secrets.token_hex(12)

    def _check(text: str, name: str = "gateway.yaml", **extra: str):
        path = tmp_path / name
        path.write_text(text)
        env = base_env(**{SECRET_VAR: secret, "EMU_KEY": secret}, **extra)
        env.pop("LIFECYCLE_NOT_SET", None)
        r = run_gateway("config", "check", str(path), env=env)
        return r, r.stdout + r.stderr, path, secret

    return _check


def test_config_check_accepts_a_good_file(check_env):
    r, out, path, secret = check_env(CONFIG_YAML % {"emu": 9})
    assert r.returncode == 0, out
    assert "ok (6 providers, 3 models)" in r.stdout, out
    assert secret not in out


def test_config_check_reads_gateway_config_when_no_file_is_given(tmp_path):
    path = tmp_path / "from-env.yaml"
    path.write_text(CONFIG_YAML % {"emu": 9})
    r = run_gateway("config", "check", env=base_env(EMU_KEY="x", GATEWAY_CONFIG=str(path)))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok (6 providers, 3 models)" in r.stdout


_S = "${" + SECRET_VAR + "}"

# (id, file text, line, field, words the message must contain)
BAD_CONFIGS = [
    (
        "typo_field_block",
        f"""\
providers:
  - name: openai
    kind: openai
    api_key: "{_S}"
  - name: claude
    kind: anthropic
    api_kee: "{_S}"
""",
        7, "providers[1].api_kee", ["unknown field", "api_kee", "api_key"],
    ),
    (
        "typo_field_flow",
        f"""\
providers:
  - {{name: openai, kind: openai, api_key: "{_S}"}}
  - {{name: claude, kind: anthropic, api_kee: "{_S}"}}
""",
        3, "providers[1].api_kee", ["unknown field", "api_kee"],
    ),
    (
        "typo_model_field",
        f"""\
providers:
  - name: openai
    kind: openai
    api_key: "{_S}"
models:
  - name: smart
    target: [{{provider: openai, model: gpt-4o}}]
""",
        7, "models[0].target", ["unknown field", "targets"],
    ),
    (
        "unknown_kind_block",
        f"""\
# providers for production
providers:
  - name: openai
    kind: openai
    api_key: "{_S}"

  - name: claude
    kind: antropic
    api_key: "{_S}"
""",
        8, "providers[1].kind", ["antropic", "anthropic"],
    ),
    (
        "unknown_kind_flow",
        f"""\
providers:
  - {{name: openai, kind: openai, api_key: "{_S}"}}
  - {{name: claude, kind: antropic, api_key: "{_S}"}}
""",
        3, "providers[1].kind", ["antropic", "anthropic"],
    ),
    (
        "unknown_target_provider_block",
        f"""\
providers:
  - name: openai
    kind: openai
    api_key: "{_S}"
  - name: claude
    kind: anthropic
    api_key: "{_S}"
models:
  - name: smart
    targets:
      - provider: claude
        model: claude-sonnet-4-5
      - provider: opneai
        model: gpt-4o
""",
        13, "models[0].targets[1].provider", ["opneai"],
    ),
    (
        "unknown_target_provider_flow",
        f"""\
providers:
  - {{name: openai, kind: openai, api_key: "{_S}"}}
models:
  - name: smart
    targets: [{{provider: openai, model: gpt-4o}}]
  - name: fast
    targets: [{{provider: groq, model: llama-3.1-8b}}]
""",
        7, "models[1].targets[0].provider", ["groq"],
    ),
    (
        "unset_variable",
        f"""\
providers:
  - name: openai
    kind: openai
    api_key: "{_S}"
  - name: claude
    kind: anthropic
    api_key: "${{LIFECYCLE_NOT_SET}}"
""",
        7, None, ["LIFECYCLE_NOT_SET", "not set"],
    ),
]


@pytest.mark.parametrize("text,line,field,words", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_config_check_names_file_line_and_field(check_env, text, line, field, words):
    r, out, path, secret = check_env(text)
    assert r.returncode == 1, out
    prefix = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert prefix in r.stderr, f"expected {prefix!r} in:\n{out}"
    for w in words:
        assert w in r.stderr, f"expected {w!r} in:\n{out}"
    assert secret not in out, f"the secret value of {SECRET_VAR} is in the output:\n{out}"
    assert "panicked" not in out


@pytest.mark.parametrize(
    "text,line,field",
    [
        # A variable put in the wrong field by mistake: the error must still not show its value.
        (f"providers:\n  - name: openai\n    kind: openai\n    priority: {_S}\n", 4, "providers[0].priority"),
        (f"providers:\n  - name: openai\n    kind: {_S}\n", 3, "providers[0].kind"),
        (f"providers:\n  - name: openai\n    kind: openai\n    base_url: {_S}\n", 4, "providers[0].base_url"),
        (f"providers:\n  - name: azure\n    kind: azure_openai\n    base_url: https://x.openai.azure.com\n"
         f"    api_key: {_S}\n    deployments: {_S}\n", 6, "providers[0].deployments"),
    ],
    ids=["priority", "kind", "base_url", "deployments"],
)
def test_config_check_never_echoes_a_secret_in_the_wrong_field(check_env, text, line, field):
    r, out, path, secret = check_env(text)
    assert r.returncode == 1, out
    assert f"{path}:{line}: {field}: " in r.stderr, out
    assert secret not in out, f"the secret value of {SECRET_VAR} is in the output:\n{out}"


def test_config_check_ignores_variables_in_comments(check_env):
    """A commented-out provider whose variable is unset must not make the file invalid."""
    text = f"""\
providers:
  - name: openai
    kind: openai
    api_key: "{_S}"
#  - name: claude
#    kind: anthropic
#    api_key: "${{LIFECYCLE_NOT_SET}}"
"""
    r, out, path, secret = check_env(text)
    assert r.returncode == 0, out
    assert secret not in out


def test_config_check_of_a_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    r = run_gateway("config", "check", str(path), env=base_env())
    assert r.returncode == 1
    assert str(path) in r.stderr and "cannot read" in r.stderr, r.stderr


# --- 2. the CLI against the session's gateway --------------------------------------------------


@pytest.fixture
def cli(stack):
    """`cli(*args, env=..., stdin=..., token=...)` runs a gateway CLI command against the session
    gateway's admin API; what it creates is removed afterwards."""
    made: dict[str, list[str]] = {"model": [], "provider": []}

    def _cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
             token: str | None = stack.admin_token) -> subprocess.CompletedProcess:
        e = base_env(GATEWAY_ADMIN_URL=stack.admin_url, **(env or {}))
        if token is not None:
            e["GATEWAY_ADMIN_TOKEN"] = token
        r = run_gateway(*args, env=e, stdin=stdin)
        if r.returncode == 0 and len(args) > 3 and args[1] == "add" and args[2] == "--name":
            made[args[0]].append(args[3])
        return r

    yield _cli
    for name in made["model"]:
        stack.admin("DELETE", f"/admin/models/{name}")
    for name in made["provider"]:
        stack.admin("DELETE", f"/admin/providers/{name}")


def listed(stdout: str, name: str) -> list[str] | None:
    """The columns of `name`'s row in `provider list` output."""
    for row in stdout.splitlines():
        cols = row.split()
        if cols and cols[0] == name:
            return cols
    return None


def add_provider(cli, stack, name: str, key: str, *, via: str = "env") -> subprocess.CompletedProcess:
    args = ["provider", "add", "--name", name, "--kind", "openai_compatible",
            "--base-url", f"{stack.emulator_url}/v1"]
    if via == "env":
        r = cli(*args, "--api-key-env", "LIFECYCLE_KEY", env={"LIFECYCLE_KEY": key})
    else:
        r = cli(*args, "--api-key-stdin", stdin=key + "\n")
    assert key not in args
    assert r.returncode == 0, r.stdout + r.stderr
    assert key not in r.stdout + r.stderr
    return r


def test_cli_provider_add_list_health_remove(stack, cli):
    good, bad = unique("lc-good"), unique("lc-bad")
    wrong_key = "sk-wrong-" + secrets.token_hex(12)
    add_provider(cli, stack, good, stack.emu_key, via="env")
    add_provider(cli, stack, bad, wrong_key, via="stdin")

    r = cli("provider", "list")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    assert header == ["NAME", "KIND", "BASE", "URL", "KEY", "PRIORITY"], r.stdout
    for name in (good, bad):
        row = listed(r.stdout, name)
        assert row is not None, r.stdout
        assert row[1] == "openai_compatible" and row[2] == f"{stack.emulator_url}/v1", row
        assert row[3] == "yes", f"KEY column of {name}: {row}"
    assert stack.emu_key not in r.stdout + r.stderr
    assert wrong_key not in r.stdout + r.stderr
    # The key really reached the store (not just `has_api_key`): health checks use it.
    h = cli("provider", "health", good)
    assert h.returncode == 0, h.stdout + h.stderr
    assert re.search(rf"^{re.escape(good)}\s+ok\b", h.stdout, re.M), h.stdout

    h = cli("provider", "health", bad)
    assert h.returncode == 1, h.stdout + h.stderr
    assert re.search(rf"^{re.escape(bad)}\s+FAIL\b", h.stdout, re.M), h.stdout
    assert wrong_key not in h.stdout + h.stderr

    # All providers: one fails, so the command fails, and every provider is listed.
    h = cli("provider", "health")
    assert h.returncode == 1, h.stdout + h.stderr
    assert re.search(rf"^{re.escape(good)}\s+ok\b", h.stdout, re.M), h.stdout
    assert re.search(rf"^{re.escape(bad)}\s+FAIL\b", h.stdout, re.M), h.stdout

    for name in (good, bad):
        r = cli("provider", "remove", name)
        assert r.returncode == 0, r.stderr
    r = cli("provider", "list")
    assert listed(r.stdout, good) is None and listed(r.stdout, bad) is None, r.stdout
    r = cli("provider", "health", good)
    assert r.returncode != 0


def test_cli_provider_health_shows_the_routers_view_of_each_target(stack, cli, oai):
    # One success and one 503 (retried, then answered) on openai/gpt-4o.
    stack.fault({"kind": "status", "status": 503}, model="gpt-4o", vendor="openai")
    for _ in range(2):
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "tick"}])
    h = cli("provider", "health", "openai")
    assert h.returncode == 0, h.stdout + h.stderr
    assert "target (last minute)" in h.stdout, h.stdout
    row = next((l.split() for l in h.stdout.splitlines() if l.startswith("openai/gpt-4o ")), None)
    assert row is not None, h.stdout
    # target, circuit, requests, errors, 429s, p50, p95
    assert row[1] == "closed" and int(row[2]) >= 3 and int(row[3]) >= 1, row
    assert not any(l.startswith("claude/") for l in h.stdout.splitlines()), "filtered to one provider"


def test_cli_provider_add_without_the_key_variable_fails_clearly(stack, cli):
    name = unique("lc-nokey")
    r = cli("provider", "add", "--name", name, "--kind", "openai", "--api-key-env", "LIFECYCLE_UNSET_VAR")
    assert r.returncode != 0
    assert "LIFECYCLE_UNSET_VAR" in r.stderr, r.stderr
    assert listed(cli("provider", "list").stdout, name) is None


def test_cli_model_add_is_served_at_once_and_remove_unserves_it(stack, cli):
    good, bad = unique("lc-good"), unique("lc-bad")
    add_provider(cli, stack, good, stack.emu_key)
    add_provider(cli, stack, bad, "sk-wrong-" + secrets.token_hex(8))
    direct, fallback = unique("lc-direct"), unique("lc-fallback")

    r = cli("model", "add", "--name", direct, "--target", f"{good}/gpt-4o", "--fallback", "any=gpt-4o")
    assert r.returncode == 0, r.stdout + r.stderr
    # Its only target has a wrong key: the fallback (the session's `gpt-4o`) serves it.
    r = cli("model", "add", "--name", fallback, "--target", f"{bad}/gpt-4o", "--fallback", "any=gpt-4o")
    assert r.returncode == 0, r.stdout + r.stderr

    oai = stack.openai()
    raw = oai.chat.completions.with_raw_response.create(model=direct, messages=user("via the cli"))
    assert raw.parse().choices[0].message.content == "Echo: via the cli"
    assert raw.headers.get("x-gateway-provider") == good
    assert raw.headers.get("x-gateway-fallback-reason") is None

    raw = oai.chat.completions.with_raw_response.create(model=fallback, messages=user("after a 401"))
    assert raw.parse().choices[0].message.content == "Echo: after a 401"
    assert raw.headers.get("x-gateway-provider") == "openai"
    assert raw.headers.get("x-gateway-fallback-reason"), dict(raw.headers)

    r = cli("model", "list")
    assert r.returncode == 0, r.stderr
    models = {m["name"]: m for m in map(json.loads, r.stdout.splitlines())}
    assert models[direct]["targets"] == [{"provider": good, "model": "gpt-4o"}]
    assert models[direct]["fallbacks"] == {"any": ["gpt-4o"]}

    for name in (direct, fallback):
        r = cli("model", "remove", name)
        assert r.returncode == 0, r.stdout + r.stderr
    names = {m["name"] for m in map(json.loads, cli("model", "list").stdout.splitlines())}
    assert direct not in names and fallback not in names
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model=direct, messages=user("gone"))


@pytest.mark.parametrize("token", ["gwa_" + "0" * 64, None], ids=["wrong_token", "no_token"])
def test_cli_with_a_bad_admin_token_fails_clearly(stack, cli, token):
    name = unique("lc-denied")
    for args in (("provider", "list"), ("model", "list"),
                 ("provider", "add", "--name", name, "--kind", "openai_compatible",
                  "--base-url", f"{stack.emulator_url}/v1")):
        r = cli(*args, token=token)
        assert r.returncode != 0, f"{args}: {r.stdout}"
        assert "panicked" not in r.stderr
        if token is None:
            assert "GATEWAY_ADMIN_TOKEN" in r.stderr, r.stderr
        else:
            assert "401" in r.stderr, r.stderr
    assert stack.admin("GET", f"/admin/providers/{name}").status_code == 404


def test_cli_with_no_gateway_listening_fails_clearly(stack, cli):
    port = _free_ports(1)[0]
    e = base_env(GATEWAY_ADMIN_URL=f"http://{HOST}:{port}", GATEWAY_ADMIN_TOKEN=stack.admin_token)
    r = run_gateway("provider", "list", env=e)
    assert r.returncode != 0
    assert "cannot reach the admin API" in r.stderr, r.stderr


# --- 3. first start: the admin token and the encryption key -----------------------------------


def test_first_start_prints_the_admin_token_once(stack, spawn, tmp_path):
    env = own_env(stack, tmp_path, config=False)
    data = Path(env["GATEWAY_DATA_DIR"])
    first = spawn(env)
    tokens = set(TOKEN_RE.findall(first.stderr))
    assert len(tokens) == 1, f"expected one admin token on stderr:\n{first.stderr}"
    token = tokens.pop()
    assert "Admin token (shown once" in first.stderr
    assert token not in first.stdout

    assert first.admin("GET", "/admin/providers", token).status_code == 200
    assert first.admin("GET", "/admin/providers", "gwa_" + "1" * 64).status_code == 401
    assert first.admin("GET", "/admin/providers", None).status_code == 401
    assert first.stop() == 0

    key_file = data / "encryption.key"
    assert key_file.is_file(), sorted(p.name for p in data.iterdir())
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, oct(key_file.stat().st_mode)
    assert re.fullmatch(r"[0-9a-f]{64}", key_file.read_text().strip(), re.I)
    # Only a hash of the token is kept.
    for f in data.rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f"admin token stored in clear in {f}"

    second = spawn(env)
    assert not TOKEN_RE.search(second.stderr + second.stdout), second.stderr
    assert "Admin token" not in second.stderr
    assert second.admin("GET", "/admin/providers", token).status_code == 200
    # The CLI works with it too.
    r = run_gateway("provider", "list", env=base_env(GATEWAY_ADMIN_URL=second.admin_url, GATEWAY_ADMIN_TOKEN=token))
    assert r.returncode == 0, r.stderr
    assert second.stop() == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_provider_keys_survive_a_restart_on_sqlite(stack, spawn, tmp_path):
    """The generated key file decrypts, on the next start, what the first start stored."""
    token = "gwa_lc_" + secrets.token_hex(12)
    first = spawn(own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN=token))
    assert first.openai().chat.completions.create(model="smart", messages=user("one")).choices
    assert first.stop() == 0
    second = spawn(own_env(stack, tmp_path, config=False, GATEWAY_ADMIN_TOKEN=token))
    stack.reset()
    r = second.openai().chat.completions.create(model="smart", messages=user("two"))
    assert r.choices[0].message.content == "Echo: two"
    sent = stack.upstream_requests("anthropic")
    name, value = credential_header("anthropic", stack.emu_key)
    assert sent and dict((k.lower(), v) for k, v in sent[-1]["headers"]).get(name) == value
    assert second.stop() == 0


def assert_refuses_to_start(gw: GatewayProcess, *words: str) -> str:
    rc = gw.wait_exit()
    err = gw.stderr
    assert rc != 0, err
    for w in words:
        assert w in err, f"expected {w!r} in the gateway's stderr:\n{err}"
    assert "panicked" not in err, err
    return err


def another_key_hint(err: str) -> bool:
    """Whether an error tells the operator the encryption key does not fit the stored data."""
    low = err.lower()
    return "gateway_encryption_key" in low or "encryption key" in low or "decrypt" in low


def test_restart_with_another_encryption_key_fails_clearly_on_sqlite(stack, spawn, tmp_path):
    """Provider keys stored under one key cannot be read with another: the operator must be told
    that the encryption key is the problem."""
    token = "gwa_lc_" + secrets.token_hex(12)
    first = spawn(own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN=token))
    assert first.stop() == 0
    second = spawn(own_env(stack, tmp_path, config=False, GATEWAY_ADMIN_TOKEN=token,
                           GATEWAY_ENCRYPTION_KEY=secrets.token_hex(32)), ready=False)
    err = assert_refuses_to_start(second)
    assert another_key_hint(err), f"no hint that the encryption key is wrong:\n{err}"


@pytest.mark.parametrize(
    "setting,words",
    [
        ({"GATEWAY_ENCRYPTION_KEY": "not-hex"}, ["GATEWAY_ENCRYPTION_KEY", "64 hex"]),
        ({"GATEWAY_DATABASE_URL": "mysql://db/gw"}, ["GATEWAY_DATABASE_URL"]),
        ({"GATEWAY_PORT": "eighty"}, ["GATEWAY_PORT"]),
    ],
    ids=["malformed_key", "unsupported_database", "bad_port"],
)
def test_start_refuses_bad_settings(stack, spawn, tmp_path, setting, words):
    env = own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN="gwa_lc_x_0123456789abcdef", **setting)
    assert_refuses_to_start(spawn(env, ready=False), *words)


def test_start_refuses_a_bad_config_file_without_showing_secrets(stack, spawn, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(dict((c[0], c[1]) for c in BAD_CONFIGS)["unknown_kind_block"])  # line 8
    secret = "sk-start-secret-" + secrets.token_hex(8)
    env = own_env(stack, tmp_path, config=False, GATEWAY_ADMIN_TOKEN="gwa_lc_x_0123456789abcdef",
                  GATEWAY_CONFIG=str(bad), **{SECRET_VAR: secret})
    err = assert_refuses_to_start(spawn(env, ready=False), f"{bad}:8: providers[1].kind:")
    assert secret not in err


def test_start_names_a_port_in_use(stack, spawn, tmp_path):
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN="gwa_lc_x_0123456789abcdef", GATEWAY_ADMIN_PORT=str(port))
        assert_refuses_to_start(spawn(env, ready=False), f"{HOST}:{port}", "in use")


# --- 4. PostgreSQL ------------------------------------------------------------------------------


def psql(url: str, sql: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-c", sql],
        capture_output=True, text=True, timeout=WAIT_S,
    )


@pytest.fixture
def pg_database():
    """A fresh PostgreSQL database on GATEWAY_TEST_POSTGRES_URL's server; dropped afterwards."""
    url = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if not url:
        msg = 'GATEWAY_TEST_POSTGRES_URL is not set (eval "$(scripts/test-postgres.sh)" first)'
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    if shutil.which("psql") is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("psql is not installed")
    name = "gw_e2e_lifecycle_" + secrets.token_hex(6)
    r = psql(url, f'CREATE DATABASE "{name}"')
    assert r.returncode == 0, f"CREATE DATABASE failed: {r.stderr}"
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        r = psql(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        assert r.returncode == 0, f"DROP DATABASE failed: {r.stderr}"


def test_postgres_store_persists_providers_and_keys(stack, spawn, tmp_path, pg_database):
    key = secrets.token_hex(32)
    token = "gwa_lc_" + secrets.token_hex(12)
    common = dict(GATEWAY_DATABASE_URL=pg_database, GATEWAY_ENCRYPTION_KEY=key, GATEWAY_ADMIN_TOKEN=token)

    first = spawn(own_env(stack, tmp_path, data="data1", **common))
    r = first.openai().chat.completions.create(model="gpt-4o", messages=user("stored in postgres"))
    assert r.choices[0].message.content == "Echo: stored in postgres"
    assert first.stop() == 0
    # The key came from the environment: nothing to write into the data dir.
    assert not (tmp_path / "data1" / "encryption.key").exists()

    # Again, without the config file and on another data dir: everything comes from PostgreSQL.
    second = spawn(own_env(stack, tmp_path, data="data2", config=False, **common))
    listing = second.admin("GET", "/admin/providers", token)
    assert listing.status_code == 200, listing.text
    got = {p["name"]: p for p in listing.json()}
    assert {"openai", "azure", "claude", "gem", "groq", "compat"} <= set(got), sorted(got)
    assert all(got[n]["has_api_key"] for n in ("openai", "claude", "gem"))
    assert stack.emu_key not in listing.text
    models = second.admin("GET", "/admin/models", token).json()
    assert {"smart", "gpt-4o"} <= {m["name"] for m in models}

    stack.reset()
    oai = second.openai()
    for model, vendor in (("gpt-4o", "openai"), ("smart", "anthropic"), ("gem/gemini-2.0-flash", "gemini")):
        r = oai.chat.completions.create(model=model, messages=user(f"after restart {vendor}"))
        assert r.choices[0].message.content == f"Echo: after restart {vendor}"
        sent = stack.upstream_requests(vendor)
        assert sent, vendor
        name, value = credential_header(vendor, stack.emu_key)
        assert dict((k.lower(), v) for k, v in sent[-1]["headers"]).get(name) == value, vendor
    assert second.stop() == 0

    # Without GATEWAY_ENCRYPTION_KEY (and no key file in the fresh data dir) it refuses to start.
    env = own_env(stack, tmp_path, data="data3", config=False, GATEWAY_DATABASE_URL=pg_database,
                  GATEWAY_ADMIN_TOKEN=token)
    third = spawn(env, ready=False)
    rc = third.wait_exit()
    assert rc != 0
    assert "GATEWAY_ENCRYPTION_KEY" in third.stderr, third.stderr
    assert not (tmp_path / "data3" / "encryption.key").exists()


def test_postgres_restart_with_another_encryption_key_fails_clearly(stack, spawn, tmp_path, pg_database):
    """Every instance sharing the database needs the same key; one started with another key must
    say so instead of serving (or failing) mysteriously."""
    token = "gwa_lc_" + secrets.token_hex(12)
    env = own_env(stack, tmp_path, data="data1", GATEWAY_DATABASE_URL=pg_database,
                  GATEWAY_ENCRYPTION_KEY=secrets.token_hex(32), GATEWAY_ADMIN_TOKEN=token)
    first = spawn(env)
    assert first.stop() == 0
    env = own_env(stack, tmp_path, data="data2", config=False, GATEWAY_DATABASE_URL=pg_database,
                  GATEWAY_ENCRYPTION_KEY=secrets.token_hex(32), GATEWAY_ADMIN_TOKEN=token)
    err = assert_refuses_to_start(spawn(env, ready=False))
    assert another_key_hint(err), f"no hint that the encryption key is wrong:\n{err}"


# --- 5. graceful shutdown -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_drains_an_in_flight_stream(stack, spawn, tmp_path, sig):
    gw = spawn(own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN="gwa_lc_" + secrets.token_hex(8)))
    prompt = "drain this stream before exiting please"
    stack.fault({"kind": "stall", "after_events": 2, "ms": 1500}, model="gpt-4o")
    body = {"model": "gpt-4o", "messages": user(prompt), "stream": True}
    content, data_lines, signalled_at, done_at = [], [], None, None
    still_running_after_signal = None
    with httpx.Client(timeout=30, trust_env=False) as c:
        with c.stream("POST", f"{gw.url}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {CONSUMER_KEY}"}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                data_lines.append(data)
                if data == "[DONE]":
                    done_at = time.monotonic()
                    continue
                chunk = json.loads(data)
                for ch in chunk.get("choices") or []:
                    content.append((ch.get("delta") or {}).get("content") or "")
                if signalled_at is None:
                    # The first event is here and the upstream is about to stall: stop now.
                    gw.proc.send_signal(sig)
                    signalled_at = time.monotonic()
                    time.sleep(0.3)
                    still_running_after_signal = gw.proc.poll() is None
    assert signalled_at is not None, data_lines
    assert still_running_after_signal, "the gateway exited with a stream in flight"
    assert "".join(content) == echo(prompt), data_lines
    assert data_lines[-1] == "[DONE]", data_lines
    # The stream really was in flight when the signal came (the stall is 1.5 s).
    assert done_at is not None and done_at - signalled_at > 1.0
    t0 = time.monotonic()
    rc = gw.wait_exit(timeout=5)
    assert rc == 0, gw.tail()
    assert time.monotonic() - t0 < 5


def test_shutdown_drains_an_in_flight_request_and_stops_accepting(stack, spawn, tmp_path):
    gw = spawn(own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN="gwa_lc_" + secrets.token_hex(8)))
    stack.fault({"kind": "delay", "ms": 1500}, model="gpt-4o")
    result: dict = {}

    def call():
        try:
            result["r"] = gw.openai().chat.completions.create(model="gpt-4o", messages=user("slow one"))
        except Exception as e:  # reported below
            result["e"] = e

    t = threading.Thread(target=call, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not stack.upstream_requests("openai") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stack.upstream_requests("openai"), "the request never reached the upstream"
    gw.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert gw.proc.poll() is None, "the gateway exited with a request in flight"
    # While draining, a new connection is no longer served normally.
    with httpx.Client(timeout=2, trust_env=False) as c:
        try:
            status = c.get(f"{gw.url}/readyz").status_code
        except httpx.HTTPError:
            status = None
    assert status != 200, "still ready while shutting down"
    t.join(timeout=15)
    assert not t.is_alive()
    assert "e" not in result, repr(result.get("e"))
    assert result["r"].choices[0].message.content == "Echo: slow one"
    assert gw.wait_exit(timeout=5) == 0, gw.tail()


# --- 6. secrets never in logs -------------------------------------------------------------------


def _db_values(data_dir: Path):
    """Every value of every table of every SQLite file under `data_dir`, as (table, bytes)."""
    import sqlite3
    for db in data_dir.glob("*.db"):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for t in tables:
                for row in con.execute(f'SELECT * FROM "{t}"'):
                    for v in row:
                        if isinstance(v, bytes):
                            yield t, v
                        elif v is not None:
                            yield t, str(v).encode()
        finally:
            con.close()


@pytest.mark.parametrize("level", ["debug", "trace"])
def test_secret_canaries_appear_in_no_log_response_or_table(stack, spawn, tmp_path, level):
    """Unique canaries as the admin token, the encryption key, provider keys and consumer keys,
    at the most verbose log levels; then every log line, response body and header, and every
    database value is searched for them."""
    admin_token = "gwa_lc_" + secrets.token_hex(16)
    enc_key = secrets.token_hex(32)
    wrong_key = "sk-wrong-" + secrets.token_hex(16)
    cli_key = "sk-cli-" + secrets.token_hex(16)
    seen: list[bytes] = []  # every response's status line, headers and body

    def record(resp: httpx.Response) -> None:
        resp.read()
        seen.append(str(resp.status_code).encode() + b"\n"
                    + b"\n".join(k + b": " + v for k, v in resp.headers.raw) + b"\n" + resp.content)

    gw = spawn(own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN=admin_token, GATEWAY_LOG=level,
                       GATEWAY_ENCRYPTION_KEY=enc_key, GATEWAY_DEV="0"))
    admin = httpx.Client(base_url=gw.admin_url, trust_env=False, timeout=30,
                         headers={"authorization": f"Bearer {admin_token}"}, event_hooks={"response": [record]})
    r = admin.post("/admin/keys", json={"label": "canary"})
    assert r.status_code == 201, r.text
    consumer_key = r.json()["key"]
    seen.pop()  # the one answer that shows the key, by design
    r = admin.post("/admin/tokens", json={"name": "canary-viewer", "role": "viewer"})
    viewer_token = r.json()["token"]
    seen.pop()
    oai = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=consumer_key, max_retries=0, timeout=30,
                        http_client=httpx.Client(trust_env=False, event_hooks={"response": [record]}))

    # A provider with a wrong key, added through the admin API, and one through the CLI.
    r = admin.put("/admin/providers/lc-bad", json={
        "name": "lc-bad", "kind": "openai_compatible", "base_url": f"{stack.emulator_url}/v1",
        "api_key": wrong_key, "models": ["lc-bad-model"]})
    assert r.status_code in (200, 201), r.text
    r = run_gateway("provider", "add", "--name", "lc-cli", "--kind", "openai_compatible",
                    "--base-url", f"{stack.emulator_url}/v1", "--api-key-env", "LC_KEY",
                    env=base_env(GATEWAY_ADMIN_URL=gw.admin_url, GATEWAY_ADMIN_TOKEN=admin_token, LC_KEY=cli_key))
    assert r.returncode == 0, r.stderr
    seen.append((r.stdout + r.stderr).encode())

    assert oai.chat.completions.create(model="gpt-4o", messages=user("hello")).choices
    assert oai.chat.completions.create(model="smart", messages=user("hello claude")).choices
    assert oai.chat.completions.create(model="gem/gemini-2.0-flash", messages=user("hello gemini")).choices
    assert oai.chat.completions.create(model="azure/gpt-4o", messages=user("hello azure")).choices
    assert "".join(c.choices[0].delta.content or "" for c in oai.chat.completions.create(
        model="gpt-4o", messages=user("a stream"), stream=True) if c.choices) == "Echo: a stream"
    assert oai.embeddings.create(model="text-embedding-3-small", input="embed me").data
    with pytest.raises(openai.APIStatusError) as failed:
        oai.chat.completions.create(model="lc-bad-model", messages=user("rejected upstream"))
    assert failed.value.status_code in (401, 502), failed.value
    with pytest.raises(openai.APIStatusError):
        oai.chat.completions.create(model="lc-cli/gpt-4o", messages=user("rejected too"))
    # Wrong consumer credentials, one of them a near miss of the real key.
    # (The near miss changes the last character: replacing it by a fixed one would be the real
    # key whenever the key happens to end in that character.)
    near_miss = consumer_key[:-1] + ("x" if consumer_key[-1] != "x" else "y")
    for bad in (near_miss, wrong_key, admin_token):
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{gw.url}/v1", api_key=bad, max_retries=0, timeout=30,
                          http_client=httpx.Client(trust_env=False, event_hooks={"response": [record]})
                          ).models.list()
    # An upstream error on a fallback path too.
    stack.fault({"kind": "status", "status": 401}, model="claude-sonnet-4-5")
    assert oai.chat.completions.create(model="smart", messages=user("fallback")).choices
    assert admin.get("/admin/providers/lc-bad/health").json()["ok"] is False
    for path in ("/admin/health/providers", "/admin/providers", "/admin/keys", "/admin/tokens",
                 "/admin/consumers", "/admin/apis", "/admin/audit"):
        assert admin.get(path).status_code == 200, path
    assert admin.get("/admin/providers", headers={"authorization": "Bearer gwa_" + "2" * 64}).status_code == 401
    assert admin.post("/admin/keys", json={"label": "x"}, headers={"authorization": f"Bearer {viewer_token}"}).status_code == 403
    assert admin.post("/admin/secrets/rotate-key").status_code == 200
    assert admin.delete("/admin/providers/lc-cli").status_code == 204
    assert gw.stop() == 0

    logs = gw.logs()
    assert level.upper() in logs, f"GATEWAY_LOG={level} logged nothing at that level"
    assert "lc-bad" in logs, "the failed upstream call was not logged at all"
    canaries = (("the upstream key", stack.emu_key), ("the wrong provider key", wrong_key),
                ("the CLI-added provider key", cli_key), ("the admin token", admin_token),
                ("the viewer token", viewer_token), ("the consumer's key", consumer_key),
                ("the encryption key", enc_key))
    for what, value in canaries:
        where = [ln for ln in logs.splitlines() if value in ln]
        assert not where, f"{what} is in the gateway's logs:\n" + "\n".join(where[:5])
        hits = [s[:300] for s in seen if value.encode() in s]
        assert not hits, f"{what} is in a response: {hits[:2]}"
        rows = [t for t, v in _db_values(tmp_path / "data") if value.encode() in v or value.encode().hex().encode() in v]
        assert not rows, f"{what} is stored in the clear in table(s) {sorted(set(rows))}"
    # The search looked at something: the answers, and the tables that hold the secrets' traces.
    assert len(seen) > 20
    assert {"providers", "gateway_keys", "admin_tokens", "audit_log"} <= {t for t, _ in _db_values(tmp_path / "data")}


# --- 7. admin token strength and encryption-key rotation ---------------------------------------


@pytest.mark.parametrize("token,words", [
    ("", ["GATEWAY_ADMIN_TOKEN", "empty"]),
    ("changeme", ["GATEWAY_ADMIN_TOKEN", "well-known"]),
    ("sk-1234", ["GATEWAY_ADMIN_TOKEN", "well-known"]),
    ("hunter2hunter", ["GATEWAY_ADMIN_TOKEN", "shorter than 16"]),
], ids=["empty", "changeme", "sk-1234", "short"])
def test_start_refuses_a_weak_admin_token(stack, spawn, tmp_path, token, words):
    err = assert_refuses_to_start(spawn(own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN=token), ready=False), *words)
    assert not (tmp_path / "data" / "gateway.db").exists() or token == "", "it opened the store first"
    if token:
        assert token not in err


def _provider_via_admin(stack, gw, token):
    r = gw.admin("PUT", "/admin/providers/rot", token, json={
        "name": "rot", "kind": "openai_compatible", "base_url": f"{stack.emulator_url}/v1",
        "api_key": stack.emu_key, "models": ["gpt-4o"]})
    assert r.status_code in (200, 201), r.text


def _asks(gw) -> bool:
    r = gw.openai().chat.completions.create(model="rot/gpt-4o", messages=user("sealed"))
    return r.choices[0].message.content == "Echo: sealed"


def test_an_env_encryption_key_rotates_without_losing_provider_keys(stack, spawn, tmp_path):
    token = "gwa_lc_" + secrets.token_hex(16)
    old, new = secrets.token_hex(32), secrets.token_hex(32)
    env = lambda **k: own_env(stack, tmp_path, config=False, GATEWAY_ADMIN_TOKEN=token, **k)  # noqa: E731

    gw = spawn(env(GATEWAY_ENCRYPTION_KEY=old))
    _provider_via_admin(stack, gw, token)
    assert _asks(gw)
    assert gw.stop() == 0
    # The new key alone cannot read what the old one sealed: start-up says so.
    err = assert_refuses_to_start(spawn(env(GATEWAY_ENCRYPTION_KEY=new), ready=False))
    assert another_key_hint(err), err
    # Rolled out with the old key kept for reading, then everything re-sealed under the new one.
    gw = spawn(env(GATEWAY_ENCRYPTION_KEY=new, GATEWAY_ENCRYPTION_KEY_PREVIOUS=old))
    assert _asks(gw)
    r = run_gateway("secrets", "rotate-key", env=base_env(GATEWAY_ADMIN_URL=gw.admin_url, GATEWAY_ADMIN_TOKEN=token))
    assert r.returncode == 0, r.stderr
    assert "1 re-encrypted" in r.stdout, r.stdout
    assert old not in r.stdout + r.stderr and new not in r.stdout + r.stderr
    assert _asks(gw)
    assert gw.stop() == 0
    # The old key can go.
    gw = spawn(env(GATEWAY_ENCRYPTION_KEY=new))
    assert _asks(gw)


def test_a_key_file_encryption_key_rotates_while_serving(stack, spawn, tmp_path):
    token = "gwa_lc_" + secrets.token_hex(16)
    gw = spawn(own_env(stack, tmp_path, config=False, GATEWAY_ADMIN_TOKEN=token))
    _provider_via_admin(stack, gw, token)
    key_file = tmp_path / "data" / "encryption.key"
    before = key_file.read_text().split()
    r = run_gateway("secrets", "rotate-key", env=base_env(GATEWAY_ADMIN_URL=gw.admin_url, GATEWAY_ADMIN_TOKEN=token))
    assert r.returncode == 0, r.stderr
    after = key_file.read_text().split()
    assert len(after) == 2 and after[1] == before[0] and after[0] != before[0]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert _asks(gw), "the running gateway stopped serving"
    # A provider added after the rotation is sealed under the new key too.
    assert gw.stop() == 0
    key_file.write_text(after[0] + "\n")
    gw = spawn(own_env(stack, tmp_path, config=False, GATEWAY_ADMIN_TOKEN=token))
    assert _asks(gw), "a provider key was left under the old key"


# --- 8. the egress guard -----------------------------------------------------------------------


def test_without_an_egress_allow_list_a_loopback_provider_is_refused_before_connecting(stack, spawn, tmp_path):
    gw = spawn(own_env(stack, tmp_path, GATEWAY_EGRESS_ALLOW=""))
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai().chat.completions.create(model="gpt-4o", messages=user("where to?"))
    assert e.value.status_code == 502, e.value
    assert "egress" in e.value.message, e.value.message
    assert "127.0.0.1" not in e.value.message, "the refused address is shown to the consumer"
    assert not stack.upstream_requests(), "the emulator was reached"
    assert "egress to 127.0.0.1" in gw.logs(), "the operator is not told which address was refused"


def test_start_refuses_a_malformed_egress_allow_list(stack, spawn, tmp_path):
    env = own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN="gwa_lc_x_0123456789abcdef", GATEWAY_EGRESS_ALLOW="10.0.0.0/33")
    assert_refuses_to_start(spawn(env, ready=False), "GATEWAY_EGRESS_ALLOW", "10.0.0.0/33")


# --- 7. the request log ----------------------------------------------------------------------------


def test_logs_cli_and_a_shutdown_under_load_loses_no_log_row(stack, spawn, tmp_path):
    token = "gwa_lc_" + secrets.token_hex(8)
    gw = spawn(own_env(stack, tmp_path, GATEWAY_ADMIN_TOKEN=token))
    cli_env = base_env(GATEWAY_ADMIN_URL=gw.admin_url, GATEWAY_ADMIN_TOKEN=token)
    with httpx.Client(timeout=30, trust_env=False) as c:
        first = c.post(f"{gw.url}/v1/chat/completions",
                       json={"model": "gpt-4o", "messages": user("log me")},
                       headers={"authorization": f"Bearer {CONSUMER_KEY}"})
    assert first.status_code == 200
    first_id = first.headers["x-request-id"]
    # The CLI finds it (rows are written within moments of the answer).
    deadline = time.monotonic() + 10
    rows: list[dict] = []
    while time.monotonic() < deadline:
        r = run_gateway("logs", "list", "--json", "--limit", "5", env=cli_env)
        assert r.returncode == 0, r.stderr
        rows = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        if any(row["request_id"] == first_id for row in rows):
            break
        time.sleep(0.1)
    row = next(row for row in rows if row["request_id"] == first_id)
    assert row["status"] == 200 and row["model"] == "gpt-4o" and row["prompt_tokens"] > 0
    r = run_gateway("analytics", "usage", "--by", "model", "--csv", env=cli_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("model,provider,requests")
    assert any(l.startswith("gpt-4o,") for l in r.stdout.splitlines()[1:]), r.stdout

    # `gateway logs tail` follows requests as they finish, in order.
    tail = subprocess.Popen([str(_binary("GATEWAY_BIN", "gateway")), "logs", "tail", "--json"],
                            env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The tail first replays what the instance kept: read up to the first request.
        line = tail.stdout.readline()
        assert line, tail.stderr.read() if tail.poll() is not None else "no tail output"
        assert json.loads(line)["request_id"] == first_id
        sent = []
        with httpx.Client(timeout=30, trust_env=False) as c:
            for i in range(3):
                resp = c.post(f"{gw.url}/v1/chat/completions",
                              json={"model": "gpt-4o", "messages": user(f"tail {i}")},
                              headers={"authorization": f"Bearer {CONSUMER_KEY}"})
                sent.append(resp.headers["x-request-id"])
        seen = [json.loads(tail.stdout.readline())["request_id"] for _ in sent]
        assert seen == sent
    finally:
        tail.kill()
        tail.wait(timeout=10)

    # Load from several threads; SIGTERM halfway. Every request that got an answer has its row.
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker():
        with httpx.Client(timeout=10, trust_env=False) as c:
            while not stop.is_set():
                try:
                    resp = c.post(f"{gw.url}/v1/chat/completions",
                                  json={"model": "gpt-4o", "messages": user("under load")},
                                  headers={"authorization": f"Bearer {CONSUMER_KEY}"})
                except httpx.HTTPError:
                    return
                rid = resp.headers.get("x-request-id")
                if rid:
                    with lock:
                        answered.append(rid)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(answered) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.wait_exit(timeout=15) == 0, gw.tail()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert len(answered) >= 60

    import sqlite3
    dbs = [p for p in (tmp_path / "data").rglob("*.db")]
    assert dbs, list((tmp_path / "data").rglob("*"))
    logged: set[str] = set()
    for db in dbs:
        con = sqlite3.connect(db)
        try:
            logged |= {r[0] for r in con.execute("SELECT request_id FROM request_log")}
        except sqlite3.OperationalError:
            pass
        finally:
            con.close()
    missing = [rid for rid in answered if rid not in logged]
    assert not missing, f"{len(missing)} of {len(answered)} answered requests have no log row"
    assert first_id in logged

"""Starts the emulator and the gateway once per session, and resets the emulator between tests.

The binaries are NOT built here: build them first (`cargo build -p gateway -p testkit --bins`).
`GATEWAY_BIN` and `EMULATOR_BIN` override their paths (default: `target/debug/` of the workspace).
Everything listens on 127.0.0.1 on free ports; both processes are stopped at the end of the
session, and also when start-up fails.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import httpx
import openai
import pytest


# Nothing here may go through a proxy: every address is on this machine.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, [os.environ.get(_var), "127.0.0.1", "localhost"]))

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
#: Work folders (config, data, logs) kept after a failing session, shown in the summary.
_KEPT_LOGS: list[Path] = []

CONFIG_YAML = """\
providers:
  - {name: openai, kind: openai, api_key: "${EMU_KEY}", base_url: "http://127.0.0.1:%(emu)d/v1"}
  - {name: azure, kind: azure_openai, api_key: "${EMU_KEY}", base_url: "http://127.0.0.1:%(emu)d", api_version: "2024-10-21"}
  - {name: claude, kind: anthropic, api_key: "${EMU_KEY}", base_url: "http://127.0.0.1:%(emu)d"}
  - {name: gem, kind: gemini, api_key: "${EMU_KEY}", base_url: "http://127.0.0.1:%(emu)d"}
  - {name: groq, kind: groq, api_key: "${EMU_KEY}", base_url: "http://127.0.0.1:%(emu)d/v1"}
  - {name: compat, kind: openai_compatible, api_key: "${EMU_KEY}", base_url: "http://127.0.0.1:%(emu)d/v1"}
models:
  - name: smart
    targets: [{provider: claude, model: claude-sonnet-4-5}]
    fallbacks: {any: [gpt-4o]}
  - name: gpt-4o
    targets: [{provider: openai, model: gpt-4o}]
  - name: slow
    targets: [{provider: openai, model: gpt-4o-mini}]
    timeouts: {first_token_ms: 1500}
# One gateway serves every test: scripted failures must not open circuits for the tests after
# them (circuit breakers are tested in crates/pipeline/tests/resilience.rs).
router:
  circuit: {consecutive_failures: 1000, min_requests: 1000}
"""


def _binary(env_var: str, name: str) -> Path:
    path = Path(os.environ.get(env_var) or ROOT / "target" / "debug" / name)
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.exit(
            f"{path} is missing: build first (cargo build -p gateway -p testkit --bins) "
            f"or set {env_var}",
            returncode=2,
        )
    return path


def _free_ports(n: int) -> list[int]:
    """n distinct ports the OS reports free right now (bound together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until(what: str, proc: subprocess.Popen, log: Path, check) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up:\n{_tail(log)}")
        try:
            if check():
                return
        except httpx.HTTPError as e:
            last_error = e
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {READY_TIMEOUT_S}s ({last_error}):\n{_tail(log)}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class Stack:
    """The running emulator and gateway, and helpers to drive them."""

    gateway_url: str  # data plane, without /v1
    admin_url: str
    emulator_url: str
    emu_key: str  # the key the gateway holds for every upstream
    admin_token: str
    workdir: Path
    consumer_key: str = ""  # a gateway key created through the admin API once the gateway is up
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30, trust_env=False))

    # --- the emulator -------------------------------------------------------------------------
    def fault(self, fault: dict, *, model: str | None = None, vendor: str | None = None, times: int = 1) -> None:
        """Scripts a fault for the next `times` matching upstream requests."""
        rule = {"fault": fault, "times": times}
        if model is not None:
            rule["model"] = model
        if vendor is not None:
            rule["vendor"] = vendor
        r = self._http.post(f"{self.emulator_url}/_emulator/faults", json=rule)
        assert r.status_code < 300, f"emulator refused fault {rule}: {r.status_code} {r.text}"

    def reset(self) -> None:
        r = self._http.post(f"{self.emulator_url}/_emulator/reset")
        assert r.status_code < 300, r.text

    def upstream_requests(self, vendor: str | None = None) -> list[dict]:
        """What the upstream vendors received since the last reset (oldest first)."""
        r = self._http.get(f"{self.emulator_url}/_emulator/requests")
        r.raise_for_status()
        reqs = r.json()
        return [q for q in reqs if vendor is None or q["vendor"] == vendor]

    # --- clients ------------------------------------------------------------------------------
    def openai(self, **kw) -> openai.OpenAI:
        kw.setdefault("api_key", self.consumer_key)
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30.0)
        return openai.OpenAI(base_url=f"{self.gateway_url}/v1", **kw)

    def anthropic(self, **kw) -> anthropic.Anthropic:
        kw.setdefault("api_key", self.consumer_key)
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 30.0)
        # The Anthropic SDK adds /v1/messages itself.
        return anthropic.Anthropic(base_url=self.gateway_url, **kw)

    def http(self) -> httpx.Client:
        return self._http

    def admin(self, method: str, path: str, *, token: str | None | bool = True, **kw) -> httpx.Response:
        """An admin API call; `token=True` uses the right token, None sends none."""
        headers = dict(kw.pop("headers", {}) or {})
        if token is True:
            token = self.admin_token
        if token:
            headers["authorization"] = f"Bearer {token}"
        return self._http.request(method, f"{self.admin_url}{path}", headers=headers, **kw)


@pytest.fixture(scope="session")
def stack(request):
    gateway_bin = _binary("GATEWAY_BIN", "gateway")
    emulator_bin = _binary("EMULATOR_BIN", "emulator")
    emu_port, gw_port, admin_port = _free_ports(3)
    emu_key = "emu-" + secrets.token_hex(12)
    admin_token = "gwa_e2e_" + secrets.token_hex(12)
    workdir = Path(tempfile.mkdtemp(prefix="ai-gateway-e2e-"))
    (workdir / "data").mkdir()
    config = workdir / "gateway.yaml"
    config.write_text(CONFIG_YAML % {"emu": emu_port})
    emu_log, gw_log = workdir / "emulator.log", workdir / "gateway.log"

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        EMU_KEY=emu_key,
        GATEWAY_PORT=str(gw_port),
        GATEWAY_ADMIN_PORT=str(admin_port),
        GATEWAY_BIND=HOST,
        GATEWAY_DATA_DIR=str(workdir / "data"),
        GATEWAY_CONFIG=str(config),
        GATEWAY_ADMIN_TOKEN=admin_token,
        GATEWAY_LOG=os.environ.get("E2E_GATEWAY_LOG", "info"),
        GATEWAY_SSE_KEEPALIVE_MS="300",
        GATEWAY_MODELS_AUTO_PULL="off",
        # The emulator is on loopback, which the egress guard refuses unless allow-listed.
        GATEWAY_EGRESS_ALLOW="127.0.0.0/8",
    )
    s = Stack(
        gateway_url=f"http://{HOST}:{gw_port}",
        admin_url=f"http://{HOST}:{admin_port}",
        emulator_url=f"http://{HOST}:{emu_port}",
        emu_key=emu_key,
        admin_token=admin_token,
        workdir=workdir,
    )
    emulator = gateway = None
    try:
        with open(emu_log, "wb") as out:
            emulator = subprocess.Popen(
                [str(emulator_bin), "--port", str(emu_port), "--key", emu_key],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        _wait_until(
            "emulator", emulator, emu_log,
            lambda: s._http.get(f"{s.emulator_url}/_emulator/requests").status_code == 200,
        )
        with open(gw_log, "wb") as out:
            gateway = subprocess.Popen(
                [str(gateway_bin), "start"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )
        _wait_until(
            "gateway", gateway, gw_log,
            lambda: s._http.get(f"{s.gateway_url}/readyz").status_code == 200,
        )
        # The default API requires keys: the consumer every test speaks as.
        r = s.admin("POST", "/admin/keys", json={"label": "e2e"})
        assert r.status_code == 201, r.text
        s.consumer_key = r.json()["key"]
        yield s
    finally:
        _stop(gateway)
        _stop(emulator)
        s._http.close()
        if request.session.testsfailed or os.environ.get("E2E_KEEP_LOGS"):
            _KEPT_LOGS.append(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_emulator(request):
    """No fault or recorded request leaks from one test into the next."""
    if "stack" in request.fixturenames:
        request.getfixturevalue("stack").reset()
    yield


@pytest.fixture
def oai(stack) -> openai.OpenAI:
    return stack.openai()


@pytest.fixture
def claude(stack) -> anthropic.Anthropic:
    return stack.anthropic()


def pytest_terminal_summary(terminalreporter):
    for path in _KEPT_LOGS:
        terminalreporter.write_line(f"e2e: gateway and emulator logs kept in {path}")

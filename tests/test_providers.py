"""The real openai and anthropic clients against a loopback server that speaks their wire formats."""
import json
import threading

import pytest

from scripts import context, costs, generate, prompt
from scripts.settings import api_settings

from conftest import LITE_TEST, assert_valid, read_rows, run_config
from fake_api import FakeModelServer

pytestmark = pytest.mark.unit

ROWS = read_rows(LITE_TEST)[:4]
MODELS = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-6"}
KEY = "sk-test-0123456789-SECRET"


@pytest.fixture
def server():
    with FakeModelServer(ROWS) as fake:
        yield fake


def settings_for(provider, server, tmp_path, **changes):
    base_url = f"{server.url}/v1" if provider == "openai" else server.url
    config = run_config(**{"base_url": base_url, "max_attempts": 4, "retry_backoff": 0.01, "request_timeout": 2.0,
                           "temperature": 0.0, "max_output_tokens": 2048, "provider_prices": True, **changes})
    settings = api_settings(provider, config, tmp_path)
    settings["api_key"] = KEY
    return settings


def ask(provider, server, tmp_path, row=ROWS[0], files=(), **changes):
    ctx = context.build_context(row, "none")
    ctx["files"] = [{"path": path, "content": f"# {path}\n", "tokens": 3} for path in files]
    template = prompt.load_template(prompt.DEFAULT_TEMPLATE)
    messages = prompt.build_prompt(ctx, template)
    logged = []
    record = generate.generate(messages, row, provider, MODELS[provider], settings_for(provider, server, tmp_path, **changes),
                               ctx, template, log=logged.append)
    assert_valid(record, "response")
    return record, logged


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_answer_usage_and_cost(provider, server, tmp_path):
    record, _ = ask(provider, server, tmp_path)
    assert record["status"] == "ok" and record["stop_reason"] == "end"
    assert record["answer"] == f"<patch>\n{ROWS[0]['patch']}</patch>\n"
    usage = record["usage"]
    # OpenAI caches prefixes by itself; Anthropic only what the request marks
    assert usage["cached_input_tokens"] == (100 if provider == "openai" else 0)
    assert usage["output_tokens"] == len(record["answer"]) // 4
    price = costs.price_for(provider, MODELS[provider], {})
    assert record["cost_usd"] == costs.cost_usd(usage, price) > 0 and record["price_per_million"] == price
    assert price["source"].startswith(f"genai-prices 0.2.3: {provider}/")
    assert costs.spent(tmp_path / "spend.jsonl") == pytest.approx(record["cost_usd"])
    # what the provider bills: the server's own token counts at the database's list price
    assert record["cost_usd"] == pytest.approx(server.billed_usd(provider, server.requests[-1]), rel=0.01)


def test_anthropic_request_shape(server, tmp_path):
    ask("anthropic", server, tmp_path)
    request = server.requests[-1]
    assert request["path"] == "/v1/messages"
    body = request["body"]
    assert body["max_tokens"] == 2048
    assert body["system"].startswith("You are an experienced software engineer")
    assert [m["role"] for m in body["messages"]] == ["user"]
    assert KEY in (request["headers"].get("x-api-key"), request["headers"].get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in request["headers"]


def test_openai_request_shape(server, tmp_path):
    ask("openai", server, tmp_path)
    request = server.requests[-1]
    assert request["path"] == "/v1/chat/completions"
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]
    assert request["body"]["max_tokens"] == 2048  # a compatible server behind base_url gets max_tokens
    assert request["headers"]["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_retries_then_success_records_every_attempt(provider, server, tmp_path):
    server.faults[ROWS[0]["instance_id"]] = ["429", "500" if provider == "openai" else "529", "malformed"]
    record, logged = ask(provider, server, tmp_path)
    assert record["status"] == "ok"
    errors = [a["error"] for a in record["attempts"]]
    assert errors[-1] is None and all(errors[:3])
    assert "429" in errors[0] and "malformed" in errors[2]
    assert [a["status"] for a in record["attempts"]] == [429, 500 if provider == "openai" else 529, None, 200]
    assert len(logged) == 3
    # each attempt reserved and settled: a 429 was not billed; a 5xx or a body that does not parse may have
    # been, so it counts at its worst case; the answer at its usage. The record's cost is all of them.
    lines = costs.read_ledger(tmp_path / "spend.jsonl")
    assert [e["state"] for e in lines] == ["released", "worst_case", "worst_case", "settled"]
    assert lines[1]["cost_usd"] == lines[1]["reserved_usd"] > lines[3]["cost_usd"] > 0
    price = costs.price_for(provider, MODELS[provider], {})
    assert lines[3]["cost_usd"] == costs.cost_usd(record["usage"], price) < lines[3]["reserved_usd"]
    assert record["cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in lines)) == costs.spent(tmp_path / "spend.jsonl")


def test_a_request_that_never_connects_is_released(server, tmp_path):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(generate.GenerationFailed, match="APIConnectionError"):
        ask("openai", server, tmp_path, base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2)
    assert [(e["state"], e["cost_usd"]) for e in costs.read_ledger(tmp_path / "spend.jsonl")] == [("released", 0.0)] * 2


def test_retry_after_is_honoured(server, tmp_path, monkeypatch):
    server.retry_after = "0.4"
    server.faults[ROWS[0]["instance_id"]] = ["429"]
    waits = []  # each wait of the job, with the requests the server had then
    real_sleep = generate.time.sleep
    monkeypatch.setattr(generate.time, "sleep", lambda seconds: waits.append((seconds, len(server.requests)))
                        or real_sleep(seconds))
    record, _ = ask("openai", server, tmp_path, retry_backoff=30.0)  # the server's word wins over the backoff
    assert record["attempts"][0]["wait_s"] == 0.4
    assert (0.4, 1) in waits and len(server.requests_for(ROWS[0]["instance_id"])) == 2


def test_timeout_is_retried(server, tmp_path):
    server.slow_seconds = 1.5
    server.faults[ROWS[0]["instance_id"]] = ["slow"]
    record, _ = ask("openai", server, tmp_path, request_timeout=0.5)
    assert "APITimeoutError" in record["attempts"][0]["error"]
    assert record["status"] == "ok" and len(record["attempts"]) == 2
    timed_out, answered = costs.read_ledger(tmp_path / "spend.jsonl")
    assert timed_out["state"] == "worst_case" and timed_out["note"] == "no usage known: Transient"


def test_an_interrupted_job_leaves_no_reservation_open(server, tmp_path):
    """Ctrl-C while an answer is awaited: the request may have been billed, so it is settled at its worst case
    then and there, not left open."""
    from fake_api import interrupt_when_asked

    server.slow_seconds = 5.0
    server.faults[ROWS[0]["instance_id"]] = ["slow"]
    interrupt_when_asked(server)
    with pytest.raises(KeyboardInterrupt):
        ask("openai", server, tmp_path, request_timeout=30.0)
    [entry] = costs.read_ledger(tmp_path / "spend.jsonl")
    assert (entry["state"], entry["cost_usd"], entry.get("note")) == (
        "worst_case", entry["reserved_usd"], "no usage known: KeyboardInterrupt")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_exhausted_retries_fail_the_job(provider, server, tmp_path):
    server.faults[ROWS[0]["instance_id"]] = ["500"] * 3
    with pytest.raises(generate.GenerationFailed, match="no answer after 3 attempt"):
        ask(provider, server, tmp_path, max_attempts=3)


def test_context_too_long_drops_code_then_fits(server, tmp_path):
    server.faults[ROWS[0]["instance_id"]] = ["context"]
    record, _ = ask("anthropic", server, tmp_path, files=["pkg/a.py", "pkg/b.py"])
    assert record["status"] == "ok"
    assert record["dropped_context_files"] == ["pkg/b.py"]
    first, second = server.requests_for(ROWS[0]["instance_id"])
    assert "[start of pkg/b.py]" in json.dumps(first["body"]) and "[start of pkg/b.py]" not in json.dumps(second["body"])
    assert "[start of pkg/a.py]" in json.dumps(second["body"])


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_context_too_long_without_code_is_a_permanent_failure(provider, server, tmp_path):
    server.faults[ROWS[0]["instance_id"]] = ["context"]
    record, _ = ask(provider, server, tmp_path)
    assert record["status"] == "failed" and record["failure_reason"] == "context_too_long"
    assert record["answer"] is None and record["cost_usd"] == 0.0


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("fault, status, reason, stop", [
    ("refusal", "failed", "refused", "refusal"),
    ("truncated", "ok", None, "max_tokens"),
    ("empty", "ok", None, "end"),
])
def test_outcomes_are_recorded_not_hidden(provider, fault, status, reason, stop, server, tmp_path):
    server.faults[ROWS[0]["instance_id"]] = [fault]
    record, _ = ask(provider, server, tmp_path)
    assert (record["status"], record["failure_reason"], record["stop_reason"]) == (status, reason, stop)
    if fault == "empty":
        assert record["answer"] == ""


def test_refused_parameters_are_dropped_and_remembered(server, tmp_path):
    server.refused_params = {"temperature", "max_tokens"}
    record, _ = ask("openai", server, tmp_path, row=ROWS[1])
    assert record["status"] == "ok"
    # the answer says it was made without the temperature asked for (max_tokens was only renamed)
    assert record["dropped_parameters"] == ["temperature"]
    sent = [r["body"] for r in server.requests_for(ROWS[1]["instance_id"])]
    assert "max_completion_tokens" in sent[-1] and "max_tokens" not in sent[-1] and "temperature" not in sent[-1]
    before = len(server.requests)
    ask("openai", server, tmp_path, row=ROWS[2])
    assert len(server.requests) == before + 1  # the second instance asks right the first time


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_rejected_request_names_no_key(provider, server, tmp_path):
    server.faults[ROWS[0]["instance_id"]] = ["auth"]
    with pytest.raises(generate.GenerationFailed) as error:
        ask(provider, server, tmp_path)
    assert "AuthenticationError 401" in str(error.value)
    assert KEY not in str(error.value) and "[redacted]" in str(error.value)
    assert len(server.requests) == 1  # no retry: it cannot help


def test_budget_stops_a_request_whose_worst_case_does_not_fit(server, tmp_path):
    ledger = tmp_path / "spend.jsonl"
    costs.record_spend(ledger, "earlier", 0.5)
    # gpt-4o: 2.5 USD per million in, 10 out; 2048 output tokens are 0.02048 USD at the most
    with pytest.raises(costs.BudgetSpent, match="max_cost=0.52"):
        ask("openai", server, tmp_path, max_cost=0.52)
    assert server.requests == []
    refused = costs.read_ledger(ledger)[-1]
    assert refused["state"] == "refused" and 0.02048 < refused["reserved_usd"] < 0.05
    record, _ = ask("openai", server, tmp_path, max_cost=0.6)
    assert record["status"] == "ok"
    assert costs.spent(ledger) == pytest.approx(0.5 + record["cost_usd"])


def test_unknown_model_has_an_unknown_cost_with_a_warning(server, tmp_path):
    ctx = context.build_context(ROWS[0], "none")
    messages = prompt.build_prompt(ctx, prompt.load_template(prompt.DEFAULT_TEMPLATE))
    logged = []
    record = generate.generate(messages, ROWS[0], "openai", "my-local-model", settings_for("openai", server, tmp_path),
                               ctx, None, log=logged.append)
    assert record["cost_usd"] is None and record["price_per_million"] is None
    assert any("no price is known for model my-local-model" in line for line in logged)


def test_unknown_model_with_max_cost_sends_nothing(server, tmp_path):
    ctx = context.build_context(ROWS[0], "none")
    messages = prompt.build_prompt(ctx, prompt.load_template(prompt.DEFAULT_TEMPLATE))
    with pytest.raises(generate.GenerationFailed, match=r"my-local-model.*prices=\{my-local-model: \{input: X"):
        generate.generate(messages, ROWS[0], "openai", "my-local-model",
                          settings_for("openai", server, tmp_path, max_cost=5.0), ctx, None, log=lambda line: None)
    assert server.requests == []


def test_parallel_threads_share_clients_and_ledger(server, tmp_path):
    records = []

    def one(row):
        records.append(ask("openai", server, tmp_path, row=row)[0])

    threads = [threading.Thread(target=one, args=(row,)) for row in ROWS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(records) == 4
    assert costs.spent(tmp_path / "spend.jsonl") == pytest.approx(sum(r["cost_usd"] for r in records))


def test_context_retry_starts_from_the_files_the_prompt_holds(server, tmp_path):
    ctx = context.build_context(ROWS[0], "none")
    ctx["files"] = [{"path": p, "content": f"# {p}\n", "tokens": 3} for p in ("pkg/a.py", "pkg/b.py", "pkg/c.py")]
    template = prompt.load_template(prompt.DEFAULT_TEMPLATE)
    shown = prompt.build_prompt(dict(ctx, files=ctx["files"][:2]), template)
    shown["dropped_files"] = ["pkg/c.py"]  # as the prompt stage records a file it had no room for
    server.faults[ROWS[0]["instance_id"]] = ["context"]
    record = generate.generate(shown, ROWS[0], "openai", "gpt-4o", settings_for("openai", server, tmp_path),
                               ctx, template, log=lambda line: None)
    assert record["dropped_context_files"] == ["pkg/b.py"]
    last = json.dumps(server.requests[-1]["body"])
    assert "[start of pkg/a.py]" in last and "pkg/b.py" not in last and "pkg/c.py" not in last


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_no_credit_stops_generation_at_once(provider, server, tmp_path):
    server.no_credit = True
    with pytest.raises(generate.GenerationFailed, match="no credit left") as error:
        ask(provider, server, tmp_path)
    assert len(server.requests) == 1  # not retried: it would never pass
    assert ("exceeded your current quota" if provider == "openai" else "credit balance is too low") in str(error.value)
    assert KEY not in str(error.value)
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["released"]
    # every other instance of the run stops before its request
    server.no_credit = False
    with pytest.raises(generate.GenerationFailed, match="generation stopped, no request sent"):
        ask(provider, server, tmp_path, row=ROWS[1])
    assert len(server.requests) == 1
    advice = costs.quota_advice(tmp_path)
    assert f"{provider} says the account has no credit left" in advice and "Add credit" in advice


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_output_limit_is_capped_at_the_model_limit(provider, server, tmp_path):
    from scripts import providers

    listed = {"openai": "gpt-4o", "anthropic": "claude-3-5-haiku-20241022"}[provider]
    assert providers.output_limit(provider, listed, {"max_output_tokens": 100_000}) < 100_000
    # a model not listed: the 400 that names its limit is answered by one retry with it, and remembered
    server.output_limits[MODELS[provider]] = 1500
    record, _ = ask(provider, server, tmp_path, max_output_tokens=3000)
    assert record["status"] == "ok" and len(record["attempts"]) == 1
    asked = [r["body"].get("max_tokens") or r["body"].get("max_completion_tokens") for r in server.requests]
    assert asked == [3000, 1500]
    ask(provider, server, tmp_path, row=ROWS[1], max_output_tokens=3000)
    assert [r["body"].get("max_tokens") or r["body"].get("max_completion_tokens") for r in server.requests][2:] == [1500]
    # a lower limit later: one retry again, with the new one
    server.output_limits[MODELS[provider]] = 1000
    ask(provider, server, tmp_path, row=ROWS[2], max_output_tokens=3000)
    assert [r["body"].get("max_tokens") or r["body"].get("max_completion_tokens") for r in server.requests][3:] == [
        1500, 1000]


def test_anthropic_prompt_cache_is_written_once_and_read_by_the_repair_requests(server, tmp_path):
    row = ROWS[0]
    ctx = context.build_context(row, "none")
    ctx["files"] = [{"path": "pkg/big.py", "content": "x = 1\n" * 2000, "tokens": 4000}]
    template = prompt.load_template(prompt.DEFAULT_TEMPLATE)
    first = prompt.build_prompt(ctx, template)
    settings = dict(settings_for("anthropic", server, tmp_path), prompt_cache=True)
    answer = generate.generate(first, row, "anthropic", MODELS["anthropic"], settings, ctx, template, log=print)
    # a self-repair request: the same prompt, the answer, and a request to mend it
    repair = dict(first, messages=[*first["messages"], {"role": "assistant", "content": answer["answer"]},
                                   {"role": "user", "content": "That patch does not apply; send it again."}])
    again = generate.generate(repair, row, "anthropic", MODELS["anthropic"], settings, ctx, template, log=print)
    assert server.requests[0]["body"]["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    written, read = answer["usage"]["cache_write_tokens"], again["usage"]["cached_input_tokens"]
    assert written == read > 1024 and answer["usage"]["cached_input_tokens"] == again["usage"]["cache_write_tokens"] == 0
    price = costs.price_for("anthropic", MODELS["anthropic"], {})
    for record, request in zip((answer, again), server.requests, strict=True):
        assert record["cost_usd"] == pytest.approx(server.billed_usd("anthropic", request), rel=0.01)
    # the write costs a quarter more than plain input, the read a tenth of it
    assert again["cost_usd"] < costs.cost_usd(dict(again["usage"], cached_input_tokens=0), price)
    from scripts.summary import cache_saving

    assert cache_saving(answer) + cache_saving(again) == pytest.approx(written * (price["input"] - price["cached_input"])
                                                                      / 1e6 - written * (price["cache_write"] - price["input"]) / 1e6)


def test_reasoning_tokens_are_recorded_and_billed_as_output(server, tmp_path):
    server.reasoning_tokens = 700
    record, _ = ask("openai", server, tmp_path)
    usage = record["usage"]
    assert usage["reasoning_tokens"] == 700 and usage["output_tokens"] == len(record["answer"]) // 4 + 700
    assert record["cost_usd"] == pytest.approx(server.billed_usd("openai", server.requests[-1]), rel=0.01)


@pytest.mark.parametrize("model", ["o3-pro", "gpt-5.4-pro"])
def test_responses_only_models_go_to_the_responses_api_at_their_price(model, server, tmp_path):
    server.reasoning_tokens = 900
    server.refused_params = {"temperature"}  # reasoning models take none
    MODELS["openai"], default = model, MODELS["openai"]
    try:
        record, _ = ask("openai", server, tmp_path, reasoning_effort="high", max_output_tokens=4000)
    finally:
        MODELS["openai"] = default
    assert record["status"] == "ok" and record["stop_reason"] == "end"
    assert record["answer"] == f"<patch>\n{ROWS[0]['patch']}</patch>\n"
    paths = [r["path"] for r in server.requests]
    assert set(paths) == {"/v1/responses"}
    body = server.requests[-1]["body"]
    assert body["reasoning"] == {"effort": "high"} and body["max_output_tokens"] == 4000 and body["store"] is False
    assert "temperature" not in body and body["instructions"] and body["input"][0]["role"] == "user"
    usage = record["usage"]
    assert usage["reasoning_tokens"] == 900 and usage["cached_input_tokens"] == 100
    assert record["cost_usd"] == pytest.approx(server.billed_usd("openai", server.requests[-1]), rel=0.01)
    assert record["price_per_million"]["source"].endswith(f"openai/{model}, list price")


def test_openai_api_setting_forces_one_api(server, tmp_path):
    record, _ = ask("openai", server, tmp_path, openai_api="responses")
    assert record["status"] == "ok" and server.requests[-1]["path"] == "/v1/responses"
    server.faults[ROWS[1]["instance_id"]] = ["truncated"]
    record, _ = ask("openai", server, tmp_path, row=ROWS[1], openai_api="responses")
    assert record["stop_reason"] == "max_tokens" and record["raw_stop_reason"] == "max_output_tokens"
    # a Responses-only model forced onto Chat Completions: the server says so, and it is not retried
    MODELS["openai"], default = "o3-pro", MODELS["openai"]
    try:
        with pytest.raises(generate.GenerationFailed, match="only supported in v1/responses"):
            ask("openai", server, tmp_path, row=ROWS[2], openai_api="chat")
    finally:
        MODELS["openai"] = default
    assert server.requests[-1]["path"] == "/v1/chat/completions" and len(server.requests) == 3


def test_reasoning_effort_refused_on_the_responses_api_is_dropped_and_remembered(server, tmp_path):
    # a model without reasoning on the Responses API: the 400 names the field, param "reasoning.effort"
    server.refused_params = {"reasoning.effort"}
    record, _ = ask("openai", server, tmp_path, openai_api="responses", reasoning_effort="high")
    assert record["status"] == "ok" and record["answer"] == f"<patch>\n{ROWS[0]['patch']}</patch>\n"
    refused, answered = [r["body"] for r in server.requests]
    assert refused["reasoning"] == {"effort": "high"} and "reasoning" not in answered
    assert record["dropped_parameters"] == ["reasoning_effort"] and len(record["attempts"]) == 1
    ask("openai", server, tmp_path, row=ROWS[1], openai_api="responses", reasoning_effort="high")
    assert len(server.requests) == 3  # the next instance asks without it at once


def test_a_model_that_may_not_stream_is_asked_without(server, tmp_path):
    server.refused_params = {"stream"}  # an organization that is not verified for streaming this model
    record, _ = ask("openai", server, tmp_path)
    assert record["status"] == "ok" and record["answer"] == f"<patch>\n{ROWS[0]['patch']}</patch>\n"
    refused, answered = [r["body"] for r in server.requests]
    assert refused["stream"] is True and "stream" not in answered and "stream_options" not in answered
    assert record["dropped_parameters"] == []  # not an answer setting: the answer is the same
    assert record["cost_usd"] == pytest.approx(server.billed_usd("openai", server.requests[-1]), rel=0.01)


@pytest.mark.parametrize("openai_api", ["chat", "responses"])
def test_a_long_answer_that_keeps_coming_is_received_once(openai_api, server, tmp_path):
    # the answer takes 2 s in all, a piece every 0.4 s: longer than request_timeout, but never silent that long
    server.stream_parts, server.part_seconds = 5, 0.4
    record, _ = ask("openai", server, tmp_path, openai_api=openai_api, request_timeout=1.0)
    assert record["status"] == "ok" and record["answer"] == f"<patch>\n{ROWS[0]['patch']}</patch>\n"
    assert len(server.requests) == 1 and [a["status"] for a in record["attempts"]] == [200]
    body = server.requests[0]["body"]
    assert body["stream"] is True
    assert body.get("stream_options") == ({"include_usage": True} if openai_api == "chat" else None)
    usage = record["usage"]
    assert usage["output_tokens"] == len(record["answer"]) // 4 and usage["cached_input_tokens"] == 100
    assert record["cost_usd"] == pytest.approx(server.billed_usd("openai", server.requests[0]), rel=0.01)
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["settled"]


def test_a_usage_chunk_with_null_choices_is_read(server, tmp_path):
    server.usage_chunk_choices = None  # as some compatible servers end a stream
    record, _ = ask("openai", server, tmp_path)
    assert record["status"] == "ok" and record["answer"] == f"<patch>\n{ROWS[0]['patch']}</patch>\n"
    assert record["usage"]["output_tokens"] == len(record["answer"]) // 4 and len(server.requests) == 1


@pytest.mark.parametrize("openai_api", ["chat", "responses"])
def test_a_stream_that_breaks_off_is_retried_at_its_worst_case(openai_api, server, tmp_path):
    server.faults[ROWS[0]["instance_id"]] = ["cut"]
    record, _ = ask("openai", server, tmp_path, openai_api=openai_api)
    assert record["status"] == "ok" and record["answer"] == f"<patch>\n{ROWS[0]['patch']}</patch>\n"
    assert "the answer broke off" in record["attempts"][0]["error"] and len(record["attempts"]) == 2
    # half an answer may have been billed, and its usage never came
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["worst_case", "settled"]


@pytest.mark.parametrize("retry_after", ["3600", "later"])
def test_a_retry_after_above_two_minutes_fails_the_job_at_once(retry_after, server, tmp_path, monkeypatch):
    from datetime import datetime, timedelta, timezone
    from email.utils import format_datetime

    server.retry_after = (retry_after if retry_after != "later" else
                          format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True))
    server.faults[ROWS[0]["instance_id"]] = ["429"]
    real_sleep = generate.time.sleep

    def sleep(seconds):  # a job that waited as asked would hold its api slot for an hour
        assert seconds <= 120, f"waits {seconds} s"
        real_sleep(seconds)

    monkeypatch.setattr(generate.time, "sleep", sleep)
    with pytest.raises(generate.GenerationFailed, match=r"asks to wait (3600|359\d) s before the next request, "
                                                        r"more than the 120 s a job waits"):
        ask("openai", server, tmp_path)
    assert len(server.requests) == 1
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["released"]


@pytest.mark.parametrize("fault, retried, state", [
    ("500 x-should-retry: false", False, "worst_case"),  # a 5xx may have been billed
    ("429 x-should-retry: false", False, "released"),
    ("400 x-should-retry: true", True, "released"),
])
def test_the_servers_x_should_retry_decides(fault, retried, state, server, tmp_path):
    server.faults[ROWS[0]["instance_id"]] = [fault]
    if retried:
        record, _ = ask("openai", server, tmp_path)
        assert [a["status"] for a in record["attempts"]] == [int(fault[:3]), 200]
    else:
        with pytest.raises(generate.GenerationFailed, match="the server says not to retry it"):
            ask("openai", server, tmp_path)
        assert len(server.requests) == 1
    assert costs.read_ledger(tmp_path / "spend.jsonl")[0]["state"] == state


def test_a_value_error_that_is_no_malformed_body_is_not_retried(server, tmp_path):
    # a key that HTTP headers cannot carry: the client raises UnicodeEncodeError (a ValueError) before sending
    settings = settings_for("openai", server, tmp_path)
    settings["api_key"] = "sk-test-\u00e9"
    row = ROWS[0]
    messages = prompt.build_prompt(context.build_context(row, "none"), prompt.load_template(prompt.DEFAULT_TEMPLATE))
    with pytest.raises(UnicodeEncodeError):
        generate.generate(messages, row, "openai", MODELS["openai"], settings, log=lambda line: None)
    assert server.requests == [] and len(costs.read_ledger(tmp_path / "spend.jsonl")) == 1


@pytest.mark.parametrize("provider, openai_api", [("openai", "chat"), ("openai", "responses"), ("anthropic", "auto")])
def test_an_answer_all_spent_on_reasoning_is_recorded_as_cut_off(provider, openai_api, server, tmp_path):
    server.reasoning_tokens = 5000  # more than the output limit of 2048
    record, _ = ask(provider, server, tmp_path, openai_api=openai_api)
    assert (record["status"], record["failure_reason"], record["stop_reason"]) == ("failed", "cut_off", "max_tokens")
    assert record["answer"] == "" and record["max_output_tokens"] == 2048
    assert record["usage"]["output_tokens"] == record["usage"]["reasoning_tokens"] == 2048
    assert "output limit of 2048 tokens" in record["failure_detail"] and "2048 of them reasoning" in record["failure_detail"]
    # it was paid for
    assert record["cost_usd"] > 0 and record["cost_usd"] == pytest.approx(server.billed_usd(provider, server.requests[-1]), rel=0.01)
    # an answer the limit cut off after some text is an answer: the patch stage judges it
    server.reasoning_tokens, server.faults[ROWS[1]["instance_id"]] = 0, ["truncated"]
    record, _ = ask(provider, server, tmp_path, row=ROWS[1], openai_api=openai_api)
    assert (record["status"], record["stop_reason"]) == ("ok", "max_tokens") and record["answer"]


def test_the_output_limit_table_covers_the_default_models():
    from scripts.providers import DEFAULT_MODELS, OUTPUT_LIMITS

    for provider, model in DEFAULT_MODELS.items():
        assert OUTPUT_LIMITS[provider][model] >= 64000, model

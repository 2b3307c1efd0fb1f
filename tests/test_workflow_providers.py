"""The workflow with the real model clients against a loopback server, on real SWE-bench rows."""
import json

import pytest

from scripts import costs

from conftest import LITE_TEST, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

pytestmark = pytest.mark.workflow

KEY = "sk-test-workflow-7f3a9c-SECRET"


@pytest.fixture
def rows():
    return read_rows(LITE_TEST)[10:16]


def provider_config(provider, server, dataset, *extra):
    base_url = f"{server.url}/v1" if provider == "openai" else server.url
    return ["--config", f"dataset={dataset}", f"provider={provider}", f"base_url={base_url}",
            "retry_backoff=0.01", "request_timeout=5", "context=none", *extra]


def env_for(provider):
    return {"OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY": KEY}


def summary_cost(run, instance_id):
    return json.loads((run / "instances" / instance_id / "response.json").read_text())["cost_usd"]


def files_under(*folders):
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                yield path


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_provider_end_to_end_keeps_no_secret(provider, rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        server.faults[rows[0]["instance_id"]] = ["429", "500"]
        result = snakemake(tmp_path, *provider_config(provider, server, dataset, "run_id=api"), env=env_for(provider))
    run = tmp_path / "results" / "api"
    predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
    assert predictions == {r["instance_id"]: r["patch"] for r in rows}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cost"]["total_usd"] > 0 and summary["counts"]["patch"]["valid"] == len(rows)
    latencies = [json.loads((run / "instances" / r["instance_id"] / "response.json").read_text())["latency_s"] for r in rows]
    assert summary["latency_s"]["max"] == max(latencies) > 0
    # each answer costs what the provider bills at the database's list price of the default model (the
    # first instance's 500 counts at its worst case on top)
    for row in rows:
        cost = summary_cost(run, row["instance_id"])
        billed = sum(server.billed_usd(provider, r) for r in server.requests_for(row["instance_id"]) if r["billed"])
        assert cost == pytest.approx(billed, rel=0.01) if row != rows[0] else cost > billed > 0
    response = json.loads((run / "instances" / rows[0]["instance_id"] / "response.json").read_text())
    assert len(response["attempts"]) == 3
    assert "Authorization" not in json.dumps(response)
    for path in files_under(run, tmp_path / ".snakemake"):
        assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in result.stdout + result.stderr


def test_exhausted_retries_fail_only_that_instance_and_a_rerun_finishes_it(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    flaky, refused = rows[1]["instance_id"], rows[2]["instance_id"]
    with FakeModelServer(rows) as server:
        server.faults[flaky] = ["500", "500", "500"]
        server.faults[refused] = ["auth"]
        config = provider_config("openai", server, dataset, "max_attempts=3", "run_id=flaky")
        first = snakemake(tmp_path, *config, env=env_for("openai"), check=False)
        assert first.returncode != 0
        assert jobs_run(first).count("generate") == len(rows) - 2
        output = first.stdout + first.stderr
        assert f"{flaky}: no answer after 3 attempt(s)" in output
        assert f"{refused}: openai rejected the request: AuthenticationError 401" in output
        assert KEY not in output
        run = tmp_path / "results" / "flaky"
        assert not (run / "instances" / flaky / "response.json").exists()
        assert not (run / "predictions.jsonl").exists()

        second = snakemake(tmp_path, *config, env=env_for("openai"))
    ran = jobs_run(second)
    assert ran.count("generate") == 2 and ran.count("context") == 0
    assert len(read_rows(run / "predictions.jsonl")) == len(rows)


def test_an_unpriced_model_with_max_cost_sends_no_request(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        result = snakemake(tmp_path, *provider_config("openai", server, dataset, "model=my-finetune", "max_cost=1"),
                           env=env_for("openai"), check=False)
    assert result.returncode != 0 and server.requests == []
    assert "no price is known for model my-finetune" in result.stderr
    assert "prices={my-finetune: {input: X, output: Y}}" in result.stderr


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_account_without_credit_stops_generation_at_once(provider, rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        server.no_credit = True
        config = provider_config(provider, server, dataset, "run_id=broke")
        first = snakemake(tmp_path, "--resources", "api=1", *config, env=env_for(provider), check=False)
        assert first.returncode != 0 and len(server.requests) == 1  # no retry, and no other instance asked
        assert f"{provider} says the account has no credit left" in first.stderr
        assert f"{len(rows)} instance(s) have no answer yet" in first.stderr
        server.no_credit = False  # credit added: the same command goes on
        snakemake(tmp_path, "--resources", "api=1", *config, env=env_for(provider))
    assert len(read_rows(tmp_path / "results" / "broke" / "predictions.jsonl")) == len(rows)


def test_a_responses_only_reasoning_model_costs_its_list_price(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        server.reasoning_tokens = 2000
        snakemake(tmp_path, *provider_config("openai", server, dataset, "model=o3-pro", "reasoning_effort=low",
                                             "run_id=pro", "max_cost=5"), env=env_for("openai"))
    assert {r["path"] for r in server.requests} == {"/v1/responses"} and len(server.requests) == len(rows)
    assert {json.dumps(r["body"]["reasoning"]) for r in server.requests} == {'{"effort": "low"}'}
    summary = json.loads((tmp_path / "results" / "pro" / "summary.json").read_text())
    billed = sum(server.billed_usd("openai", r) for r in server.requests)
    # o3-pro at its own price (20/80 USD per million), not o3's (2/8)
    assert summary["cost"]["total_usd"] == pytest.approx(billed, rel=0.01)
    assert summary["cost"]["reasoning_tokens"] == 2000 * len(rows)


def test_a_reasoning_effort_the_model_refuses_is_dropped_and_reported(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        server.refused_params = {"reasoning.effort"}  # a model without reasoning, on the Responses API
        snakemake(tmp_path, "--resources", "api=1", *provider_config(
            "openai", server, dataset, "openai_api=responses", "reasoning_effort=low", "run_id=effort"),
            env=env_for("openai"))
    run = tmp_path / "results" / "effort"
    assert len(read_rows(run / "predictions.jsonl")) == len(rows)
    # refused once, then the run asks without it
    assert [("reasoning" in r["body"]) for r in server.requests] == [True] + [False] * len(rows)
    for row in rows:
        response = json.loads((run / "instances" / row["instance_id"] / "response.json").read_text())
        assert response["status"] == "ok" and response["dropped_parameters"] == ["reasoning_effort"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"]["generation"]["dropped_parameters"] == {"reasoning_effort": len(rows)}
    assert f"| generate | answered without reasoning_effort (the model refused it) | {len(rows)} |" in (
        run / "summary.md").read_text()


def test_a_300_instance_batch_run_survives_a_kill_and_costs_half(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import PROJECT

    rows = read_rows(LITE_TEST)[:300]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    run = tmp_path / "results" / "bulk"
    with FakeModelServer(rows) as server:
        server.batch_hold.set()  # the batch stays pending until the first run is killed
        config = provider_config("openai", server, dataset, "run_id=bulk", "batch=true", "batch_poll=0.2",
                                 "max_cost=20", "cost_warn=100")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWEBENCH_")}
        env.update(SWEBENCH_EVALUATION="none", SWEBENCH_APPLY_CHECK="false", SWEBENCH_PROVIDER_PRICES="true",
                   **env_for("openai"))
        first = subprocess.Popen([sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"),
                                  "--directory", str(tmp_path), "--cores", "2", *config], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 300
        state = run / "batch" / "state.json"
        while time.monotonic() < deadline and first.poll() is None and not (
                server.batches and state.exists() and json.loads(state.read_text())["batches"]):
            time.sleep(0.2)  # until the first run polls its pending batch, recorded in the run folder
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert len(server.batches) == 1 and not (run / "batch" / "done.json").exists()
        assert not any((run / "instances").glob("*/response.json"))
        server.batch_hold.clear()
        snakemake(tmp_path, "--unlock", *config, env=env_for("openai"))  # what a killed Snakemake leaves
        second = snakemake(tmp_path, "--rerun-incomplete", *config, env=env_for("openai"))
    assert len(server.batches) == 1  # polled, not sent again
    answered = [r for r in server.requests if r["billed"]]
    assert len(answered) == 300 and all(r["batch"] for r in answered)
    assert len(read_rows(run / "predictions.jsonl")) == 300
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"]["generation"]["ok"] == 300
    list_price = sum(server.billed_usd("openai", r) for r in answered)
    batch_price = sum(server.billed_usd("openai", r, batch=True) for r in answered)
    assert summary["cost"]["total_usd"] == pytest.approx(batch_price, rel=0.01)
    assert summary["cost"]["total_usd"] == pytest.approx(list_price / 2, rel=0.01)
    print(f"300-instance batch run: {summary['cost']['total_usd']:.4f} USD; the same tokens at list price "
          f"{list_price:.4f} USD; {len(server.batches)} batch; second run: {second.returncode}")


def server_billed_usd(server, price):
    """What the server charged, from its own token counts of the requests it answered."""
    return sum(costs.cost_usd(r["billed"], price) for r in server.requests if r["billed"])


def test_budget_is_a_hard_cap_with_many_requests_in_flight(tmp_path):
    rows = read_rows(LITE_TEST)[:40]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    # Answers of about 1,000 tokens of explanation before the patch, against an output limit of 1,200, and
    # output that costs most: each answer costs nearly its reservation, so 16 reservations fit at first
    # and the budget still ends the run part way.
    price = {"input": 1.0, "output": 100.0}
    prices = tmp_path / "prices.yaml"
    prices.write_text(f"prices:\n  costly-model: {json.dumps(price)}\n")
    run = tmp_path / "results" / "budget"
    with FakeModelServer(rows, latency=0.5) as server:
        for row in rows:
            server.answers[row["instance_id"]] = ["The fix, explained. " + "word " * 800 + f"\n<patch>\n{row['patch']}</patch>\n"]
        config = provider_config("openai", server, dataset, "model=costly-model", "run_id=budget", "confirm_cost=true",
                                 "max_output_tokens=1200")
        # --cores 12: the threads that run jobs (cores + 5) leave room for the 16 requests
        first = snakemake(tmp_path, "--cores", "12", "--resources", "api=16", "--configfile", str(prices), *config,
                          "max_cost=2.5", env=env_for("openai"), check=False)
        billed, answered = server_billed_usd(server, price), len(server.requests)
        started = sorted(r["at"] for r in server.requests)
        in_flight = max(sum(1 for t in started if s <= t < s + 0.5) for s in started)
        output = first.stdout + first.stderr
        assert first.returncode != 0
        assert billed <= 2.5, f"the server billed {billed} USD, over max_cost=2.5"
        assert in_flight >= 14  # many requests were in flight when the budget ran out
        # the ledger counts what the server billed: each answer at its usage
        assert costs.spent(run / "spend.jsonl") == pytest.approx(billed)
        kept = {p.parent.name for p in run.glob("instances/*/response.json")}
        assert 0 < len(kept) < len(rows)
        # every instance the budget stopped is named in the final message, with how to go on
        stopped = len(rows) - len(list(run.glob("instances/*/repair.json")))
        assert f"The budget max_cost=2.5 USD stopped the run: {stopped} instance(s) were not asked" in output
        assert "To go on, run the same command with --config max_cost=" in output
        assert output.count("the budget is spent: this request may cost up to") >= len(rows) - len(kept)

        second = snakemake(tmp_path, "--cores", "12", "--resources", "api=16", "--configfile", str(prices), *config,
                           "max_cost=1000", env=env_for("openai"))
        assert jobs_run(second).count("generate") == len(rows) - len(kept)
        assert {r["instance_id"] for r in server.requests[answered:]}.isdisjoint(
            kept - {p.parent.parent.name for p in run.glob("instances/*/repair/*.prompt.json")})
        total_billed = server_billed_usd(server, price)
    assert len(read_rows(run / "predictions.jsonl")) == len(rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cost"]["total_usd"] == pytest.approx(total_billed, abs=1e-5)


@pytest.mark.parametrize("provider, variable", [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")])
def test_missing_key_stops_before_any_job_but_not_a_dry_run(provider, variable, rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    result = snakemake(tmp_path, "--config", f"dataset={dataset}", f"provider={provider}", check=False)
    assert result.returncode != 0
    assert f"set the environment variable {variable}" in result.stderr
    assert not (tmp_path / "results").exists()
    dry = snakemake(tmp_path, "-n", "--config", f"dataset={dataset}", f"provider={provider}")
    assert dry.returncode == 0


def test_requests_of_a_killed_run_keep_counting_at_their_worst_case(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import PROJECT

    rows = read_rows(LITE_TEST)[50:56]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    price = {"input": 1.0, "output": 100.0}
    prices = tmp_path / "prices.yaml"
    prices.write_text(f"prices:\n  costly-model: {json.dumps(price)}\n")
    run = tmp_path / "results" / "killed"
    with FakeModelServer(rows, latency=6.0) as server:
        config = ["--configfile", str(prices), *provider_config("openai", server, dataset, "model=costly-model",
                                                                "run_id=killed", "confirm_cost=true", "max_cost=50",
                                                                "request_timeout=30")]
        env = {**os.environ, "SWEBENCH_EVALUATION": "none", "SWEBENCH_APPLY_CHECK": "false", **env_for("openai")}
        killed = subprocess.Popen([sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"),
                                   "--directory", str(tmp_path), "--cores", "12", *config], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while len(server.requests) < len(rows) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(killed.pid, signal.SIGKILL)  # every request is in flight
        killed.wait()
        time.sleep(6.5)  # the server answers them all the same, to no one, and bills them
        billed = server_billed_usd(server, price)
        ledger = run / "spend.jsonl"
        left = costs.read_ledger(ledger)
        assert [e["state"] for e in left] == ["open"] * len(rows)
        assert costs.spent(ledger) == pytest.approx(sum(e["reserved_usd"] for e in left))
        assert costs.spent(ledger) >= billed > 0

        snakemake(tmp_path, "--unlock", *config, env=env_for("openai"))
        snakemake(tmp_path, *config, env=env_for("openai"))
        billed = server_billed_usd(server, price)
    lines = costs.read_ledger(ledger)
    kept = [e for e in lines if e.get("note") == "its job ended before the answer came"]
    assert len(kept) == len(rows) and all(e["state"] == "worst_case" for e in kept)
    assert costs.spent(ledger) >= billed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cost"]["other_usd"] == pytest.approx(sum(e["cost_usd"] for e in kept), abs=1e-5)
    assert summary["cost"]["total_usd"] == pytest.approx(costs.spent(ledger), abs=1e-5)


def test_a_model_without_a_price_is_asked_at_api_requests_at_once_while_prompts_are_built(tmp_path):
    """No cost estimate to wait for, and `--resources api=N` (not Snakemake's thread pool of cores + 5)
    bounds the requests in flight."""
    rows = read_rows(LITE_TEST)[20:34]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        server.hold_until = 12  # no answer before 12 requests are in flight together
        result = snakemake(tmp_path, "--resources", "api=12",
                           *provider_config("openai", server, dataset, "model=local-model", "repair_attempts=0",
                                            "run_id=local", "request_timeout=120"), env=env_for("openai"))
    assert server.most_in_flight == 12  # more than the 2 cores + 5 threads, at most api
    assert len(server.requests) == len(rows)
    assert "No cost estimate: no price is known for model local-model" in result.stderr
    assert not (tmp_path / "results" / "local" / "estimate.json").exists()

"""The workflow with the real model clients against a loopback server, on real SWE-bench rows."""
import json

import pytest

from conftest import LITE_TEST, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

KEY = "sk-test-workflow-7f3a9c-SECRET"


@pytest.fixture
def rows():
    return read_rows(LITE_TEST)[10:16]


def provider_config(provider, server, dataset, *extra):
    base_url = f"{server.url}/v1" if provider == "openai" else server.url
    return ["--config", f"dataset={dataset}", f"provider={provider}", f"base_url={base_url}",
            "retry_backoff=0.01", "request_timeout=5", *extra]


def env_for(provider):
    return {"OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY": KEY}


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
    assert summary["latency_s"]["max"] > 0
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


def test_budget_stops_new_requests_across_parallel_jobs(rows, tmp_path):
    rows = read_rows(LITE_TEST)[20:28]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    prices = tmp_path / "prices.yaml"
    prices.write_text("prices:\n  costly-model: {input: 1000.0, output: 1000.0}\n")
    with FakeModelServer(rows, latency=0.5) as server:
        config = provider_config("openai", server, dataset, "model=costly-model", "max_cost=1.0", "run_id=budget",
                                 "confirm_cost=true")
        first = snakemake(tmp_path, "--cores", "4", "--resources", "api=4", "--configfile", str(prices), *config,
                          env=env_for("openai"), check=False)
        paid = len(server.requests)
        assert first.returncode != 0
        assert "the budget is spent" in first.stdout + first.stderr
        assert "--config max_cost=" in first.stdout + first.stderr
        # A request costs about 0.9 USD, so two reach the budget; a request starts only while the
        # recorded spend is under it, and at most four (api=4) run at once: 2 + 4 - 1 at the most.
        assert 2 <= paid <= 5 < len(rows)
        run = tmp_path / "results" / "budget"
        answered = list(run.glob("instances/*/response.json"))
        assert len(answered) == paid
        spent = sum(json.loads(line)["cost_usd"] for line in (run / "spend.jsonl").read_text().splitlines())
        assert spent >= 1.0

        second = snakemake(tmp_path, "--configfile", str(prices), *config[:-3], "max_cost=1000", "run_id=budget",
                           "confirm_cost=true",
                           env=env_for("openai"))
        assert jobs_run(second).count("generate") == len(rows) - paid
        assert len(server.requests) == len(rows)
    assert len(read_rows(run / "predictions.jsonl")) == len(rows)


@pytest.mark.parametrize("provider, variable", [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY")])
def test_missing_key_stops_before_any_job_but_not_a_dry_run(provider, variable, rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    result = snakemake(tmp_path, "--config", f"dataset={dataset}", f"provider={provider}", check=False)
    assert result.returncode != 0
    assert f"set the environment variable {variable}" in result.stderr
    assert not (tmp_path / "results").exists()
    dry = snakemake(tmp_path, "-n", "--config", f"dataset={dataset}", f"provider={provider}")
    assert dry.returncode == 0

"""What a user sees of a run against a model: the cost estimate before any request, a line per
answer, the merge of what is done when some instances failed, and how a failed run ends."""
import json
import re
import subprocess
import sys

import pytest

from scripts import costs

from conftest import LITE_TEST, PROJECT, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

pytestmark = pytest.mark.workflow

ENV = {"OPENAI_API_KEY": "sk-test-user-view"}


def config(server, dataset, *extra):
    return ["--config", f"dataset={dataset}", "provider=openai", f"base_url={server.url}/v1", "model=gpt-4o",
            "retry_backoff=0.01", "request_timeout=5", "run_id=view", "context=none", *extra]


def test_an_estimate_above_cost_warn_stops_before_any_request(tmp_path):
    rows = read_rows(LITE_TEST)[30:34]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    run = tmp_path / "results" / "view"
    with FakeModelServer(rows) as server:
        stopped = snakemake(tmp_path, *config(server, dataset, "cost_warn=0.01"), env=ENV, check=False)
        assert stopped.returncode != 0
        output = stopped.stdout + stopped.stderr
        assert "Cost estimate for 4 instances to ask" in output
        assert "above cost_warn=0.01 USD, so no request was sent" in output
        assert "--config confirm_cost=true" in output and "count=N" in output
        assert server.requests == [] and not list(run.glob("instances/*/response.json"))
        assert len(list(run.glob("instances/*/prompt.json"))) == 4

        dry = snakemake(tmp_path, "-n", *config(server, dataset, "cost_warn=0.01"), env=ENV)
        assert "Cost estimate for 4 instances to ask" in dry.stderr
        assert server.requests == []

        # one request at a time, so that each answer's line shows a larger run total than the one before
        confirmed = snakemake(tmp_path, "--resources", "api=1", *config(server, dataset, "cost_warn=0.01",
                                                                         "confirm_cost=true", "max_cost=50"), env=ENV)
    assert len(server.requests) == 4
    estimate = json.loads((run / "estimate.json").read_text())
    assert estimate["instances"] == 4 and 0 < estimate["low_usd"] < estimate["high_usd"]
    # each answer's line, in Snakemake's log (stderr)
    lines = [line for line in confirmed.stderr.splitlines() if re.match(r"generate \S+: ", line)]
    assert sorted(line.split(":")[0] for line in lines) == sorted(f"generate {r['instance_id']}" for r in rows)
    assert all("answered in" in line and "of max_cost 50 USD" in line for line in lines)
    totals = sorted(float(line.split("run total ")[1].split()[0]) for line in lines)
    spent = sum(e["cost_usd"] for e in costs.read_ledger(run / "spend.jsonl"))
    assert totals[-1] == round(spent, 4) and len(set(totals)) == len(totals)
    assert "\x1b[" not in confirmed.stdout + confirmed.stderr  # no control codes when not a terminal


def test_allow_partial_merges_what_is_done_and_a_plain_run_fills_in_the_rest(tmp_path):
    rows = read_rows(LITE_TEST)[40:45]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    run = tmp_path / "results" / "view"
    flaky = rows[2]["instance_id"]
    with FakeModelServer(rows) as server:
        server.faults[flaky] = ["500", "500"]
        failed = snakemake(tmp_path, *config(server, dataset, "max_attempts=2"), env=ENV, check=False)
        assert failed.returncode != 0
        assert "Some jobs of run results/view failed" in failed.stderr
        assert "allow_partial=true" in failed.stderr and "-m scripts.status --run results/view" in failed.stderr
        assert not (run / "predictions.jsonl").exists()

        partial = snakemake(tmp_path, *config(server, dataset, "max_attempts=2", "allow_partial=true"), env=ENV)
        assert "generate" not in jobs_run(partial)  # the failed instance is not tried again
        merged = {p["instance_id"] for p in read_rows(run / "predictions.jsonl")}
        assert merged == {r["instance_id"] for r in rows} - {flaky}
        assert flaky in (run / "summary.md").read_text()
        # the server that kept failing is a fault of the machinery, not a verdict on the model
        (missing,) = json.loads((run / "summary.json").read_text())["missing"]
        assert (missing["instance_id"], missing["infrastructure_fault"]) == (flaky, "provider_unreachable")
        status = subprocess.run([sys.executable, "-m", "scripts.status", "--run", str(run)], cwd=PROJECT,
                                capture_output=True, text=True, check=True).stdout
        assert "Infrastructure faults (1)" in status and flaky in status.split("Infrastructure faults")[1]

        complete = snakemake(tmp_path, *config(server, dataset, "max_attempts=2"), env=ENV)
    ran = jobs_run(complete)
    assert ran.count("generate") == 1 and "predictions" in ran and "summary" in ran
    assert {p["instance_id"] for p in read_rows(run / "predictions.jsonl")} == {r["instance_id"] for r in rows}


def test_retry_failed_redoes_recorded_failures_and_keeps_them(tmp_path):
    rows = read_rows(LITE_TEST)[50:53]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    folder = tmp_path / "results" / "view" / "instances" / rows[0]["instance_id"]
    with FakeModelServer(rows) as server:
        server.faults[rows[0]["instance_id"]] = ["refusal"]
        snakemake(tmp_path, *config(server, dataset), env=ENV)
        assert json.loads((folder / "response.json").read_text())["failure_reason"] == "refused"

        plain = snakemake(tmp_path, *config(server, dataset), env=ENV)
        assert "generate" not in jobs_run(plain)

        retried = snakemake(tmp_path, *config(server, dataset, "retry_failed=true"), env=ENV)
    assert jobs_run(retried).count("generate") == 1
    assert "set aside; its stage is made again" in retried.stderr
    assert json.loads((folder / "response.json").read_text())["status"] == "ok"
    kept = list(folder.glob("response.failed-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["failure_reason"] == "refused"
    assert len(read_rows(tmp_path / "results" / "view" / "predictions.jsonl")) == 3

"""Several models in one run (models=[...]): the real snakemake and openai client against the loopback server, on
real Lite rows; the comparison reads the files the runs wrote."""
import json

import pytest

from conftest import LITE_TEST, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

ENV = {"OPENAI_API_KEY": "sk-test-models"}


@pytest.fixture
def rows():
    return read_rows(LITE_TEST)[20:23]


def models(server, *extra):
    entries = [f"{{provider: openai, model: {model}, base_url: '{server.url}/v1'{''.join(extra)}}}"
               for model in ("gpt-4o", "gpt-4o-mini")]
    return f"models=[{', '.join(entries)}]"


def config(server, dataset, *extra):
    return ["--config", f"dataset={dataset}", models(server), "retry_backoff=0.01", "request_timeout=5",
            "temperature=0.7", "repair_attempts=0", "evaluation=none", *extra]


def test_two_models_share_the_prompts_and_are_compared(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    ids = [r["instance_id"] for r in rows]
    runs = {model: tmp_path / "results" / f"openai-{model}" for model in ("gpt-4o", "gpt-4o-mini")}
    with FakeModelServer(rows) as server:
        server.model_answers["gpt-4o-mini"] = {ids[0]: "I do not know how to fix this."}
        result = snakemake(tmp_path, *config(server, dataset, "samples=3"), env=ENV)
        asked = [(r["body"]["model"], r["instance_id"]) for r in server.requests]
        assert sorted(asked) == sorted((m, i) for m in runs for i in ids for _ in range(3))
        # the contexts and prompts are made once, in the first model's folder, and the second's are copies
        jobs = jobs_run(result)
        assert jobs.count("model1_context") == len(ids) and "model2_context" not in jobs
        assert jobs.count("model2_prompt") == len(ids)  # the copy
        for instance_id in ids:
            first, second = (runs[m] / "instances" / instance_id for m in runs)
            assert (first / "prompt.json").read_bytes() == (second / "prompt.json").read_bytes()
        assert (runs["gpt-4o"] / "instances.jsonl").read_bytes() == (runs["gpt-4o-mini"] / "instances.jsonl").read_bytes()
        # one estimate of both models before any request, each model's in its own folder
        output = result.stdout + result.stderr
        assert "Cost estimate of the 2 models" in output
        estimates = {m: json.loads((run / "estimate.json").read_text()) for m, run in runs.items()}
        assert {m: (e["model"], e["answers"]) for m, e in estimates.items()} == {m: (m, 9) for m in runs}
        for model, run in runs.items():
            summary = json.loads((run / "summary.json").read_text())
            assert (summary["model"], summary["samples"]) == (model, 3)

        compare_dir = tmp_path / "results" / "compare" / "openai-gpt-4o-vs-openai-gpt-4o-mini"
        report = json.loads((compare_dir / "compare.json").read_text())
        assert {run["run"]: (run["pass@1"], run["any_sample"]) for run in report["runs"]} == {
            "openai-gpt-4o": (1.0, 3), "openai-gpt-4o-mini": (pytest.approx(2 / 3), 2)}
        # each model's cost is its own ledger's, as its summary says
        for run in report["runs"]:
            summary = json.loads((runs[run["model"]] / "summary.json").read_text())
            assert run["cost_usd"] == pytest.approx(summary["cost"]["total_usd"]) and run["cost_usd"] > 0
        assert report["pairs"][0]["pass@1"]["difference"] == pytest.approx(1 / 3)
        assert "openai-gpt-4o vs openai-gpt-4o-mini" in (compare_dir / "compare.md").read_text()
        assert (compare_dir / "compare.png").stat().st_size > 0

        again = snakemake(tmp_path, *config(server, dataset, "samples=3"), env=ENV)
        assert len(server.requests) == 18 and jobs_run(again) == []

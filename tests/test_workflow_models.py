"""Several models in one run (models=[...]): the real snakemake and openai client against the loopback server, on
real Lite rows; the comparison reads the files the runs wrote."""
import json

import pytest

import swebench_images as images
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
            "temperature=0.7", "repair_attempts=0", "evaluation=none", "context=none", *extra]


@pytest.mark.workflow
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


@pytest.mark.workflow
def test_the_estimate_of_every_model_stops_the_run_before_any_request(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        result = snakemake(tmp_path, *config(server, dataset, "cost_warn=0.01"), env=ENV, check=False)
        assert not server.requests
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "results/openai-gpt-4o: Cost estimate for 3 instances" in output
    assert "results/openai-gpt-4o-mini: Cost estimate for 3 instances" in output
    assert "Cost estimate of the 2 models:" in output and "That is above cost_warn=0.01 USD" in output
    assert not list((tmp_path / "results").glob("*/estimate.json"))


@pytest.mark.workflow
def test_max_cost_holds_across_the_models(rows, tmp_path):
    """The second model's requests alone would fit in max_cost, but not with what the first model spent."""
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    first = tmp_path / "results" / "openai-gpt-4o" / "spend.jsonl"
    first.parent.mkdir(parents=True)
    first.write_text(json.dumps({"instance_id": "earlier", "state": "settled", "cost_usd": 0.995}) + "\n")
    with FakeModelServer(rows) as server:
        result = snakemake(tmp_path, *config(server, dataset, "max_cost=1.0"), "--keep-going", env=ENV, check=False)
        assert not server.requests
    assert result.returncode != 0
    refused = [json.loads(line) for line in (tmp_path / "results" / "openai-gpt-4o-mini" / "spend.jsonl").open()]
    # gpt-4o-mini's worst case is about 0.01 USD: it fits in 1.0 alone, not beside the 0.995 spent
    assert len(refused) == 3 and all(e["state"] == "refused" and e["reserved_usd"] < 0.005 + 0.01 for e in refused)
    assert "0.9950 USD spent" in result.stdout + result.stderr


@pytest.mark.workflow
@pytest.mark.parametrize("setting, message", [
    ("models=[{provider: openai, modle: gpt-4o}]",
     "models.0: Additional properties are not allowed ('modle' was unexpected)"),
    ("models=[{provider: openai, model: gpt-4o, context: bm25_13K}]",
     "models.0: Additional properties are not allowed ('context' was unexpected)"),
    ("models=[{provider: openai, model: gpt-4o}, {provider: openai, model: gpt-4o, temperature: 1}]",
     "models: entries 1 and 2 would both write results/openai-gpt-4o: give each its own run_id"),
    ("models=[{provider: openai, model: gpt-4o, temperature: hot}]",
     "models entry 1 (openai-gpt-4o): temperature: 'hot' is not of type 'number', 'null'"),
    ("models=[{provider: gold}, {provider: anthropic}]",
     "models entry 2 (anthropic-claude-sonnet-4-6): provider=anthropic needs an API key"),
])
def test_a_bad_entry_stops_before_any_job(setting, message, rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    result = snakemake(tmp_path, "--config", f"dataset={dataset}", setting, env=ENV, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert jobs_run(result) == [] and not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_run_id_names_one_run(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    result = snakemake(tmp_path, "--config", f"dataset={dataset}", "run_id=mine",
                       "models=[{provider: gold}, {provider: gold, run_id: gold-2}]", check=False)
    assert result.returncode != 0 and "run_id=mine names one run folder" in result.stderr


@pytest.mark.workflow
@pytest.mark.docker
def test_two_models_evaluated_by_the_harness_are_compared_on_its_verdicts(tmp_path):
    tag, base_commit = images.ensure_testbed_image()  # SWE-bench-shaped instance images (tests/swebench_images.py)
    chosen = [dict(images.row(i, base_commit), problem_statement=f"`calc.add` subtracts instead of adding ({i}).")
              for i in ("psf__requests-90011", "psf__requests-90012")]
    for row in chosen:
        images.tag_instance(tag, row)
    dataset = write_rows(tmp_path / "rows.jsonl", chosen)
    with FakeModelServer(chosen) as server:
        # the second model's patch of the second instance applies, and fails its test
        server.model_answers["gpt-4o-mini"] = {"psf__requests-90012": f"<patch>\n{images.WRONG_PATCH}</patch>\n"}
        snakemake(tmp_path, "--config", f"dataset={dataset}", models(server), "retry_backoff=0.01", "request_timeout=5",
                  "repair_attempts=0", "apply_check=false", "evaluation=docker", "min_free_disk_gb=1", "samples=2",
                  "context=none", env=ENV)
        assert len(server.requests) == 8
    for model, resolved in (("gpt-4o", ["psf__requests-90011", "psf__requests-90012"]),
                            ("gpt-4o-mini", ["psf__requests-90011"])):
        run = tmp_path / "results" / f"openai-{model}"
        for evaluation in (run / "evaluation.json", run / "samples" / "2" / "evaluation.json"):
            assert json.loads(evaluation.read_text())["resolved_ids"] == resolved
    report = json.loads((tmp_path / "results" / "compare" / "openai-gpt-4o-vs-openai-gpt-4o-mini" / "compare.json")
                        .read_text())
    assert report["outcome"] == "resolved"
    assert {run["run"]: run["pass@1"] for run in report["runs"]} == {"openai-gpt-4o": 1.0, "openai-gpt-4o-mini": 0.5}

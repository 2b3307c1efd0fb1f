"""What a run does before any job (scripts/start.py), without Snakemake: each check and each change of the run
folder, and that a dry run or a listing changes nothing."""
import json
from pathlib import Path

import pytest

from scripts import settings, start

from conftest import assert_valid, run_config

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run folders are results/<run_id>, relative


def before_jobs(config, environ=None, runs_jobs=True, dry_run=False, **paths):
    """start.before_jobs as rules/start.smk calls it, with the config as rules/paths.smk makes it (context=auto
    resolved)."""
    context, why = settings.context_choice(config)
    config = {**config, "context": context}
    derived = settings.derived(config)
    start.before_jobs(config, environ or {}, derived, runs_jobs, dry_run, context_why=why, **paths)
    return Path(derived["run_dir"])


def write(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


OPENAI = {"provider": "openai", "model": "gpt-4o", "evaluation": "none", "apply_check": False}


def test_a_run_records_its_stages_and_answer_settings():
    run = before_jobs(run_config(**OPENAI, samples=2, max_cost=3.0))
    assert json.loads((run / "run.json").read_text()) == {
        "stages": ["context", "prompt", "generate", "patch", "repair"], "max_cost": 3.0, "samples": 2,
        "context": {"strategy": "bm25_13K", "why": "context=auto: SWE-bench's own baseline, "
                    "princeton-nlp/SWE-bench_bm25_13K, holds split test of SWE-bench/SWE-bench_Lite"}}
    assert json.loads((run / "answer_settings.json").read_text())["model"] == "gpt-4o"
    assert json.loads((run / "answer_settings.json").read_text())["context"] == "bm25_13K"
    assert_valid(json.loads((run / "run.json").read_text()), "run")
    assert_valid(json.loads((run / "answer_settings.json").read_text()), "answer_settings")


def test_given_predictions_record_no_answer_settings(tmp_path):
    predictions = tmp_path / "preds.jsonl"
    predictions.write_text("")
    run = before_jobs(run_config(predictions=str(predictions), evaluation="none"))
    assert json.loads((run / "run.json").read_text())["stages"] == []
    assert not (run / "answer_settings.json").exists()


def test_paid_answers_of_other_settings_stop_the_run_unless_overwrite(capsys):
    run = before_jobs(run_config(**OPENAI))
    recorded = (run / "answer_settings.json").read_text()
    with pytest.raises(start.StartError, match=r"^Invalid configuration: the run results/openai-gpt-4o holds answers "
                                               r"paid for with temperature=0\.0 \(now 0\.5\)"):
        before_jobs(run_config(**OPENAI, temperature=0.5))
    with pytest.raises(start.StartError):  # a dry run checks too
        before_jobs(run_config(**OPENAI, temperature=0.5), dry_run=True)
    assert (run / "answer_settings.json").read_text() == recorded
    before_jobs(run_config(**OPENAI, temperature=0.5, overwrite=True))
    assert json.loads((run / "answer_settings.json").read_text())["temperature"] == 0.5
    before_jobs(run_config(provider="anthropic", model="claude-x", evaluation="none", repair_attempts=0))
    assert_valid(json.loads(Path("results/anthropic-claude-x/answer_settings.json").read_text()), "answer_settings")


def test_a_dry_run_or_a_listing_writes_nothing(capsys):
    before_jobs(run_config(**OPENAI), dry_run=True)
    before_jobs(run_config(**OPENAI), runs_jobs=False)
    assert not Path("results").exists()


def test_a_new_run_asks_again_after_the_quota_ran_out():
    run = Path("results/openai-gpt-4o")
    write(run / "quota_exhausted.json", {"provider": "openai"})
    before_jobs(run_config(**OPENAI), dry_run=True)
    assert (run / "quota_exhausted.json").is_file()
    before_jobs(run_config(**OPENAI))
    assert not (run / "quota_exhausted.json").exists()
    assert json.loads((run / "quota_exhausted.earlier.json").read_text()) == {"provider": "openai"}


def test_the_evaluation_preflight_stops_the_run_before_it_writes_anything(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.modal.toml
    config = run_config(**{**OPENAI, "evaluation": "modal"})
    with pytest.raises(start.StartError, match=r"^Cannot evaluate: evaluation=modal needs"):
        before_jobs(config)
    assert not Path("results").exists()
    before_jobs(config, dry_run=True)  # a dry run needs no backend
    before_jobs(config, {"MODAL_TOKEN_ID": "id", "MODAL_TOKEN_SECRET": "secret"})
    assert json.loads(Path("results/openai-gpt-4o/run.json").read_text())["stages"][-1] == "evaluate"


def test_retry_failed_sets_failures_aside(capsys):
    run = Path("results/openai-gpt-4o")
    write(run / "instances.index.json", {"a": 0, "b": 1})
    write(run / "instances/a/response.json", {"instance_id": "a", "status": "failed", "failure_reason": "refused"})
    write(run / "instances/b/response.json", {"instance_id": "b", "status": "ok"})
    before_jobs(run_config(**OPENAI, repair_attempts=0))
    assert (run / "instances/a/response.json").is_file()  # without retry_failed
    before_jobs(run_config(**OPENAI, repair_attempts=0, retry_failed=True))
    assert not (run / "instances/a/response.json").exists()
    assert (run / "instances/b/response.json").is_file()
    lines = capsys.readouterr().err.splitlines()
    assert lines[1] == "retry_failed: results/openai-gpt-4o/instances/a/response.json set aside; its stage is made again."
    assert lines[2].startswith("No cost estimate:")  # in the order of the run's messages


def test_answers_cut_off_by_a_smaller_output_limit_are_set_aside(capsys):
    run = Path("results/openai-gpt-4o")
    write(run / "instances.index.json", {"a": 0, "b": 1})
    for instance_id, limit in (("a", 1000), ("b", 16384)):
        write(run / f"instances/{instance_id}/response.json", {
            "instance_id": instance_id, "status": "failed", "failure_reason": "cut_off", "max_output_tokens": limit})
    before_jobs(run_config(**OPENAI), dry_run=True)
    assert (run / "instances/a/response.json").is_file()
    before_jobs(run_config(**OPENAI))
    assert not (run / "instances/a/response.json").exists()
    assert (run / "instances/b/response.json").is_file()  # cut off at the limit of this run: asking again is no use
    assert capsys.readouterr().err.splitlines()[1] == (
        "results/openai-gpt-4o/instances/a/response.json was cut off by a smaller output limit: set aside, "
        "asked again.")


def estimate_settings(**overrides):
    return {"provider": "openai", "batch": False, "prices": {"gpt-4o": {"input": 1000.0, "output": 1000.0}},
            "database_prices": False, "prompt_cache": False, "answer_tokens": 1000, "max_output_tokens": 16384,
            "cost_warn": 10, "confirm_cost": False, "samples": 1, **overrides}


def test_a_dry_run_tells_the_estimate_as_far_as_the_prompts_are_built(capsys):
    run = Path("results/openai-gpt-4o")
    paths = {"estimate_path": str(run / "estimate.json"), "estimate_settings": estimate_settings()}
    before_jobs(run_config(**OPENAI), dry_run=True, **paths)
    assert capsys.readouterr().err == (
        "Cost estimate: made once the prompts are built, before any request (nothing is selected yet).\n")
    write(run / "instances.index.json", {"a": 0, "b": 1})
    write(run / "instances/a/prompt.json", {"tokens": 100})
    before_jobs(run_config(**OPENAI), dry_run=True, **paths)
    err = capsys.readouterr().err
    assert err.startswith("Cost estimate for 1 instances to ask (100 prompt tokens")
    assert err.endswith(" 1 instances have no prompt yet and are not counted.\n")
    assert not (run / "estimate.json").exists()


def test_more_samples_are_estimated_before_any_job_and_stop_above_cost_warn(capsys):
    run = Path("results/openai-gpt-4o")
    write(run / "instances.index.json", {"a": 0})
    write(run / "instances/a/prompt.json", {"tokens": 100})
    write(run / "estimate.json", {"samples": 1})
    paths = {"estimate_path": str(run / "estimate.json")}
    with pytest.raises(start.StartError, match=r"^Cost estimate for 1 instances, 3 answers, to ask .* above cost_warn=10"):
        before_jobs(run_config(**OPENAI, samples=3), **paths, estimate_settings=estimate_settings(samples=3))
    assert json.loads((run / "estimate.json").read_text()) == {"samples": 1}
    before_jobs(run_config(**OPENAI, samples=3), **paths, estimate_settings=estimate_settings(samples=3, cost_warn=100))
    assert json.loads((run / "estimate.json").read_text())["samples"] == 3
    assert_valid(json.loads((run / "estimate.json").read_text()), "estimate")


def test_a_model_without_a_price_is_told_so(capsys):
    before_jobs(run_config(**OPENAI), dry_run=True)
    assert capsys.readouterr().err.startswith("No cost estimate: no price is known for model gpt-4o, so requests start")
    before_jobs(run_config(evaluation="none"), dry_run=True)  # gold costs nothing
    assert capsys.readouterr().err == ""


def test_a_batch_that_left_instances_to_ask_is_done_again():
    done = Path("results/openai-gpt-4o/batch/done.json")
    write(done, {"unanswered": []})
    before_jobs(run_config(**OPENAI), batch_done=str(done))
    assert done.is_file()
    write(done, {"unanswered": ["a"]})
    before_jobs(run_config(**OPENAI), dry_run=True, batch_done=str(done))
    assert done.is_file()
    before_jobs(run_config(**OPENAI), batch_done=str(done))
    assert not done.exists()

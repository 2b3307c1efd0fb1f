"""The whole workflow, run by the real snakemake on real SWE-bench rows."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import (
    DATA,
    LITE_DEV,
    LITE_TEST,
    PROJECT,
    assert_valid,
    jobs_run,
    read_rows,
    snakemake,
    write_rows,
)

pytestmark = pytest.mark.workflow


def lite_sample(tmp_path, count=4, start=0):
    rows = read_rows(LITE_TEST)[start:start + count]
    return write_rows(tmp_path / "sample.jsonl", rows), rows


def test_gold_run_end_to_end_on_real_rows(tmp_path):
    dataset, rows = lite_sample(tmp_path, count=5)
    snakemake(tmp_path, "--config", f"dataset={dataset}")
    run = tmp_path / "results" / "gold"
    predictions = read_rows(run / "predictions.jsonl")
    assert [p["instance_id"] for p in predictions] == sorted(r["instance_id"] for r in rows)
    reference = {r["instance_id"]: r["patch"] for r in rows}
    for p in predictions:
        assert_valid(p, "prediction")
        assert p["model_patch"] == reference[p["instance_id"]]
        assert p["model_name_or_path"] == "gold"
    summary = json.loads((run / "summary.json").read_text())
    assert_valid(summary, "summary")
    assert summary["counts"]["patch"]["valid"] == 5
    for row in rows:
        folder = run / "instances" / row["instance_id"]
        for name in ("context", "prompt", "response"):
            assert_valid(json.loads((folder / f"{name}.json").read_text()), name)
    assert "| predictions | with a patch | 5 |" in (run / "summary.md").read_text()


def test_reruns_redo_only_what_changed(tmp_path):
    dataset, rows = lite_sample(tmp_path, count=4)
    config = ["--config", f"dataset={dataset}"]
    first = snakemake(tmp_path, *config)
    assert jobs_run(first).count("generate") == 4

    again = snakemake(tmp_path, *config)
    assert jobs_run(again) == []
    assert "Nothing to be done" in again.stdout + again.stderr

    run = tmp_path / "results" / "gold"
    victim = rows[2]["instance_id"]
    untouched = run / "instances" / rows[0]["instance_id"] / "patch.json"
    before = untouched.stat().st_mtime_ns
    (run / "instances" / victim / "response.json").unlink()
    redo = snakemake(tmp_path, *config)
    assert jobs_run(redo) == ["all", "figures", "generate", "patch", "predictions", "summary"]
    assert untouched.stat().st_mtime_ns == before

    template = tmp_path / "terse.yaml"
    template.write_text("user: 'Fix this issue in $repo with a diff:\n\n  $problem_statement'\n")
    prompt_change = snakemake(tmp_path, *config, f"prompt_template={template}")
    ran = jobs_run(prompt_change)
    assert ran.count("prompt") == 4 and ran.count("generate") == 4
    assert "select" not in ran and "context" not in ran
    prompt = json.loads((run / "instances" / victim / "prompt.json").read_text())
    assert prompt["template"] == "terse"


def test_widening_the_selection_runs_only_the_new_instances(tmp_path):
    dataset, rows = lite_sample(tmp_path, count=5)
    snakemake(tmp_path, "--config", f"dataset={dataset}", "count=3")
    wider = snakemake(tmp_path, "--config", f"dataset={dataset}", "count=5")
    ran = jobs_run(wider)
    assert ran.count("select") == 1
    assert ran.count("context") == 2 and ran.count("generate") == 2
    assert len(read_rows(tmp_path / "results" / "gold" / "predictions.jsonl")) == 5


def test_killed_run_leaves_no_target_and_rerun_completes(tmp_path):
    dataset, rows = lite_sample(tmp_path, count=3)
    # A replay file that is a FIFO nobody writes: generate jobs block inside the provider.
    fifo = tmp_path / "answers.jsonl"
    os.mkfifo(fifo)
    config = ["--config", f"dataset={dataset}", "provider=replay", f"replay_file={fifo}", "run_id=killed",
              "evaluation=none"]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
               str(tmp_path), "--cores", "2", *config]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    run = tmp_path / "results" / "killed"
    deadline = time.monotonic() + 60
    while len(list(run.glob("instances/*/prompt.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    # Kill it all at once, as a power cut or an out-of-memory killer would.
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert len(list(run.glob("instances/*/prompt.json"))) == 3, "the run never reached generation"
    assert list(run.glob("instances/*/response.json")) == []
    assert list(run.glob("**/.*.tmp")) == []

    fifo.unlink()
    write_rows(fifo, [{"instance_id": r["instance_id"], "full_output": f"<patch>\n{r['patch']}</patch>"} for r in rows])
    locked = snakemake(tmp_path, *config, check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(tmp_path, "--unlock", *config)
    rerun = snakemake(tmp_path, *config)
    assert jobs_run(rerun).count("generate") == 3 and "prompt" not in jobs_run(rerun)
    predictions = read_rows(run / "predictions.jsonl")
    assert {p["instance_id"]: p["model_patch"] for p in predictions} == {r["instance_id"]: r["patch"] for r in rows}


def test_replay_of_real_answers_records_outcomes(tmp_path):
    replay_file = DATA / "preds_oracle_acecoder-qwen2.5-coder-7b_litesubset.jsonl"
    answers = read_rows(replay_file)[:8]
    lite = {r["instance_id"]: r for r in read_rows(LITE_TEST)}
    rows = [lite[a["instance_id"]] for a in answers]
    dataset = write_rows(tmp_path / "sample.jsonl", rows)
    snakemake(tmp_path, "--config", f"dataset={dataset}", "provider=replay", f"replay_file={replay_file}")
    run = tmp_path / "results" / "replay-preds_oracle_acecoder-qwen2.5-coder-7b_litesubset"
    summary = json.loads((run / "summary.json").read_text())
    predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
    records = {}
    for answer in answers:
        folder = run / "instances" / answer["instance_id"]
        assert json.loads((folder / "response.json").read_text())["answer"] == answer["full_output"]
        records[answer["instance_id"]] = record = json.loads((folder / "patch.json").read_text())
        # a valid patch is the prediction; another outcome gives an empty one, with its reason recorded
        if record["status"] == "valid":
            assert predictions[answer["instance_id"]] == (folder / "patch.diff").read_text() != ""
        else:
            assert predictions[answer["instance_id"]] == "" and record["reason"]
    statuses = Counter(r["status"] for r in records.values())
    assert statuses["valid"] and statuses["valid"] < 8  # these answers have both outcomes
    patch_counts = summary["counts"]["patch"]
    assert {status: patch_counts[status] for status in ("valid", "empty", "invalid")} == {
        status: statuses[status] for status in ("valid", "empty", "invalid")}
    assert patch_counts["by_reason"] == dict(Counter(r["reason"] for r in records.values() if r["status"] != "valid"))


def test_existing_predictions_are_evaluated_as_given(tmp_path):
    given = DATA / "preds_20240617_moatless_gpt4o.jsonl"
    result = snakemake(tmp_path, "--config", f"dataset={LITE_TEST}", f"predictions={given}", "filter=^psf__")
    assert "generate" not in jobs_run(result)
    run = tmp_path / "results" / "predictions-preds_20240617_moatless_gpt4o"
    predictions = read_rows(run / "predictions.jsonl")
    expected = {p["instance_id"]: p for p in read_rows(given) if p["instance_id"].startswith("psf__")}
    assert [p["instance_id"] for p in predictions] == sorted(expected)
    for p in predictions:
        assert p["model_patch"] == expected[p["instance_id"]]["model_patch"]
        assert p["model_name_or_path"] == expected[p["instance_id"]]["model_name_or_path"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mode"] == "predictions" and summary["counts"]["selected"] == len(expected)


def test_given_predictions_are_checked(tmp_path):
    rows = read_rows(DATA / "preds_20240617_moatless_gpt4o.jsonl")
    rows = [r for r in rows if r["instance_id"].startswith("psf__") and r["model_patch"]][:3]
    prose = rows[1]["instance_id"]
    rows[1] = {**rows[1], "model_patch": "The fix is to strip the header value before comparing it."}
    given = write_rows(tmp_path / "mine.jsonl", rows)
    result = snakemake(tmp_path, "--config", f"dataset={LITE_TEST}", f"predictions={given}")
    assert f"predictions: {prose}: the model_patch of {given} is not a diff" in result.stderr
    run = tmp_path / "results" / "predictions-mine"
    assert {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")} == {
        r["instance_id"]: r["model_patch"] for r in rows}  # the evaluation gets it as it is
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["provider"], summary["model"]) == (f"predictions file {given}", rows[0]["model_name_or_path"])
    assert summary["counts"]["predictions"] == {"total": 3, "non_empty": 2, "not_a_diff": 1}
    assert [(f["instance_id"], f["stage"], f["reason"]) for f in summary["failures"]] == [
        (prose, "predictions", "not a diff")]
    markdown = (run / "summary.md").read_text()
    assert f"provider: predictions file {given}, model: {rows[0]['model_name_or_path']}," in markdown
    assert f"| {prose} | predictions | not a diff | results/predictions-mine/predictions.jsonl |" in markdown
    status = subprocess.run([sys.executable, "-m", "scripts.status", "--run", str(run)], capture_output=True,
                            text=True, check=True, env={**os.environ, "PYTHONPATH": str(PROJECT)}).stdout
    listed = status[status.index("Not a diff (1)"):].splitlines()
    assert listed[1].split()[:2] == [prose, "no"] and "no file header" in listed[1]


def test_a_repeated_prediction_id_stops_the_run_before_any_job(tmp_path):
    rows = read_rows(DATA / "preds_20240617_moatless_gpt4o.jsonl")[:4]
    given = write_rows(tmp_path / "mine.jsonl", rows + [rows[2], rows[0]])
    result = snakemake(tmp_path, "--config", f"dataset={LITE_TEST}", f"predictions={given}", check=False)
    assert result.returncode != 0
    ids = sorted([rows[0]["instance_id"], rows[2]["instance_id"]])
    assert (f"Invalid configuration: predictions file {given} has more than one prediction for 2 instance(s): "
            f"{ids[0]}, {ids[1]}. Keep one row per instance_id") in result.stderr
    assert jobs_run(result) == [] and not (tmp_path / "results").exists()


def test_prediction_ids_not_in_the_dataset_are_named_with_the_file(tmp_path):
    rows = read_rows(DATA / "preds_20240617_moatless_gpt4o.jsonl")[:2]
    given = write_rows(tmp_path / "mine.jsonl", rows + [{**rows[0], "instance_id": "nope__nope-1"}])
    result = snakemake(tmp_path, "--config", f"dataset={LITE_DEV}", f"predictions={given}", check=False)
    assert result.returncode != 0
    assert (f"3 instance id(s) of the predictions file {given} not in the dataset {LITE_DEV}: "
            in result.stdout + result.stderr)
    assert "nope__nope-1" in result.stdout + result.stderr
    assert not (tmp_path / "results" / "predictions-mine" / "instances.jsonl").exists()


def test_environment_settings_and_their_precedence(tmp_path):
    dataset, rows = lite_sample(tmp_path, count=4)
    env = {"SWEBENCH_DATASET": str(dataset), "SWEBENCH_COUNT": "3", "SWEBENCH_RUN_ID": "from-env"}
    snakemake(tmp_path, env=env)
    assert len(read_rows(tmp_path / "results" / "from-env" / "predictions.jsonl")) == 3
    snakemake(tmp_path, "--config", "count=2", "run_id=from-cli", env=env)
    assert len(read_rows(tmp_path / "results" / "from-cli" / "predictions.jsonl")) == 2


@pytest.mark.parametrize("config, message", [
    (["provider=nobody"], "provider: 'nobody' is not one of ['gold', 'replay', 'openai', 'anthropic']"),
    (["count=many"], "count: 'many' is not of type 'integer', 'null'"),
    (["dataset=nowhere.jsonl"], "dataset=nowhere.jsonl: no such file"),
    (["provider=replay"], "provider=replay needs the earlier answers"),
    (["filter=(unclosed"], "is not a valid regular expression"),
    (["run_id=a/b"], "run_id: 'a/b' does not match"),
    (["count=0"], "count: 0 is less than the minimum of 1"),
    (["modle=x"], "'modle' was unexpected"),
])
def test_misconfiguration_stops_before_any_job(tmp_path, config, message):
    result = snakemake(tmp_path, "--config", *config, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Invalid configuration" in result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("config, message", [
    (["instances=nope__nope-1"], f"1 instance id(s) of `instances` not in the dataset {LITE_TEST}: nope__nope-1"),
    (["filter=^zzz"], "the selection is empty"),
])
def test_bad_selection_stops_at_the_select_job(tmp_path, config, message):
    result = snakemake(tmp_path, "--config", f"dataset={LITE_TEST}", *config, check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert jobs_run(result) == []
    assert not (tmp_path / "results" / "gold" / "instances").exists()


def test_row_without_required_field_is_named(tmp_path):
    rows = read_rows(LITE_TEST)[:2]
    del rows[1]["problem_statement"]
    dataset = write_rows(tmp_path / "broken.jsonl", rows)
    result = snakemake(tmp_path, "--config", f"dataset={dataset}", check=False)
    assert result.returncode != 0
    assert f"instance {rows[1]['instance_id']} lacks required field(s) problem_statement" in result.stdout + result.stderr


def test_example_dataset_of_the_readme(tmp_path):
    snakemake(tmp_path, "--config", f"dataset={PROJECT / 'examples' / 'tiny.jsonl'}")
    predictions = read_rows(tmp_path / "results" / "gold" / "predictions.jsonl")
    reference = {r["instance_id"]: r["patch"] for r in read_rows(PROJECT / "examples" / "tiny.jsonl")}
    assert {p["instance_id"]: p["model_patch"] for p in predictions} == reference


def test_side_effects_belong_to_the_run_the_user_started(tmp_path):
    """The Docker check and retry_failed's renames happen in a run, not in a dry run, --lint, --report or a job
    that a cluster node runs (a node without Docker makes prompts and answers)."""
    rows = read_rows(LITE_TEST)[:2]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    no_docker = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    snakemake(tmp_path, "--config", f"dataset={dataset}")
    run = tmp_path / "results" / "gold"
    folder = run / "instances" / rows[0]["instance_id"]
    record = json.loads((folder / "response.json").read_text())
    (folder / "response.json").write_text(json.dumps(dict(record, status="failed", failure_reason="refused")))
    docker_run = ["--config", f"dataset={dataset}", "evaluation=docker", "retry_failed=true"]

    for reading in (["-n"], ["--lint"], ["--report", str(tmp_path / "report.html")]):
        result = snakemake(tmp_path, *reading, *docker_run, env=no_docker, check=False)
        assert "Cannot evaluate" not in result.stderr, reading
        assert not list(folder.glob("response.failed-*.json")), reading

    # A job as a cluster node runs it: Snakemake in remote mode, told which job to run.
    (run / "instances" / rows[1]["instance_id"] / "context.json").unlink()
    job = snakemake(tmp_path, "--mode", "remote", "--target-jobs", f"context:id={rows[1]['instance_id']}",
                    "--allowed-rules", "context", *docker_run, env=no_docker, check=False)
    assert job.returncode == 0, job.stderr
    assert (run / "instances" / rows[1]["instance_id"] / "context.json").exists()
    assert not list(folder.glob("response.failed-*.json"))

    started = snakemake(tmp_path, *docker_run, env=no_docker, check=False)
    assert started.returncode != 0 and "Cannot evaluate: evaluation=docker needs a running Docker daemon" in started.stderr


@pytest.mark.parametrize("umask", [0o002, 0o022])
def test_files_the_run_writes_get_the_mode_the_umask_gives(tmp_path, umask):
    cache = tmp_path / "cache"
    snakemake(tmp_path, "--config", f"dataset={PROJECT / 'examples' / 'tiny.jsonl'}", "apply_check=true",
              f"repo_url={PROJECT / 'examples' / 'repos'}/{{repo}}.bundle", f"repo_cache={cache}", umask=umask)
    run = tmp_path / "results" / "gold"
    # everything under the run folder; of the repository cache, its folders and locks (git sets its own files' modes)
    written = [run, *run.rglob("*"), *(path for path in cache.rglob("*") if path.is_dir() or path.parent == cache)]
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in written}
    assert {run / "summary.json", run / "predictions.jsonl", run / "figures" / "funnel.png",
            run / "logs" / "example__calc-1" / "patch.log", cache / "example__calc.git"} <= set(modes)
    expected = {"file": 0o666 & ~umask, "folder": 0o777 & ~umask}
    wrong = {str(path): oct(mode) for path, mode in modes.items()
             if mode != expected["folder" if path.is_dir() else "file"]}
    assert wrong == {}

"""Several samples per instance: the real snakemake and openai client against the loopback server, on real Lite rows."""
import json
import time

import pytest

from scripts.evaluate import harness_run_id

import swebench_images as images
from conftest import LITE_TEST, assert_valid, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

ENV = {"OPENAI_API_KEY": "sk-test-samples"}


@pytest.fixture
def rows():
    return read_rows(LITE_TEST)[20:23]


def config(server, dataset, *extra):
    # context=none: the issue alone (the rows' repositories are not reachable offline)
    return ["--config", f"dataset={dataset}", "provider=openai", f"base_url={server.url}/v1", "retry_backoff=0.01",
            "request_timeout=5", "temperature=0.7", "run_id=k", "context=none", *extra]


def sample_files(run, instance_id, sample):
    folder = run / "instances" / instance_id / ("" if sample == 1 else f"samples/{sample}")
    return {name: folder / name for name in ("response.json", "patch.diff", "patch.json", "repair.diff", "repair.json")}


@pytest.mark.workflow
def test_more_samples_ask_only_the_new_ones_and_a_deleted_one_alone(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    ids = [r["instance_id"] for r in rows]
    run = tmp_path / "results" / "k"
    with FakeModelServer(rows) as server:
        snakemake(tmp_path, *config(server, dataset, "samples=3"), env=ENV)
        assert len(server.requests) == 9
        for instance_id in ids:
            asked = server.requests_for(instance_id)
            # every sample sends the same request, at the configured temperature
            assert len(asked) == 3 and all(r["body"] == asked[0]["body"] for r in asked)
            assert asked[0]["body"]["temperature"] == 0.7
            for sample in (1, 2, 3):
                assert all(path.is_file() for path in sample_files(run, instance_id, sample).values())
                assert (run / "logs" / instance_id / ("" if sample == 1 else f"samples/{sample}") / "generate.log").is_file()
        for sample in (2, 3):
            predictions = read_rows(run / "samples" / str(sample) / "predictions.jsonl")
            patches = {r["instance_id"]: r["patch"] for r in rows}
            assert {p["instance_id"]: p["model_patch"] for p in predictions} == patches
            assert [p["instance_id"] for p in predictions] == sorted(ids)
        assert not (run / "samples" / "1").exists()
        assert json.loads((run / "run.json").read_text())["samples"] == 3
        summary = json.loads((run / "summary.json").read_text())
        assert summary["samples"] == 3
        assert_valid(summary, "summary")
        first = {i: sample_files(run, i, 1)["response.json"].read_bytes() for i in ids}

        # five samples after three: only samples 4 and 5 are asked, and the estimate counts just those
        more = snakemake(tmp_path, *config(server, dataset, "samples=5"), env=ENV)
        assert len(server.requests) == 9 + 2 * len(ids)
        assert jobs_run(more).count("generate") == 2 * len(ids)
        estimate = json.loads((run / "estimate.json").read_text())
        assert estimate["answers"] == 2 * len(ids) and estimate["instances"] == len(ids)
        assert f"Cost estimate for {len(ids)} instances, {2 * len(ids)} answers, to ask" in more.stdout + more.stderr
        assert {i: sample_files(run, i, 1)["response.json"].read_bytes() for i in ids} == first
        assert json.loads((run / "summary.json").read_text())["samples"] == 5

        # a deleted answer of sample 2 is asked again alone, and what follows it redone
        sample_files(run, ids[1], 2)["response.json"].unlink()
        again = snakemake(tmp_path, *config(server, dataset, "samples=5"), env=ENV)
        assert len(server.requests) == 9 + 2 * len(ids) + 1
        assert server.requests[-1]["instance_id"] == ids[1]
        assert jobs_run(again).count("generate") == 1 and jobs_run(again).count("patch") == 1
        assert "predictions" in jobs_run(again) and sample_files(run, ids[1], 2)["response.json"].is_file()

        # back to one sample: nothing is asked, and the run is as a run of one sample reads it
        snakemake(tmp_path, *config(server, dataset, "samples=1"), env=ENV)
        assert len(server.requests) == 9 + 2 * len(ids) + 1
        assert json.loads((run / "summary.json").read_text())["samples"] == 1


@pytest.mark.workflow
def test_each_sample_is_evaluated_and_merged_on_its_own(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        snakemake(tmp_path, *config(server, dataset, "samples=2"), env=ENV)
        dry = snakemake(tmp_path, *config(server, dataset, "samples=2", "evaluation=docker"), "--dry-run", env=ENV)
    output = dry.stdout + dry.stderr
    for instance_id in (r["instance_id"] for r in rows):
        assert f"results/k/instances/{instance_id}/samples/2/evaluation.json" in output
    assert "results/k/samples/2/evaluation.json" in output and "results/k/samples/2/predictions.jsonl" in output
    assert "results/k/samples/1" not in output and "samples/3" not in output


@pytest.mark.workflow
def test_the_samples_that_failed_on_the_machinery_are_grouped_by_cause(rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    failing = rows[1]["instance_id"]
    with FakeModelServer(rows) as server:
        server.faults[failing] = ["500"] * 4  # both samples' two attempts
        result = snakemake(tmp_path, "--logger", "swebench", *config(server, dataset, "samples=2", "max_attempts=2",
                                                                       "repair_attempts=0"), env=ENV, check=False)
    assert result.returncode != 0
    printed = result.stdout + result.stderr
    # a line per failed job, its sample named after the first; the cause once at the end, with its count and fix
    assert sorted(line for line in printed.splitlines() if line.startswith("error: ")) == sorted([
        f"error: generate {failing}: provider_unreachable (log: results/k/logs/{failing}/generate.log)",
        f"error: generate {failing} sample 2: provider_unreachable (log: results/k/logs/{failing}/samples/2/generate.log)"])
    causes = [line for line in printed.splitlines() if "failed for one cause" in line]
    assert len(causes) == 1 and causes[0].startswith(
        "2 samples of 1 instance failed for one cause: provider_unreachable (no answer after 2 attempt(s)"), causes
    assert causes[0].endswith("A rerun retries them.")
    assert "Traceback" not in printed and "Error in rule" not in printed


@pytest.mark.workflow
@pytest.mark.parametrize("setting, message", [
    ("batch=true", "samples=2 asks each instance several times, but batch=true asks one answer per instance: "
                   "leave samples at 1, or set batch=false."),
    ("samples=0", "samples: 0 is less than the minimum of 1"),
])
def test_bad_samples_stop_before_any_job(setting, message, rows, tmp_path):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        result = snakemake(tmp_path, *config(server, dataset, "samples=2", setting), env=ENV, check=False)
        assert not server.requests
    assert result.returncode != 0 and message in result.stderr
    assert jobs_run(result) == [] and not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_given_predictions_take_one_sample(rows, tmp_path):
    predictions = tmp_path / "preds.jsonl"
    write_rows(predictions, [{"instance_id": r["instance_id"], "model_name_or_path": "m", "model_patch": r["patch"]}
                             for r in rows])
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    result = snakemake(tmp_path, "--config", f"dataset={dataset}", f"predictions={predictions}", "samples=3", check=False)
    assert result.returncode != 0
    assert f"samples=3 asks each instance several times, but predictions={predictions} takes one given patch per " \
           "instance: leave samples at 1, or leave out predictions." in result.stderr


@pytest.mark.workflow
@pytest.mark.docker
def test_samples_are_evaluated_by_the_harness_in_docker_each_in_its_own_containers(tmp_path):
    tag, base_commit = images.ensure_testbed_image()  # SWE-bench-shaped instance images (tests/swebench_images.py)
    chosen = [images.row(i, base_commit, images.TEST_PATCH, ["test_calc.py::test_add"])
              for i in ("psf__requests-90001", "psf__requests-90002")]
    for row in chosen:
        images.tag_instance(tag, row)
    dataset = write_rows(tmp_path / "rows.jsonl", chosen)
    since = time.time()
    snakemake(tmp_path, "--config", f"dataset={dataset}", "evaluation=docker", "min_free_disk_gb=1", "samples=2")
    created = [event["Actor"]["Attributes"]["name"] for event in images.client().events(
        since=since, until=time.time(), decode=True, filters={"type": "container", "event": "create"})]
    run = tmp_path / "results" / "gold"
    for instance_id in ("psf__requests-90001", "psf__requests-90002"):
        for folder in (run / "instances" / instance_id, run / "instances" / instance_id / "samples" / "2"):
            assert json.loads((folder / "evaluation.json").read_text())["status"] == "resolved"
    # one container per instance and sample, named by the harness from its run id (the daemon is shared:
    # other containers may have been made meanwhile)
    ids = ("psf__requests-90001", "psf__requests-90002")
    harness_runs = {i: (harness_run_id("gold", run), harness_run_id("gold.s2", run / "instances" / i)) for i in ids}
    mine = [name for name in created if any(run_id in name for runs in harness_runs.values() for run_id in runs)]
    assert sorted(mine) == sorted(f"sweb.eval.{i}.{run_id}" for i in ids for run_id in harness_runs[i])
    second = json.loads((run / "instances" / ids[0] / "samples" / "2" / "evaluation.json").read_text())
    assert second["run_id"] == harness_runs[ids[0]][1] != harness_runs[ids[0]][0]
    merged = {p: json.loads((run / p).read_text()) for p in ("evaluation.json", "samples/2/evaluation.json")}
    assert merged["samples/2/evaluation.json"].keys() == merged["evaluation.json"].keys()
    assert merged["samples/2/evaluation.json"]["resolved_ids"] == ["psf__requests-90001", "psf__requests-90002"]
    assert merged["samples/2/evaluation.json"]["status_counts"] == merged["evaluation.json"]["status_counts"]

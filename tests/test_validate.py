"""Gold validation's faults: an image registry that does not answer is a fault of the machinery, never an
environment broken here (tests/test_real_instances.py validates real instances); and the order of the
evaluations, longest first."""
import json
import socket
import subprocess
import sys
import time

import docker
import pytest

from scripts.evaluate import harness_run_id

import swebench_images as images
from conftest import LITE_TEST, PROJECT, assert_valid, jobs_run, read_rows, snakemake, write_rows

pytestmark = [pytest.mark.docker, pytest.mark.workflow]


def test_a_registry_that_does_not_answer_is_a_fault_and_no_verdict(tmp_path):
    with socket.socket() as closed:  # a loopback port where nothing listens
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    row = next(r for r in read_rows(LITE_TEST) if r["instance_id"] == "psf__requests-1963")
    dataset = write_rows(tmp_path / "rows.jsonl", [row])
    given = write_rows(tmp_path / "preds.jsonl", [{"instance_id": row["instance_id"], "model_name_or_path": "m",
                                                   "model_patch": row["patch"]}])
    cache = tmp_path / "cache"
    command = ["--config", f"dataset={dataset}", f"predictions={given}", "evaluation=docker", "min_free_disk_gb=1",
               "validate_gold=true", f"validation_cache={cache}", f"image_namespace=127.0.0.1:{port}/swebench"]
    run = tmp_path / "results" / "predictions-preds"
    # the image's pull ahead of the validation (rules/images.smk) meets the fault: nothing is validated
    log = run / "logs" / row["instance_id"] / "pull.log"
    for _ in (1, 2):  # the same command again pulls again
        failed = snakemake(tmp_path, *command, check=False)
        assert failed.returncode != 0 and not {"validate", "evaluate"} & set(jobs_run(failed))
        assert "Error in rule pull" in failed.stderr
        last = log.read_text().strip().splitlines()[-1]
        assert last.startswith("infrastructure fault: network: ") and f"127.0.0.1:{port}" in last, last
        assert not (run / "instances" / row["instance_id"] / "validation.json").exists()
        assert not list(cache.rglob("*.json"))
        assert not (run / "summary.json").exists()
        status = subprocess.run([sys.executable, "-m", "scripts.status", "--run", str(run)], cwd=PROJECT,
                                capture_output=True, text=True, check=True).stdout
        assert "1 instance failed for one cause: network" in status and str(log) in status
        log.unlink()


def test_evaluations_start_longest_first_by_the_durations_of_an_earlier_run(tmp_path):
    """With one container at a time, the evaluations start in the order of their longest earlier evaluation in
    another run folder here (longest first); the natural order would be by id."""
    tag, base_commit = images.ensure_testbed_image()
    earlier = {"psf__requests-90001": 5.0, "psf__requests-90002": 20.0, "psf__requests-90003": 50.0}
    rows = [images.row(i, base_commit) for i in earlier]
    for row in rows:
        images.tag_instance(tag, row)
        record = tmp_path / "results" / "earlier" / "instances" / row["instance_id"] / "evaluation.json"
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"duration_s": earlier[row["instance_id"]]}))
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    given = write_rows(tmp_path / "preds.jsonl", [{"instance_id": r["instance_id"], "model_name_or_path": "m",
                                                   "model_patch": images.GOLD_PATCH} for r in rows])
    client = docker.from_env()
    started = time.time()
    # one pull at a time too (the images are here: each pull job only records its image), so that the evaluations
    # become ready in the order of the pulls' priorities rather than of the pulls that end first
    snakemake(tmp_path, "--cores", "1", "--resources", "docker=1", "pulls=1", "--config", f"dataset={dataset}",
              f"predictions={given}", "evaluation=docker", "min_free_disk_gb=1")
    events = client.events(since=started, until=time.time() + 1, decode=True,
                           filters={"type": "container", "event": "create"})
    harness_run = harness_run_id("predictions-preds", tmp_path / "results" / "predictions-preds")
    created = [e["Actor"]["Attributes"]["name"] for e in events if harness_run in e["Actor"]["Attributes"]["name"]]
    assert created == [f"sweb.eval.{i}.{harness_run}" for i in sorted(earlier, key=earlier.get, reverse=True)]


def test_an_image_the_validation_built_is_removed_once_evaluated_and_one_that_was_here_stays(tmp_path):
    """Images built locally (image_namespace empty) with validate_gold: the validation builds the first instance's
    image with the harness, its evaluation runs in it, and with keep_images=false the evaluation's clean-up removes
    it, as it removes a pulled one. The second instance's image was on the daemon before the run: it stays."""
    tag, base_commit = images.ensure_testbed_image()
    rows = [images.row(i, base_commit) for i in ("psf__requests-90031", "psf__requests-90032")]
    built, users = [images.ensure_harness_build(row) for row in rows]
    client = docker.from_env()
    for name in (built, users):
        if images.image_exists(client, name):
            client.images.remove(name)
    client.images.get(tag).tag(*users.rsplit(":", 1))  # the user's own image of the second instance
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    given = write_rows(tmp_path / "preds.jsonl", [{"instance_id": r["instance_id"], "model_name_or_path": "m",
                                                   "model_patch": images.GOLD_PATCH} for r in rows])
    run = tmp_path / "results" / "predictions-preds"
    try:
        result = snakemake(tmp_path, "--config", f"dataset={dataset}", f"predictions={given}", "evaluation=docker",
                           "image_namespace=", "validate_gold=true", f"validation_cache={tmp_path / 'cache'}",
                           "min_free_disk_gb=0")
        assert sorted(jobs_run(result)).count("validate") == 2
        validations = [json.loads((run / "instances" / r["instance_id"] / "validation.json").read_text())
                       for r in rows]
        for validation in validations:
            assert_valid(validation, "validation")
        assert [(v["image"], v["validated"], v["built"]) for v in validations] == [(built, True, True),
                                                                                  (users, True, False)]
        for row in rows:
            evaluation = json.loads((run / "instances" / row["instance_id"] / "evaluation.json").read_text())
            assert evaluation["status"] == "resolved"
        assert not images.image_exists(client, built)  # removed once its evaluation was done
        assert images.image_exists(client, users)
        assert f"{built} removed: its evaluations are done" in (run / "logs" / rows[0]["instance_id"] /
                                                                "evaluate.log").read_text()
    finally:
        for name in (built, users):
            if images.image_exists(client, name):
                client.images.remove(name)

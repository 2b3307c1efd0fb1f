"""The evaluate stage in real Docker: the real snakemake runs the official SWE-bench harness
on SWE-bench-shaped instance images that tests/swebench_images.py builds."""
import json
import socket
import subprocess
import sys
import time
import urllib.request

import docker
import pytest

from scripts.evaluate import harness_run_id

import swebench_images as images
from conftest import PROJECT, assert_valid, jobs_run, read_rows, snakemake, write_rows

EVAL_TIMEOUT = 15  # seconds; the slow instance's test sleeps far longer, the others take 1 or 2
# instance id -> (predicted patch, test patch); each has its own image name, all of the one testbed image
CASES = {
    "psf__requests-90001": (images.GOLD_PATCH, images.TEST_PATCH),
    "psf__requests-90002": (images.WRONG_PATCH, images.TEST_PATCH),
    "psf__requests-90003": (images.MALFORMED_PATCH, images.TEST_PATCH),
    "psf__requests-90004": ("", images.TEST_PATCH),
    "psf__requests-90005": (images.GOLD_PATCH, images.SLOW_TEST_PATCH),
    "psf__requests-90006": (images.GOLD_PATCH, images.TEST_PATCH),  # no image under its name
}
NO_IMAGE = "psf__requests-90006"


@pytest.fixture(scope="session")
def testbed():
    """(the testbed image, base_commit), built once; the rows of CASES, their images named."""
    tag, base_commit = images.ensure_testbed_image()
    rows = {}
    for instance_id, (_, test_patch) in CASES.items():
        slow = test_patch == images.SLOW_TEST_PATCH
        rows[instance_id] = images.row(instance_id, base_commit, test_patch,
                                       ["test_calc.py::test_slow"] if slow else ["test_calc.py::test_add"])
        if instance_id != NO_IMAGE:
            images.tag_instance(tag, rows[instance_id])
    try:
        images.client().images.remove(images.instance_image(rows[NO_IMAGE]))
    except docker.errors.ImageNotFound:
        pass
    return tag, rows


def containers_created(since, until):
    events = images.client().events(since=since, until=until, decode=True,
                                    filters={"type": "container", "event": "create"})
    return [event["Actor"]["Attributes"]["name"] for event in events]


def report(run, instance_id):
    return json.loads((run / "instances" / instance_id / "evaluation.json").read_text())


def test_given_predictions_are_evaluated_by_the_harness_in_docker(tmp_path, testbed, monkeypatch):
    _, rows = testbed
    dataset = write_rows(tmp_path / "rows.jsonl", list(rows.values()))
    given = tmp_path / "preds.jsonl"
    write_rows(given, [{"instance_id": i, "model_name_or_path": "test-model", "model_patch": patch}
                       for i, (patch, _) in CASES.items()])
    config = ["--config", f"dataset={dataset}", f"predictions={given}", "evaluation=docker",
              f"eval_timeout={EVAL_TIMEOUT}", "min_free_disk_gb=1"]
    started = time.time()
    first = snakemake(tmp_path, *config)
    created = containers_created(started, time.time() + 1)
    assert jobs_run(first).count("evaluate") == 6

    run = tmp_path / "results" / "predictions-preds"
    assert {i: report(run, i)["status"] for i in CASES} == {
        "psf__requests-90001": "resolved", "psf__requests-90002": "unresolved", "psf__requests-90003": "patch_failed",
        "psf__requests-90004": "empty_patch", "psf__requests-90005": "timeout", "psf__requests-90006": "build_failed"}
    for instance_id in CASES:
        assert_valid(report(run, instance_id), "evaluate")
    assert report(run, "psf__requests-90003")["reason"].startswith("the patch does not apply: ")
    assert f"eval_timeout={EVAL_TIMEOUT} s" in report(run, "psf__requests-90005")["reason"]
    assert images.instance_image(rows[NO_IMAGE]) in report(run, NO_IMAGE)["reason"]
    resolved = report(run, "psf__requests-90001")
    assert resolved["resolved"] is True and resolved["report"]["tests_status"]["FAIL_TO_PASS"]["success"] == [
        "test_calc.py::test_add"]
    assert report(run, "psf__requests-90002")["report"]["tests_status"]["FAIL_TO_PASS"]["failure"] == [
        "test_calc.py::test_add"]

    # the harness's logs beside each report; none for the empty patch, which started no container
    logs = run / "instances" / "psf__requests-90001" / "evaluation"
    assert (logs / "patch.diff").read_text() == images.GOLD_PATCH
    assert "PASSED test_calc.py::test_add" in (logs / "test_output.txt").read_text()
    assert ">>>>> Applied Patch" in (logs / "run_instance.log").read_text()
    assert "Timeout error" in (run / "instances" / "psf__requests-90005" / "evaluation" / "test_output.txt").read_text()
    assert not (run / "instances" / "psf__requests-90004" / "evaluation").exists()
    harness_run = harness_run_id("predictions-preds", run)
    assert sorted(created) == sorted(f"sweb.eval.{i}.{harness_run}" for i in CASES if i not in (
        "psf__requests-90004", NO_IMAGE))
    # containers removed, images that were there kept
    client = images.client()
    assert [c.name for c in client.containers.list(all=True) if harness_run in c.name] == []
    for instance_id in CASES:
        if instance_id != NO_IMAGE:
            client.images.get(images.instance_image(rows[instance_id]))

    # evaluation.json is what the harness's own make_run_report makes of the same logs
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert_valid(evaluation, "evaluation")
    from swebench.harness.reporting import make_run_report

    harness_logs = tmp_path / "harness" / "logs" / "run_evaluation" / harness_run / "test-model"
    harness_logs.mkdir(parents=True)
    for instance_id in CASES:
        if (run / "instances" / instance_id / "evaluation").is_dir():
            (harness_logs / instance_id).symlink_to(run / "instances" / instance_id / "evaluation")
    monkeypatch.chdir(tmp_path / "harness")
    predictions = {p["instance_id"]: p for p in read_rows(run / "predictions.jsonl")}
    harness_report = json.loads(make_run_report(predictions, list(rows.values()), harness_run).read_text())
    assert {k: evaluation[k] for k in harness_report} == harness_report
    assert evaluation["patch_failed_ids"] == ["psf__requests-90003"]
    assert evaluation["timeout_ids"] == ["psf__requests-90005"] and evaluation["build_failed_ids"] == [NO_IMAGE]

    summary = json.loads((run / "summary.json").read_text())
    assert_valid(summary, "summary")
    assert summary["resolution"]["resolved"] == 1 and summary["resolution"]["rate"] == round(1 / 6, 4)
    assert summary["per_repo"] == [{"repo": "psf/requests", "selected": 6, "with_patch": 5, "resolved": 1,
                                    "resolved_rate": round(1 / 6, 4)}]
    assert {(f["instance_id"], f["reason"]) for f in summary["failures"] if f["stage"] == "evaluate"} == {
        ("psf__requests-90003", "patch_failed"), ("psf__requests-90005", "timeout"), (NO_IMAGE, "build_failed")}
    markdown = (run / "summary.md").read_text()
    assert "- resolved: 1 of 6 (16.7%)" in markdown and "| psf/requests | 6 | 5 | 1 (16.7%) |" in markdown

    # nothing changed: nothing runs; one patch changed: that instance alone is evaluated again
    assert jobs_run(snakemake(tmp_path, *config)) == []
    untouched = run / "instances" / "psf__requests-90001" / "evaluation.json"
    before = untouched.stat().st_mtime_ns
    write_rows(given, [{"instance_id": i, "model_name_or_path": "test-model",
                        "model_patch": images.GOLD_PATCH if i == "psf__requests-90002" else patch}
                       for i, (patch, _) in CASES.items()])
    changed = jobs_run(snakemake(tmp_path, *config))
    assert changed.count("evaluate") == 1 and changed.count("given_patch") == 1
    assert report(run, "psf__requests-90002")["status"] == "resolved"
    assert untouched.stat().st_mtime_ns == before
    assert json.loads((run / "summary.json").read_text())["resolution"]["resolved"] == 2


def test_generated_patches_are_evaluated_and_a_redone_one_alone_again(tmp_path, testbed):
    _, rows = testbed
    chosen = [rows["psf__requests-90001"], rows["psf__requests-90002"]]
    dataset = write_rows(tmp_path / "rows.jsonl", chosen)
    config = ["--config", f"dataset={dataset}", "evaluation=docker", "min_free_disk_gb=1"]
    snakemake(tmp_path, *config)
    run = tmp_path / "results" / "gold"
    assert [report(run, r["instance_id"])["status"] for r in chosen] == ["resolved", "resolved"]
    untouched = run / "instances" / "psf__requests-90001" / "evaluation.json"
    before = untouched.stat().st_mtime_ns
    (run / "instances" / "psf__requests-90002" / "response.json").unlink()
    redo = snakemake(tmp_path, *config)
    assert jobs_run(redo) == ["all", "evaluate", "evaluation", "figures", "generate", "patch", "predictions", "summary"]
    assert untouched.stat().st_mtime_ns == before
    assert report(run, "psf__requests-90002")["status"] == "resolved"


@pytest.fixture(scope="session")
def registry(tmp_path_factory, testbed):
    """A local image registry (Debian's docker-registry) holding the testbed image under the
    name of psf__requests-90001, so that the harness pulls it as it pulls from Docker Hub."""
    folder = tmp_path_factory.mktemp("registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "config.yml").write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    process = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    namespace = f"127.0.0.1:{port}/swebench"
    name = images.instance_image(testbed[1]["psf__requests-90001"], namespace)
    for _ in range(100):  # until the registry answers
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    client = images.client()
    client.images.get(testbed[0]).tag(*name.rsplit(":", 1))
    errors = [line["error"] for line in client.images.push(*name.rsplit(":", 1), stream=True, decode=True)
              if "error" in line]
    assert not errors, errors
    client.images.remove(name)
    yield namespace, name
    process.terminate()
    process.wait()


def test_pulled_images_are_removed_unless_kept(tmp_path, testbed, registry):
    namespace, name = registry
    row = testbed[1]["psf__requests-90001"]
    run = tmp_path / "results" / "r"
    from scripts.select import write_selection

    write_selection([row], run / "instances.jsonl", run / "instances.index.json")
    write_rows(run / "predictions.jsonl", [{"instance_id": row["instance_id"], "model_name_or_path": "m",
                                            "model_patch": images.GOLD_PATCH}])
    client = images.client()

    def evaluate(*extra):
        command = [sys.executable, "-m", "scripts.evaluate", "instance", "--backend", "docker",
                   "--instances", str(run / "instances.jsonl"), "--index", str(run / "instances.index.json"),
                   "--predictions", str(run / "predictions.jsonl"), "--id", row["instance_id"], "--run-id", "r",
                   f"--namespace={namespace}", "--out", str(run / "instances" / row["instance_id"] / "evaluation.json"),
                   *extra]
        subprocess.run(command, cwd=PROJECT, check=True, capture_output=True)
        return report(run, row["instance_id"])

    # the image is only in the registry: the harness pulls it, and it goes once evaluated
    assert evaluate()["status"] == "resolved"
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(name)
    assert evaluate("--keep-images")["status"] == "resolved"
    client.images.get(name)
    client.images.remove(name)

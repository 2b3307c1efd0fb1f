"""The evaluate stage in real Docker, and in podman through its Docker-compatible API: the real
snakemake runs the official SWE-bench harness on SWE-bench-shaped instance images that
tests/swebench_images.py builds. The tests that take `engine` run on both and expect the same."""
import json
import os
import subprocess
import sys
import time

import docker
import pytest

from scripts.evaluate import harness_run_id

import swebench_images as images
from conftest import PROJECT, assert_valid, jobs_run, read_rows, snakemake, write_rows
from loopback import LoopbackServer, QuietHandler
from registries import serve_registry

EVAL_TIMEOUT = 15  # seconds; the slow instance's test sleeps far longer, the others take 1 or 2
# instance id -> (predicted patch, test patch); each has its own image name, all of the one testbed image
CASES = {
    "psf__requests-90001": (images.GOLD_PATCH, images.TEST_PATCH),
    "psf__requests-90002": (images.WRONG_PATCH, images.TEST_PATCH),
    "psf__requests-90003": (images.MALFORMED_PATCH, images.TEST_PATCH),
    "psf__requests-90004": ("", images.TEST_PATCH),
    "psf__requests-90005": (images.GOLD_PATCH, images.SLOW_TEST_PATCH),
}
NO_IMAGE = "psf__requests-90006"  # pushed to no registry
# the engines each engine test runs on; podman's runs are marked so that `-m "not podman"` leaves them out
ENGINES = [engine if engine != "podman" else pytest.param(engine, marks=pytest.mark.podman) for engine in images.ENGINES]


@pytest.fixture(scope="session")
def testbed(engine):
    """(the testbed image, the rows of CASES), built once, in the engine, their images named."""
    tag, base_commit = images.ensure_testbed_image(engine.host)
    rows = {NO_IMAGE: images.row(NO_IMAGE, base_commit)}
    for instance_id, (_, test_patch) in CASES.items():
        slow = test_patch == images.SLOW_TEST_PATCH
        rows[instance_id] = images.row(instance_id, base_commit, test_patch,
                                       ["test_calc.py::test_slow"] if slow else ["test_calc.py::test_add"])
        images.tag_instance(tag, rows[instance_id], host=engine.host)
    return tag, rows


def containers_created(client, since, until):
    events = client.events(since=since, until=until, decode=True,
                                    filters={"type": "container", "event": "create"})
    return [event["Actor"]["Attributes"]["name"] for event in events]


def report(run, instance_id):
    return json.loads((run / "instances" / instance_id / "evaluation.json").read_text())


@pytest.mark.workflow
@pytest.mark.docker
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_given_predictions_are_evaluated_by_the_harness(tmp_path, engine, testbed, monkeypatch):
    rows = {i: testbed[1][i] for i in CASES}
    dataset = write_rows(tmp_path / "rows.jsonl", list(rows.values()))
    given = tmp_path / "preds.jsonl"
    write_rows(given, [{"instance_id": i, "model_name_or_path": "test-model", "model_patch": patch}
                       for i, (patch, _) in CASES.items()])
    config = ["--config", f"dataset={dataset}", f"predictions={given}", "evaluation=docker",
              f"eval_timeout={EVAL_TIMEOUT}", "min_free_disk_gb=1"]
    client = engine.client()
    started = time.time()
    first = snakemake(tmp_path, *config, env=engine.env)
    created = containers_created(client, started, time.time() + 1)
    assert jobs_run(first).count("evaluate") == 5

    run = tmp_path / "results" / "predictions-preds"
    assert {i: report(run, i)["status"] for i in CASES} == {
        "psf__requests-90001": "resolved", "psf__requests-90002": "unresolved", "psf__requests-90003": "patch_failed",
        "psf__requests-90004": "empty_patch", "psf__requests-90005": "timeout"}
    for instance_id in CASES:
        assert_valid(report(run, instance_id), "evaluate")
    assert report(run, "psf__requests-90003")["reason"].startswith("the patch does not apply: ")
    assert f"eval_timeout={EVAL_TIMEOUT} s" in report(run, "psf__requests-90005")["reason"]
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
    # the daemon may be shared: the containers of this run are those named with its harness run id
    assert sorted(name for name in created if harness_run in name) == sorted(
        f"sweb.eval.{i}.{harness_run}" for i in CASES if i != "psf__requests-90004")
    # containers removed, images that were there kept
    assert [c.name for c in client.containers.list(all=True) if harness_run in c.name] == []
    for instance_id in CASES:
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
    assert evaluation["timeout_ids"] == ["psf__requests-90005"] and evaluation["build_failed_ids"] == []

    summary = json.loads((run / "summary.json").read_text())
    assert_valid(summary, "summary")
    assert summary["resolution"]["resolved"] == 1 and summary["resolution"]["rate"] == round(1 / 5, 4)
    assert summary["per_repo"] == [{"repo": "psf/requests", "selected": 5, "with_patch": 4, "resolved": 1,
                                    "resolved_rate": round(1 / 5, 4)}]
    assert {(f["instance_id"], f["reason"]) for f in summary["failures"] if f["stage"] == "evaluate"} == {
        ("psf__requests-90003", "patch_failed"), ("psf__requests-90005", "timeout")}
    markdown = (run / "summary.md").read_text()
    assert "- resolved: 1 of 5 (20.0%)" in markdown and "| psf/requests | 5 | 4 | 1 (20.0%) |" in markdown

    # nothing changed: nothing runs; one patch changed: that instance alone is evaluated again
    assert jobs_run(snakemake(tmp_path, *config, env=engine.env)) == []
    untouched = run / "instances" / "psf__requests-90001" / "evaluation.json"
    before = untouched.stat().st_mtime_ns
    write_rows(given, [{"instance_id": i, "model_name_or_path": "test-model",
                        "model_patch": images.GOLD_PATCH if i == "psf__requests-90002" else patch}
                       for i, (patch, _) in CASES.items()])
    changed = jobs_run(snakemake(tmp_path, *config, env=engine.env))
    assert changed.count("evaluate") == 1 and changed.count("given_patch") == 1
    assert report(run, "psf__requests-90002")["status"] == "resolved"
    assert untouched.stat().st_mtime_ns == before
    assert json.loads((run / "summary.json").read_text())["resolution"]["resolved"] == 2


@pytest.mark.workflow
@pytest.mark.docker
def test_a_given_patch_that_is_not_a_diff_is_named_and_evaluated_as_given(tmp_path, testbed):
    _, rows = testbed
    chosen = [rows["psf__requests-90001"], rows["psf__requests-90002"]]
    dataset = write_rows(tmp_path / "rows.jsonl", chosen)
    prose = "The add function should return a + b instead of a - b."
    given = write_rows(tmp_path / "preds.jsonl", [
        {"instance_id": "psf__requests-90001", "model_name_or_path": "test-model", "model_patch": images.GOLD_PATCH},
        {"instance_id": "psf__requests-90002", "model_name_or_path": "test-model", "model_patch": prose}])
    snakemake(tmp_path, "--config", f"dataset={dataset}", f"predictions={given}", "evaluation=docker",
              f"eval_timeout={EVAL_TIMEOUT}", "min_free_disk_gb=1")
    run = tmp_path / "results" / "predictions-preds"
    assert report(run, "psf__requests-90001")["status"] == "resolved"
    assert report(run, "psf__requests-90002")["status"] == "patch_failed"  # the harness got the prose as it is
    assert "Only garbage was found in the patch input" in (
        run / "instances" / "psf__requests-90002" / "evaluation" / "run_instance.log").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert_valid(summary, "summary")
    assert summary["model"] == "test-model" and summary["counts"]["predictions"]["not_a_diff"] == 1
    assert [(f["instance_id"], f["stage"], f["reason"]) for f in summary["failures"]] == [
        ("psf__requests-90002", "predictions", "not a diff"), ("psf__requests-90002", "evaluate", "patch_failed")]
    assert summary["per_repo"][0]["with_patch"] == 1 and summary["resolution"]["resolved"] == 1


@pytest.mark.workflow
@pytest.mark.docker
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
def registry(tmp_path_factory, registry_ports):
    """A local image registry (Debian's docker-registry) holding the testbed image under the
    name of psf__requests-90001, so that the harness pulls it as it pulls from Docker Hub;
    Docker pushes it there. Yields (namespace, image name, the registry's storage)."""
    storage = tmp_path_factory.mktemp("registry") / "data"
    port = registry_ports[0]
    tag, base_commit = images.ensure_testbed_image()
    with serve_registry(storage, port):
        namespace = f"127.0.0.1:{port}/swebench"
        name = images.instance_image(images.row("psf__requests-90001", base_commit), namespace)
        client = images.client()
        client.images.get(tag).tag(*name.rsplit(":", 1))
        errors = [line["error"] for line in client.images.push(*name.rsplit(":", 1), stream=True, decode=True)
                  if "error" in line]
        assert not errors, errors
        client.images.remove(name)
        yield namespace, name, storage


class FailingRegistry(LoopbackServer):
    """A registry on 127.0.0.1:port that answers /v2/ as a registry does and every pull with
    `status`, with Docker Hub's error body (429 TOOMANYREQUESTS), or a 503."""

    BODIES = {429: {"errors": [{"code": "TOOMANYREQUESTS", "message": "You have reached your pull rate limit. You "
                                "may increase the limit by authenticating and upgrading: "
                                "https://www.docker.com/increase-rate-limit"}]},
              503: {"errors": [{"code": "UNAVAILABLE", "message": "service unavailable"}]}}

    def __init__(self, port, status):
        self.pulls = []
        registry = self

        class Handler(QuietHandler):
            def do_GET(self):
                status, body = (200, {}) if self.path == "/v2/" else (self.server.status, self.server.body)
                if self.path != "/v2/":
                    registry.pulls.append(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                if status == 429:  # podman retries a 429 after this (else after 2 s, doubling: 2 min in all)
                    self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_HEAD = do_GET

        super().__init__(Handler, port)
        self.httpd.status = status
        self.httpd.body = self.BODIES[status]
        # The daemon tries TLS first, then plain HTTP: the TLS hello is no HTTP request.
        self.httpd.handle_error = lambda request, address: None


@pytest.mark.workflow
@pytest.mark.docker
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_a_registry_fault_writes_no_verdict_and_a_rerun_pulls_again(tmp_path, engine, testbed, registry,
                                                                    registry_ports):
    _, _, storage = registry
    row = testbed[1]["psf__requests-90001"]
    port = registry_ports[1]
    image = images.instance_image(row, f"127.0.0.1:{port}/swebench")
    with pytest.raises(docker.errors.ImageNotFound):
        engine.client().images.get(image)
    dataset = write_rows(tmp_path / "rows.jsonl", [row])
    given = write_rows(tmp_path / "preds.jsonl", [{"instance_id": row["instance_id"], "model_name_or_path": "m",
                                                   "model_patch": images.GOLD_PATCH}])
    config = ["--config", f"dataset={dataset}", f"predictions={given}", "evaluation=docker",
              f"image_namespace=127.0.0.1:{port}/swebench", "min_free_disk_gb=1"]
    run = tmp_path / "results" / "predictions-preds"
    verdict = run / "instances" / row["instance_id"] / "evaluation.json"
    log = run / "logs" / row["instance_id"] / "pull.log"  # pulled ahead of its evaluation (rules/images.smk)

    for status, cause, fix in [(429, "registry_rate_limit", "log in (`docker login`)"),
                               (503, "registry_unavailable", "answered with a server error")]:
        with FailingRegistry(port, status) as failing:
            failed = snakemake(tmp_path, *config, env=engine.env, check=False)
        assert failed.returncode != 0
        assert failing.pulls  # the daemon asked, and was refused
        assert not verdict.exists()
        last = log.read_text().strip().splitlines()[-1]
        assert last.startswith(f"infrastructure fault: {cause}: ") and fix in last, last
        if status == 429:
            assert "set image_namespace= (empty) to build the images locally" in last and "toomanyrequests" in last
        status_text = subprocess.run([sys.executable, "-m", "scripts.status", "--run", str(run)], cwd=PROJECT,
                                     capture_output=True, text=True, check=True).stdout
        assert f"{row['instance_id']}  evaluate  {cause}" in status_text and "a rerun retries it" in status_text

    assert "infrastructure fault: registry_unavailable: " in failed.stderr  # snakemake shows the log

    # allow_partial: the instance is left out, the rest merged, and the summary names its cause
    partial = snakemake(tmp_path, *config, "allow_partial=true", env=engine.env)
    assert "evaluate" not in jobs_run(partial)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["missing"] == [{"instance_id": row["instance_id"], "stage": "evaluate",
                                   "file": str(verdict.relative_to(tmp_path)),
                                   "infrastructure_fault": "registry_unavailable"}]
    assert f"| {row['instance_id']} | evaluate | registry_unavailable |" in (run / "summary.md").read_text()

    # the same command, the registry now serving the image: pulled, evaluated, recorded
    with serve_registry(storage, port):
        rerun = snakemake(tmp_path, *config, env=engine.env)
    assert "evaluate" in jobs_run(rerun)
    assert report(run, row["instance_id"])["status"] == "resolved"
    assert json.loads((run / "summary.json").read_text())["missing"] == []


@pytest.mark.docker
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_pulled_images_are_removed_unless_kept(tmp_path, engine, testbed, registry):
    namespace, name, _ = registry
    row = testbed[1]["psf__requests-90001"]
    run = tmp_path / "results" / "r"
    from scripts.select import write_selection

    write_selection([row], run / "instances.jsonl", run / "instances.index.json")
    write_rows(run / "predictions.jsonl", [{"instance_id": row["instance_id"], "model_name_or_path": "m",
                                            "model_patch": images.GOLD_PATCH}])
    client = engine.client()

    def evaluate(*extra):
        command = [sys.executable, "-m", "scripts.evaluate", "instance", "--backend", "docker",
                   "--instances", str(run / "instances.jsonl"), "--index", str(run / "instances.index.json"),
                   "--predictions", str(run / "predictions.jsonl"), "--id", row["instance_id"], "--run-id", "r",
                   f"--namespace={namespace}", "--out", str(run / "instances" / row["instance_id"] / "evaluation.json"),
                   *extra]
        subprocess.run(command, cwd=PROJECT, check=True, capture_output=True, env={**os.environ, **engine.env})
        return report(run, row["instance_id"])

    # the image is only in the registry: the harness pulls it, and it goes once evaluated
    assert evaluate()["status"] == "resolved"
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(name)
    assert evaluate("--keep-images")["status"] == "resolved"
    client.images.get(name)
    client.images.remove(name)


@pytest.mark.docker
@pytest.mark.parametrize("engine", ENGINES, indirect=True)
def test_an_image_the_registry_does_not_have_is_a_fault(tmp_path, engine, testbed, registry):
    namespace, _, _ = registry
    row = testbed[1][NO_IMAGE]
    run = tmp_path / "results" / "r"
    from scripts.select import write_selection

    write_selection([row], run / "instances.jsonl", run / "instances.index.json")
    write_rows(run / "predictions.jsonl", [{"instance_id": NO_IMAGE, "model_name_or_path": "m",
                                            "model_patch": images.GOLD_PATCH}])
    command = [sys.executable, "-m", "scripts.evaluate", "instance", "--backend", "docker",
               "--instances", str(run / "instances.jsonl"), "--index", str(run / "instances.index.json"),
               "--predictions", str(run / "predictions.jsonl"), "--id", NO_IMAGE, "--run-id", "r",
               f"--namespace={namespace}", "--out", str(run / "instances" / NO_IMAGE / "evaluation.json")]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, env={**os.environ, **engine.env})
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("infrastructure fault: image_not_published: the registry has no such image"), last
    assert "manifest unknown" in last and images.instance_image(row, namespace) in last
    assert not (run / "instances" / NO_IMAGE / "evaluation.json").exists()

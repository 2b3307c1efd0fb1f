"""The evaluate stage without containers: preflight messages, empty patches, the merge,
the sb-cli backend against a loopback server standing in for the SWE-bench cloud API, and
the modal backend up to the harness call."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import requests

from scripts import evaluate

from conftest import LITE_TEST, PROJECT, read_rows, snakemake, write_rows
from loopback import LoopbackServer, QuietHandler

API_KEY = "sb-test-key"


class FakeCloud(LoopbackServer):
    """The three endpoints of the SWE-bench cloud evaluation that sb-cli's submit uses:
    POST /submit (one prediction), GET /poll-jobs, POST /get-report. Every submission is
    evaluated at once; `resolved` holds the ids it resolves; `fail_submit` answers 500."""

    def __init__(self, resolved=()):
        self.resolved = set(resolved)
        self.fail_submit = False
        self.submitted = {}  # (run_id, instance_id) -> prediction
        self.requests = []
        super().__init__(self._handler())

    def answer(self, path, body, key):
        if key != API_KEY:
            return 401, {"message": "invalid API key"}
        run = body["run_id"]
        ids = sorted(i for r, i in self.submitted if r == run)
        if path == "/submit":
            if self.fail_submit:
                return 500, {"message": "evaluation service unavailable"}
            instance_id = body["prediction"]["instance_id"]
            launched = (run, instance_id) not in self.submitted
            self.submitted.setdefault((run, instance_id), body["prediction"])
            return 200, {"launched": launched, "instance_id": instance_id}
        if path == "/poll-jobs":
            return 200, {"running": [], "completed": ids}
        if path == "/get-report":
            empty = [i for i in ids if not self.submitted[(run, i)]["model_patch"]]
            resolved = [i for i in ids if i in self.resolved and i not in empty]
            unresolved = [i for i in ids if i not in resolved and i not in empty]
            report = {"total_instances": 300, "submitted_instances": len(ids), "completed_instances": len(ids),
                      "resolved_instances": len(resolved), "unresolved_instances": len(unresolved),
                      "empty_patch_instances": len(empty), "error_instances": 0, "pending_instances": 0,
                      "failed_instances": 0, "resolved_ids": resolved, "unresolved_ids": unresolved,
                      "empty_patch_ids": empty, "error_ids": [], "completed_ids": ids}
            return 200, {"report": report, "run_id": run}
        return 404, {"message": f"no endpoint {path}"}

    def _handler(self):
        cloud = self

        class Handler(QuietHandler):
            def respond(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                cloud.requests.append({"method": self.command, "path": self.path, "body": body,
                                       "key": self.headers.get("x-api-key")})
                status, payload = cloud.answer(self.path, body, self.headers.get("x-api-key"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = respond

        return Handler


def lite_run(tmp_path, predictions):
    """A run folder with a selection of Lite rows and a merged predictions file, as the
    select and predictions stages leave it."""
    from scripts.select import write_selection

    rows = {r["instance_id"]: r for r in read_rows(LITE_TEST)}
    run = tmp_path / "results" / "r"
    (run / "instances").mkdir(parents=True)
    write_selection([rows[p["instance_id"]] for p in predictions], run / "instances.jsonl", run / "instances.index.json")
    write_rows(run / "predictions.jsonl", predictions)
    return run


def evaluate_cli(run, instance_id, backend, *extra, env=None):
    command = [sys.executable, "-m", "scripts.evaluate", "instance", "--backend", backend,
               "--instances", str(run / "instances.jsonl"), "--index", str(run / "instances.index.json"),
               "--predictions", str(run / "predictions.jsonl"), "--id", instance_id, "--run-id", "r",
               "--out", str(run / "instances" / instance_id / "evaluation.json"), *extra]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SWEBENCH_")}
    return subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, env={**full_env, **(env or {})})


def given(instance_id, patch, model="m"):
    return {"instance_id": instance_id, "model_name_or_path": model, "model_patch": patch}


# --- preflight ---

@pytest.mark.unit
def test_preflight_names_a_docker_daemon_that_does_not_answer(tmp_path):
    socket = tmp_path / "docker.sock"
    with pytest.raises(evaluate.PreflightError) as e:
        evaluate.preflight({"evaluation": "docker", "min_free_disk_gb": 0}, {"DOCKER_HOST": f"unix://{socket}"})
    assert f"needs a running Docker daemon, and none answers at unix://{socket}" in str(e.value)
    assert "evaluation=modal, sb-cli or none" in str(e.value)
    assert "for podman, start its API service" in str(e.value) and "set DOCKER_HOST" in str(e.value)


@pytest.mark.unit
def test_preflight_stops_below_the_free_disk_floor():
    with pytest.raises(evaluate.PreflightError, match=r"GB are free at .*, below min_free_disk_gb=1000000"):
        evaluate.preflight({"evaluation": "docker", "min_free_disk_gb": 1_000_000}, dict(os.environ))
    evaluate.preflight({"evaluation": "docker", "min_free_disk_gb": 0}, dict(os.environ))


@pytest.mark.unit
def test_preflight_of_sb_cli_wants_the_key_and_an_accepted_subset():
    config = {"evaluation": "sb-cli", "dataset": "lite", "split": "test"}
    with pytest.raises(evaluate.PreflightError, match="set the environment variable SWEBENCH_API_KEY"):
        evaluate.preflight(config, {})
    evaluate.preflight(config, {"SWEBENCH_API_KEY": "k"})
    for dataset, split in [("full", "test"), ("verified", "dev"), ("my_rows.jsonl", "test")]:
        with pytest.raises(evaluate.PreflightError, match=f"dataset={dataset} split={split} is not one of them"):
            evaluate.preflight({**config, "dataset": dataset, "split": split}, {"SWEBENCH_API_KEY": "k"})
    assert evaluate.sbcli_subset("SWE-bench/SWE-bench_Verified", "test") == "swe-bench_verified"
    assert evaluate.sbcli_subset("multimodal", "dev") == "swe-bench-m"


@pytest.mark.unit
def test_preflight_of_modal_wants_credentials(tmp_path):
    with pytest.raises(evaluate.PreflightError, match="run `modal token new`"):
        evaluate.preflight({"evaluation": "modal"}, {}, home=tmp_path)
    evaluate.preflight({"evaluation": "modal"}, {"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1"}, home=tmp_path)
    (tmp_path / ".modal.toml").write_text("[default]\ntoken_id = 'ak-1'\ntoken_secret = 'as-1'\n")
    evaluate.preflight({"evaluation": "modal"}, {}, home=tmp_path)


@pytest.mark.workflow
@pytest.mark.parametrize("config, env, message", [
    (["evaluation=docker"], {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, "needs a running Docker daemon"),
    (["evaluation=sb-cli", "dataset=lite"], {}, "set the environment variable SWEBENCH_API_KEY"),
    (["evaluation=modal"], {"HOME": "/nonexistent"}, "needs Modal credentials"),
])
def test_workflow_stops_before_any_job_when_the_backend_lacks_something(tmp_path, config, env, message):
    result = snakemake(tmp_path, "--config", f"dataset={LITE_TEST}", "count=1", *config, env=env, check=False)
    assert result.returncode != 0
    assert f"Cannot evaluate: evaluation={config[0].split('=')[1]}" in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "results").exists()
    # a dry run checks nothing it does not need
    dry = snakemake(tmp_path, "-n", "--config", f"dataset={LITE_TEST}", "count=1", *config, env=env)
    assert "select" in dry.stdout


# --- one instance, without a container ---

@pytest.mark.unit
def test_empty_patch_is_reported_without_the_backend(tmp_path):
    run = lite_run(tmp_path, [given("psf__requests-2317", "")])
    # a Docker daemon that does not exist: the empty patch never needs one
    result = evaluate_cli(run, "psf__requests-2317", "docker", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 0, result.stderr
    report = json.loads((run / "instances" / "psf__requests-2317" / "evaluation.json").read_text())
    assert report["status"] == "empty_patch" and report["resolved"] is False
    assert report["logs"] is None and report["report"] is None
    assert report["harness"].startswith("swebench 4.")
    assert not (run / "instances" / "psf__requests-2317" / "evaluation").exists()


@pytest.mark.unit
def test_repository_the_harness_does_not_know_is_an_error_result(tmp_path):
    row = {"instance_id": "example__calc-1", "repo": "example/calc", "version": "1.0"}
    record = evaluate.evaluate_instance("docker", row, given("example__calc-1", "diff --git a/x b/x\n"),
                                        tmp_path / "evaluation", "r.1", 60)
    assert record["status"] == "error"
    assert record["reason"].endswith("has no environment for repo example/calc version 1.0")


@pytest.mark.unit
def test_merge_keeps_the_harness_report_format():
    rows = [{"instance_id": i, "repo": "o/r"} for i in ("a-1", "a-2", "a-3", "a-4", "a-5")]
    statuses = {"a-1": "resolved", "a-2": "unresolved", "a-3": "empty_patch", "a-4": "patch_failed", "a-5": "timeout"}
    reports = {i: {"instance_id": i, "status": s} for i, s in statuses.items()}
    predictions = [given(i, "" if s == "empty_patch" else "diff") for i, s in statuses.items()]
    merged = evaluate.merge(rows, predictions, reports, "docker")
    assert merged["schema_version"] == 2
    assert (merged["resolved_ids"], merged["unresolved_ids"], merged["completed_ids"]) == (["a-1"], ["a-2"], ["a-1", "a-2"])
    assert merged["empty_patch_ids"] == ["a-3"] and merged["error_ids"] == ["a-4", "a-5"]
    assert (merged["patch_failed_ids"], merged["timeout_ids"], merged["build_failed_ids"]) == (["a-4"], ["a-5"], [])
    assert merged["total_instances"] == merged["submitted_instances"] == 5
    assert merged["status_counts"]["resolved"] == 1 and merged["status_counts"]["error"] == 0


# --- sb-cli against a loopback server ---

def sbcli_env(cloud):
    return {"SWEBENCH_API_URL": cloud.url, "SWEBENCH_API_KEY": API_KEY}


@pytest.mark.unit
def test_sb_cli_backend_submits_waits_and_reads_the_verdict(tmp_path):
    gold = {r["instance_id"]: r["patch"] for r in read_rows(LITE_TEST)}
    run = lite_run(tmp_path, [given("psf__requests-2317", gold["psf__requests-2317"]),
                              given("psf__requests-863", "diff --git a/a b/a\n")])
    with FakeCloud(resolved={"psf__requests-2317"}) as cloud:
        for instance_id in ("psf__requests-2317", "psf__requests-863"):
            result = evaluate_cli(run, instance_id, "sb-cli", "--dataset", "lite", "--split", "test", env=sbcli_env(cloud))
            assert result.returncode == 0, result.stdout + result.stderr
    reports = {i: json.loads((run / "instances" / i / "evaluation.json").read_text())
               for i in ("psf__requests-2317", "psf__requests-863")}
    assert reports["psf__requests-2317"]["status"] == "resolved"
    assert reports["psf__requests-863"]["status"] == "unresolved"
    assert reports["psf__requests-2317"]["harness"].startswith("sb-cli ")
    submit = [r for r in cloud.requests if r["path"] == "/submit"][0]
    assert submit["key"] == API_KEY
    assert submit["body"]["subset"] == "swe-bench_lite" and submit["body"]["split"] == "test"
    assert submit["body"]["run_id"] == "r" and submit["body"]["prediction"]["model_patch"] == gold["psf__requests-2317"]
    logs = run / "instances" / "psf__requests-2317" / "evaluation"
    assert json.loads((logs / "swe-bench_lite__test__r.json").read_text())["resolved_ids"] == ["psf__requests-2317"]


@pytest.mark.unit
def test_sb_cli_backend_resumes_a_submission_but_refuses_a_changed_patch(tmp_path):
    run = lite_run(tmp_path, [given("psf__requests-863", "diff --git a/a b/a\n")])
    with FakeCloud() as cloud:
        assert evaluate_cli(run, "psf__requests-863", "sb-cli", "--dataset", "lite", env=sbcli_env(cloud)).returncode == 0
        # the same patch again (a job killed after submitting): waits for the verdict already under way
        again = evaluate_cli(run, "psf__requests-863", "sb-cli", "--dataset", "lite", env=sbcli_env(cloud))
        assert again.returncode == 0, again.stderr
        write_rows(run / "predictions.jsonl", [given("psf__requests-863", "diff --git a/b b/b\n")])
        (run / "instances" / "psf__requests-863" / "evaluation.json").unlink()
        changed = evaluate_cli(run, "psf__requests-863", "sb-cli", "--dataset", "lite", env=sbcli_env(cloud))
    assert changed.returncode != 0
    assert "already holds a submission of psf__requests-863 with another patch" in changed.stderr
    assert "set another run_id" in changed.stderr
    assert not (run / "instances" / "psf__requests-863" / "evaluation.json").exists()


@pytest.mark.unit
def test_sb_cli_backend_fault_writes_nothing(tmp_path):
    run = lite_run(tmp_path, [given("psf__requests-863", "diff --git a/a b/a\n")])
    with FakeCloud() as cloud:
        cloud.fail_submit = True
        failed = evaluate_cli(run, "psf__requests-863", "sb-cli", "--dataset", "lite", env=sbcli_env(cloud))
        wrong_key = evaluate_cli(run, "psf__requests-863", "sb-cli", "--dataset", "lite",
                                 env={**sbcli_env(cloud), "SWEBENCH_API_KEY": "not-the-key"})
    # the service gone: a refused connection
    gone = evaluate_cli(run, "psf__requests-863", "sb-cli", "--dataset", "lite", env=sbcli_env(cloud))
    assert failed.returncode != 0 and "evaluation service unavailable" in failed.stderr
    assert wrong_key.returncode != 0 and "invalid API key" in wrong_key.stderr
    assert gone.returncode != 0 and "ConnectionError" in gone.stderr
    for result in (failed, wrong_key, gone):
        assert result.stderr.strip().splitlines()[-1].startswith("infrastructure fault: sb_cli: ")
        assert "a plain rerun retries it" in result.stderr
    assert not (run / "instances" / "psf__requests-863" / "evaluation.json").exists()


# --- modal, up to the harness call ---

@pytest.mark.unit
def test_modal_backend_gives_the_verdict_of_the_harness_s_remote_run(tmp_path, monkeypatch):
    """The harness's own run_instances_modal, with only Modal's remote call stood in, answering as
    run_instance_modal does: the instance's logs and report come back as its verdict."""
    import contextlib

    from swebench.harness.modal_eval import run_evaluation_modal as harness

    row = next(r for r in read_rows(LITE_TEST) if r["instance_id"] == "psf__requests-2317")
    prediction = given(row["instance_id"], row["patch"], model="org/model")
    verdict = {"patch_is_None": False, "patch_exists": True, "patch_successfully_applied": True, "resolved": True,
               "tests_status": {"FAIL_TO_PASS": {"success": ["test_a"], "failure": []}}}
    calls = []

    def starmap(arguments, return_exceptions):
        for test_spec, pred, run_id, timeout in arguments:
            calls.append((test_spec.instance_id, test_spec.repo, pred, run_id, timeout))
            yield harness.TestOutput(test_spec.instance_id, "the tests' output", json.dumps({test_spec.instance_id: verdict}),
                                     "the instance's log", pred["model_patch"],
                                     harness.get_log_dir(pred, run_id, test_spec.instance_id), False)

    monkeypatch.setattr(harness, "app", SimpleNamespace(run=contextlib.nullcontext))
    monkeypatch.setattr(harness, "run_instance_modal", SimpleNamespace(starmap=starmap))
    logs = tmp_path / "evaluation"
    assert evaluate.run_modal(row, prediction, "r.1234", 900, logs) == ("resolved", None, verdict)
    assert calls == [("psf__requests-2317", "psf/requests", prediction, "r.1234", 900)]
    assert (logs / "patch.diff").read_text() == row["patch"]
    assert (logs / "run_instance.log").read_text() == "the instance's log"
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation"]  # the harness's scratch folder is gone


@pytest.mark.unit
def test_harness_run_id_differs_between_run_folders(tmp_path):
    first = evaluate.harness_run_id("gold", tmp_path / "a" / "results" / "gold")
    second = evaluate.harness_run_id("gold", tmp_path / "b" / "results" / "gold")
    assert first != second and first.startswith("gold.") and "/" not in first


@pytest.mark.unit
def test_known_environment_is_none_for_a_specified_repo_version_and_an_error_result_otherwise():
    assert evaluate.known_environment({"repo": "psf/requests", "version": "2.0"}) is None
    status, reason, report = evaluate.known_environment({"repo": "psf/requests", "version": "0.0"})
    assert (status, report) == ("error", None)
    assert reason.endswith("has no environment for repo psf/requests version 0.0")


def swallowing_harness(signum):
    """A stand-in for the harness's run_instance, run in place of a validation's run_patch: it receives signum, as
    a job stopped by Snakemake or SLURM does, and swallows the interrupt as the harness's `finally` does."""
    def run_patch(*args, **kwargs):
        try:
            os.kill(os.getpid(), signum)
        except KeyboardInterrupt:
            pass
        return {"status": "resolved", "reason": None, "duration_s": 0, "failed_tests": None, "logs": None}
    return run_patch


@pytest.mark.unit
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_that_the_harness_swallows_ends_a_validation_with_nothing_cached(tmp_path, monkeypatch,
                                                                                        signum):
    import signal

    from scripts import images, validate

    row = {"instance_id": "psf__requests-2317", "repo": "psf/requests", "version": "2.0", "patch": "diff\n"}
    name = images.image_name(row, evaluate.IMAGE_DEFAULTS)
    record = tmp_path / "image.json"
    record.write_text(json.dumps({"image": name, "digest": "sha256:abc"}))
    monkeypatch.setattr(validate, "run_patch", swallowing_harness(getattr(signal, signum)))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        evaluate.catch_stop_signals()
        assert evaluate.stop_on_signal.received is None
        with pytest.raises(KeyboardInterrupt):
            validate.validate(row, tmp_path / "cache", "r.1", 60, {}, record)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert evaluate.stop_on_signal.received == getattr(signal, signum)
    assert not (tmp_path / "cache").exists()  # no outcome cached


# --- how an evaluation ends: the harness's own logs and docker-py's own exceptions, per cause ---

def daemon_error(status, message, path="images/create?tag=latest&fromImage=127.0.0.1%3A5000%2Fswebench%2Fx"):
    """The exception docker-py raises when the Docker daemon answers status with this message."""
    import docker
    import requests

    response = requests.Response()
    response.status_code, response.url = status, f"http+docker://localhost/v1.41/{path}"
    response.reason = {404: "Not Found", 500: "Internal Server Error"}.get(status, "Error")
    response._content = json.dumps({"message": message}).encode()
    try:
        response.raise_for_status()
    except requests.HTTPError as e:
        try:
            docker.errors.create_api_error_from_http_exception(e)
        except docker.errors.APIError as error:
            return error


class StubDocker:
    """Stands in for docker.DockerClient where the harness's run_instance reaches it: the instance
    image is not there, pulling it raises pull_error (or works), creating the container raises
    create_error."""

    def __init__(self, pull_error=None, create_error=None):
        import docker

        def missing(name):
            raise docker.errors.ImageNotFound(f"No such image: {name}")

        def fail(error):
            def call(*args, **kwargs):
                if error:
                    raise error
            return call

        self.images = SimpleNamespace(get=missing, pull=fail(pull_error))
        self.containers = SimpleNamespace(create=fail(create_error))


def harness_logs(tmp_path, monkeypatch, client, namespace="127.0.0.1:5000/swebench", build_output=None):
    """Run the harness's run_instance on client and return the instance's logs folder as the
    evaluate stage collects it; build_output: the chunks of a failed environment image build."""
    from swebench.harness.docker_build import BuildImageError, build_image
    from swebench.harness.run_evaluation import run_instance
    from swebench.harness.test_spec.test_spec import make_test_spec

    import swebench_images as images

    row = images.row("psf__requests-90001", "0" * 40)
    prediction = given(row["instance_id"], images.GOLD_PATCH)
    spec = make_test_spec(row, namespace=namespace)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    if build_output is not None:
        builder = SimpleNamespace(api=SimpleNamespace(build=lambda **kwargs: iter(build_output)))
        with pytest.raises(BuildImageError):
            build_image(spec.env_image_key, {"setup_env.sh": spec.setup_env_script}, spec.env_dockerfile,
                        spec.platform, builder, scratch / "logs" / "build_images" / "env" / "x")
    assert run_instance(spec, prediction, False, False, client, "r.1", 60)["completed"] is False
    evaluate.collect_logs(scratch, prediction, "r.1", tmp_path / "evaluation")
    return tmp_path / "evaluation"


RATE_LIMIT = ("toomanyrequests: You have reached your pull rate limit. You may increase the limit by "
              "authenticating and upgrading: https://www.docker.com/increase-rate-limit")
# what the Docker daemon 20.10 answered when pulling from loopback registries
PULL_ERRORS = {
    "registry_rate_limit": (500, RATE_LIMIT),
    "registry_unavailable": (500, "received unexpected HTTP status: 503 Service Unavailable"),
    "network": (500, 'Get "http://127.0.0.1:45999/v2/": dial tcp 127.0.0.1:45999: connect: connection refused'),
    "image_not_published": (404, "manifest for 127.0.0.1:5000/swebench/x:latest not found: manifest unknown: "
                                 "manifest unknown"),
    "out_of_disk": (500, "failed to register layer: Error processing tar file(exit status 1): write "
                         "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0: no space left on device"),
}


@pytest.mark.unit
@pytest.mark.parametrize("cause", sorted(PULL_ERRORS))
def test_a_pull_error_in_the_harness_log_is_a_fault_not_a_verdict(tmp_path, monkeypatch, cause):
    logs = harness_logs(tmp_path, monkeypatch, StubDocker(pull_error=daemon_error(*PULL_ERRORS[cause])))
    # the harness itself logs it as an error of the pull (or, for a 404, as a BuildImageError)
    assert "while pulling image" in (logs / "run_instance.log").read_text() or cause == "image_not_published"
    with pytest.raises(evaluate.EvaluationFault) as e:
        evaluate.classify(logs, "psf__requests-90001", 60)
    assert e.value.cause == cause
    assert str(e.value).startswith(evaluate.FIXES[cause])


@pytest.mark.unit
def test_the_fix_of_a_rate_limit_says_wait_log_in_or_build_locally():
    with pytest.raises(evaluate.EvaluationFault) as e:
        evaluate.raise_on_fault(str(daemon_error(500, RATE_LIMIT)))
    assert e.value.cause == "registry_rate_limit"
    assert "Wait and run again" in str(e.value) and "`docker login`" in str(e.value)
    assert "image_namespace= (empty) to build the images locally" in str(e.value) and "toomanyrequests" in str(e.value)


@pytest.mark.unit
@pytest.mark.parametrize("error, cause", [
    (daemon_error(500, "mkdir /var/lib/docker/overlay2/abc-init: no space left on device", "containers/create"),
     "out_of_disk"),
    (daemon_error(500, "failed to create shim task: OCI runtime create failed: runc create failed",
                  "containers/create"), "docker_daemon"),
    (daemon_error(500, "Conflict. The container name is already in use", "containers/create"), "docker_daemon"),
])
def test_a_daemon_error_on_the_container_is_a_fault(tmp_path, monkeypatch, error, cause):
    logs = harness_logs(tmp_path, monkeypatch, StubDocker(create_error=error))
    assert "BuildImageError" in (logs / "run_instance.log").read_text()  # which the harness calls a build error
    with pytest.raises(evaluate.EvaluationFault) as e:
        evaluate.classify(logs, "psf__requests-90001", 60)
    assert e.value.cause == cause


@pytest.mark.unit
def test_a_daemon_that_goes_away_is_a_fault(tmp_path, monkeypatch):
    import requests

    gone = requests.ConnectionError(("Connection aborted.", FileNotFoundError(2, "No such file or directory")))
    logs = harness_logs(tmp_path, monkeypatch, StubDocker(create_error=gone))
    with pytest.raises(evaluate.EvaluationFault) as e:
        evaluate.classify(logs, "psf__requests-90001", 60)
    assert e.value.cause == "docker_daemon" and "journalctl -u docker" in str(e.value)


PIP_OFFLINE = [
    {"stream": "Step 5/6 : RUN /bin/bash -c source ~/.bashrc && /root/setup_env.sh"},
    {"stream": "+ python -m pip install 'numpy==1.26.4'"},
    {"stream": "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after "
               "connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at "
               "0x7f>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': "
               "/simple/numpy/"},
    {"stream": "ERROR: Could not find a version that satisfies the requirement numpy==1.26.4 (from versions: none)"},
    {"errorDetail": {"message": "The command '/bin/sh -c /bin/bash -c source ~/.bashrc && /root/setup_env.sh' "
                                "returned a non-zero code: 1"}},
]
PIP_NO_SUCH_VERSION = [PIP_OFFLINE[0], PIP_OFFLINE[1],
                       {"stream": "ERROR: Could not find a version that satisfies the requirement numpy==0.0.1 "
                                  "(from versions: 1.3.0, 1.4.1, 1.26.4)"},
                       {"stream": "ERROR: No matching distribution found for numpy==0.0.1"}, PIP_OFFLINE[-1]]
APT_OFFLINE = [{"stream": "Step 2/6 : RUN apt update && apt install -y wget git"},
               {"stream": "Err:1 http://archive.ubuntu.com/ubuntu jammy InRelease\n  Temporary failure resolving "
                          "'archive.ubuntu.com'"},
               {"stream": "E: Unable to locate package wget"}, PIP_OFFLINE[-1]]
BASE_RATE_LIMITED = [{"stream": "Step 1/6 : FROM --platform=linux/x86_64 ubuntu:22.04"},
                     {"errorDetail": {"message": RATE_LIMIT}}]


@pytest.mark.unit
@pytest.mark.parametrize("output, outcome", [
    (PIP_OFFLINE, "network"), (APT_OFFLINE, "network"), (BASE_RATE_LIMITED, "registry_rate_limit"),
    (PIP_NO_SUCH_VERSION, "build_failed"),
])
def test_a_failed_local_build_is_a_fault_when_its_log_shows_one_and_recorded_otherwise(tmp_path, monkeypatch,
                                                                                         output, outcome):
    # images built locally (image_namespace empty): the environment image's build fails, then
    # run_instance finds no environment image to build the instance image on
    logs = harness_logs(tmp_path, monkeypatch, StubDocker(), namespace=None, build_output=output)
    assert (logs / "build_images" / "env" / "x" / "build_image.log").is_file()
    if outcome == "build_failed":
        status, reason, _ = evaluate.classify(logs, "psf__requests-90001", 60)
        assert status == "build_failed" and "Environment image sweb.env." in reason
        return
    with pytest.raises(evaluate.EvaluationFault) as e:
        evaluate.classify(logs, "psf__requests-90001", 60)
    assert e.value.cause == outcome


@pytest.mark.unit
def test_patch_text_and_test_output_are_never_read_for_faults(tmp_path, monkeypatch):
    """A patch and tests that print network errors (requests' own tests do) are judged as usual."""
    from swebench.harness.constants import APPLY_PATCH_FAIL

    logs = tmp_path / "evaluation"
    logs.mkdir()
    (logs / "run_instance.log").write_text(
        "2026-01-01 00:00:00,000 - INFO - Git diff before:\n+ raise ConnectionError('connection refused')\n"
        f"2026-01-01 00:00:01,000 - INFO - {APPLY_PATCH_FAIL}:\nerror: patch failed: calc.py:1\n"
        "2026-01-01 00:00:02,000 - INFO - Traceback (most recent call last):\n")
    assert evaluate.classify(logs, "x", 60)[0] == "patch_failed"
    (logs / "run_instance.log").write_text(f"{APPLY_PATCH_FAIL}:\nerror: calc.py: No space left on device\n")
    with pytest.raises(evaluate.EvaluationFault) as e:
        evaluate.classify(logs, "x", 60)
    assert e.value.cause == "out_of_disk"


@pytest.mark.unit
def test_an_error_with_no_cause_found_is_recorded(tmp_path):
    logs = tmp_path / "evaluation"
    logs.mkdir()
    (logs / "run_instance.log").write_text(
        "2026-01-01 00:00:00,000 - ERROR - Error in evaluating model for x: 'FAIL_TO_PASS'\n"
        "Traceback (most recent call last):\nKeyError: 'FAIL_TO_PASS'\n")
    assert evaluate.classify(logs, "x", 60)[:2] == ("error", "Error in evaluating model for x: 'FAIL_TO_PASS'")


@pytest.mark.unit
@pytest.mark.parametrize("answer", [requests.ConnectionError("Failed to resolve 'raw.githubusercontent.com'"),
                                    SimpleNamespace(status_code=429, text="rate limited")])
def test_the_harness_github_downloads_are_faults(monkeypatch, answer):
    """make_test_spec downloads a django row's requirements.txt: a network error, or an answer
    other than 200 (which the harness reports as a file it cannot find)."""
    from swebench.harness.test_spec import python as harness_python

    row = next(r for r in read_rows(LITE_TEST) if r["repo"] == "django/django")
    urls = []

    def get(url, **kwargs):
        urls.append(url)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(harness_python.requests, "get", get)
    harness_python.get_requirements_by_commit.cache_clear()
    with pytest.raises(evaluate.EvaluationFault) as e:  # before any Docker call: the client is never made
        evaluate.run_docker(row, given(row["instance_id"], "diff"), "r.1", 60, {"image_namespace": "swebench"}, False, None)
    harness_python.get_requirements_by_commit.cache_clear()
    assert urls and urls[0].startswith("https://raw.githubusercontent.com/django/django/")
    assert e.value.cause == "github_download" and "raw.githubusercontent.com" in str(e.value)


def hub_row(instance_id):
    import pyarrow.parquet

    table = pyarrow.parquet.read_table(LITE_TEST.parent / "hub" / "SWE-bench_Lite" / "test.parquet")
    return next(r for r in table.to_pylist() if r["instance_id"] == instance_id)


@pytest.mark.unit
def test_a_row_with_its_eval_script_downloads_nothing_from_github(monkeypatch):
    """A django row of the hub carries eval_script and image: its spec is the row's, and the
    harness's requirements download (which make_test_spec does for django) is never called."""
    from swebench.harness.test_spec import python as harness_python

    row = hub_row("django__django-11099")
    urls = []
    monkeypatch.setattr(harness_python.requests, "get", lambda url, **kwargs: urls.append(url))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    harness_python.get_requirements_by_commit.cache_clear()
    with pytest.raises(evaluate.EvaluationFault) as e:  # past the spec, at the first Docker call
        evaluate.run_docker(row, given(row["instance_id"], "diff"), "r.1", 60, {"image_namespace": "swebench"}, False, None)
    assert urls == [] and e.value.cause == "docker_daemon"

    spec = evaluate.row_test_spec(row)
    assert spec.eval_script == row["eval_script"].strip() + "\n" and spec.instance_image_key == "docker.io/" + row["image"]
    assert spec.FAIL_TO_PASS == json.loads(row["FAIL_TO_PASS"]) and spec.is_remote_image
    # without a namespace (images built here) the row takes the 4.1.0 specification, which downloads
    assert not evaluate.carries_eval_script(row, None) and evaluate.carries_eval_script(row)
    assert not evaluate.carries_eval_script({k: v for k, v in row.items() if k != "eval_script"})


@pytest.mark.unit
def test_a_row_is_graded_by_its_own_log_parser(monkeypatch):
    from swebench.harness import constants
    from swebench.harness.log_parsers import MAP_REPO_TO_PARSER

    monkeypatch.setitem(MAP_REPO_TO_PARSER, "psf/requests", MAP_REPO_TO_PARSER["psf/requests"])
    row = hub_row("psf__requests-2317")
    assert evaluate.use_row_grading({**row, "log_parser": "parse_log_pytest"}) is None
    assert MAP_REPO_TO_PARSER["psf/requests"].__name__ == "parse_log_pytest"
    monkeypatch.setattr(constants, "FAIL_ONLY_REPOS", set(constants.FAIL_ONLY_REPOS))
    new = {**row, "repo": "example/new", "version": "9.9", "log_parser": "parse_log_gotest", "eval_type": "fail_only"}
    monkeypatch.setitem(MAP_REPO_TO_PARSER, "example/new", MAP_REPO_TO_PARSER["psf/requests"])
    monkeypatch.setitem(constants.MAP_REPO_VERSION_TO_SPECS, "example/new", {})
    assert evaluate.use_row_grading(new) is None and MAP_REPO_TO_PARSER["example/new"].__name__ == "parse_log_gotest"
    assert "example/new" in constants.FAIL_ONLY_REPOS
    status, reason, _ = evaluate.use_row_grading({**row, "log_parser": "parse_log_nothing"})
    assert status == "error" and "log_parser 'parse_log_nothing' is no log parser of the harness" in reason


@pytest.mark.unit
def test_a_modal_call_that_gives_no_result_is_a_fault(tmp_path, monkeypatch):
    """The harness's starmap(return_exceptions=True) prints a remote exception and writes no log."""
    from swebench.harness import modal_eval

    row = next(r for r in read_rows(LITE_TEST) if r["instance_id"] == "psf__requests-2317")
    calls = []
    monkeypatch.setattr(modal_eval, "run_instances_modal", lambda **kwargs: calls.append(kwargs))
    with pytest.raises(evaluate.EvaluationFault) as e:
        evaluate.run_modal(row, given(row["instance_id"], row["patch"]), "r.1", 60, tmp_path / "evaluation")
    assert calls and e.value.cause == "modal" and "Result failed with error" in str(e.value)

    def unreachable(**kwargs):
        import modal.exception
        raise modal.exception.ConnectionError("Deadline exceeded connecting to api.modal.com")
    monkeypatch.setattr(modal_eval, "run_instances_modal", unreachable)
    with pytest.raises(evaluate.EvaluationFault) as e:
        evaluate.run_modal(row, given(row["instance_id"], row["patch"]), "r.1", 60, tmp_path / "evaluation")
    assert e.value.cause == "modal" and "Deadline exceeded" in str(e.value)


@pytest.mark.unit
def test_every_cause_of_the_table_has_a_class_and_a_text():
    classes = {cause: kind for cause, kind, _, _ in evaluate.ENDINGS}
    assert {c for c, k in classes.items() if k != evaluate.FAULT} == set(evaluate.STATUSES)
    assert all(text for _, _, _, text in evaluate.ENDINGS)

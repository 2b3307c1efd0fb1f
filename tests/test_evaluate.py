"""The evaluate stage without containers: preflight messages, empty patches, the merge,
the sb-cli backend against a loopback server standing in for the SWE-bench cloud API, and
the modal backend up to the harness call."""
import inspect
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts import evaluate

from conftest import LITE_TEST, PROJECT, read_rows, snakemake, write_rows

API_KEY = "sb-test-key"


class FakeCloud:
    """The three endpoints of the SWE-bench cloud evaluation that sb-cli's submit uses:
    POST /submit (one prediction), GET /poll-jobs, POST /get-report. Every submission is
    evaluated at once; `resolved` holds the ids it resolves; `fail_submit` answers 500."""

    def __init__(self, resolved=()):
        self.resolved = set(resolved)
        self.fail_submit = False
        self.submitted = {}  # (run_id, instance_id) -> prediction
        self.requests = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

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

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

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

def test_preflight_names_a_docker_daemon_that_does_not_answer(tmp_path):
    socket = tmp_path / "docker.sock"
    with pytest.raises(evaluate.PreflightError) as e:
        evaluate.preflight({"evaluation": "docker", "min_free_disk_gb": 0}, {"DOCKER_HOST": f"unix://{socket}"})
    assert f"needs a running Docker daemon, and none answers at unix://{socket}" in str(e.value)
    assert "evaluation=modal, sb-cli or none" in str(e.value)


def test_preflight_stops_below_the_free_disk_floor():
    with pytest.raises(evaluate.PreflightError, match=r"GB are free at .*, below min_free_disk_gb=1000000"):
        evaluate.preflight({"evaluation": "docker", "min_free_disk_gb": 1_000_000}, dict(os.environ))
    evaluate.preflight({"evaluation": "docker", "min_free_disk_gb": 0}, dict(os.environ))


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


def test_preflight_of_modal_wants_credentials(tmp_path):
    with pytest.raises(evaluate.PreflightError, match="run `modal token new`"):
        evaluate.preflight({"evaluation": "modal"}, {}, home=tmp_path)
    evaluate.preflight({"evaluation": "modal"}, {"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1"}, home=tmp_path)
    (tmp_path / ".modal.toml").write_text("[default]\ntoken_id = 'ak-1'\ntoken_secret = 'as-1'\n")
    evaluate.preflight({"evaluation": "modal"}, {}, home=tmp_path)


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


def test_repository_the_harness_does_not_know_is_an_error_result(tmp_path):
    row = {"instance_id": "example__calc-1", "repo": "example/calc", "version": "1.0"}
    record = evaluate.evaluate_instance("docker", row, given("example__calc-1", "diff --git a/x b/x\n"),
                                        tmp_path / "evaluation", "r.1", 60)
    assert record["status"] == "error"
    assert record["reason"].endswith("has no environment for repo example/calc version 1.0")


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


def test_sb_cli_backend_fault_writes_nothing(tmp_path):
    run = lite_run(tmp_path, [given("psf__requests-863", "diff --git a/a b/a\n")])
    with FakeCloud() as cloud:
        cloud.fail_submit = True
        failed = evaluate_cli(run, "psf__requests-863", "sb-cli", "--dataset", "lite", env=sbcli_env(cloud))
        wrong_key = evaluate_cli(run, "psf__requests-863", "sb-cli", "--dataset", "lite",
                                 env={**sbcli_env(cloud), "SWEBENCH_API_KEY": "not-the-key"})
    assert failed.returncode != 0 and "evaluation service unavailable" in failed.stderr
    assert wrong_key.returncode != 0 and "invalid API key" in wrong_key.stderr
    assert not (run / "instances" / "psf__requests-863" / "evaluation.json").exists()


# --- modal, up to the harness call ---

def test_modal_backend_hands_the_harness_one_instance():
    from swebench.harness.modal_eval import run_instances_modal
    from swebench.harness.test_spec.test_spec import make_test_spec

    row = next(r for r in read_rows(LITE_TEST) if r["instance_id"] == "psf__requests-2317")
    prediction = given(row["instance_id"], row["patch"])
    arguments = evaluate.modal_arguments(row, prediction, "r.1234", 900)
    # the harness's own signature takes them, and its first step, the test spec, works on the row
    inspect.signature(run_instances_modal).bind(**arguments)
    assert arguments["predictions"] == {"psf__requests-2317": prediction}
    assert arguments["instances"] == arguments["full_dataset"] == [row]
    assert (arguments["run_id"], arguments["timeout"]) == ("r.1234", 900)
    assert make_test_spec(row).instance_id == "psf__requests-2317"


def test_harness_run_id_differs_between_run_folders(tmp_path):
    first = evaluate.harness_run_id("gold", tmp_path / "a" / "results" / "gold")
    second = evaluate.harness_run_id("gold", tmp_path / "b" / "results" / "gold")
    assert first != second and first.startswith("gold.") and "/" not in first

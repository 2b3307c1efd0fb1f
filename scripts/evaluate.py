"""Evaluate: one instance's prediction through the official SWE-bench harness, and the merge.

`instance` evaluates one prediction of the merged predictions.jsonl and writes the
instance's evaluation.json, with the harness's logs (run_instance.log, test_output.txt, the
applied patch.diff, eval.sh, the harness's own report.json) in evaluation/ beside it.
Backends: docker (the harness's run_instance on the local Docker daemon), modal (the
harness's Modal backend) and sb-cli (the SWE-bench cloud evaluation, through the sb-cli
client). An empty patch is reported as such and starts nothing. The harness runs in a
scratch folder of its own, so it never finds an earlier report to skip to.

`merge` writes evaluation.json: the per-instance reports in the harness's run report
format (what make_run_report writes), with the failures split by reason.

`preflight` checks what a backend needs before any job runs.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from scripts import images
from scripts.common import (
    fault_line,
    find_jsonl_row,
    known_to_harness,
    now,
    read_json,
    read_jsonl,
    read_row,
    sample_folder,
    write_json_atomic,
)

BACKENDS = ("docker", "modal", "sb-cli")
# Outcomes; resolved and unresolved are the harness's verdicts, the others say why there is none.
STATUSES = ("resolved", "unresolved", "empty_patch", "patch_failed", "build_failed", "timeout", "error")
LOGS = "evaluation"  # the harness's logs, in the instance's folder
DOCKER_TIMEOUT = 600  # seconds of one Docker API call; pulls of images of several GB take long
# The subsets and splits the SWE-bench cloud evaluation accepts, by the names a dataset goes by.
SBCLI_SUBSETS = {
    "swe-bench_lite": ({"lite", "SWE-bench/SWE-bench_Lite", "princeton-nlp/SWE-bench_Lite"}, ("dev", "test")),
    "swe-bench_verified": ({"verified", "SWE-bench/SWE-bench_Verified", "princeton-nlp/SWE-bench_Verified"}, ("test",)),
    "swe-bench-m": ({"multimodal", "SWE-bench/SWE-bench_Multimodal", "princeton-nlp/SWE-bench_Multimodal"},
                    ("dev", "test")),
}
SBCLI_WAIT = 3 * 3600  # seconds to wait for the cloud to finish one instance
# The image settings (images.image_name) of a call that gives none: Docker Hub's images, as the config's defaults.
IMAGE_DEFAULTS = {"image_source": None, "image_namespace": "swebench", "image_arch": "x86_64", "min_free_disk_gb": 0,
                  "pull_wait": 900}


class PreflightError(Exception):
    pass


class EvaluationFault(Exception):
    """A fault of the machinery, not of the patch: the job fails and writes nothing, so a plain
    rerun tries again. `cause` is a cause of ENDINGS."""

    def __init__(self, cause, message):
        super().__init__(message)
        self.cause = cause


# How an evaluation ends, read top to bottom. A verdict is recorded in evaluation.json; so is a
# recorded outcome, which is no verdict on the patch but would come out the same on every rerun.
# A fault is the machinery's: nothing is written, the job fails with the fix, a plain rerun
# retries it. The patterns (case-insensitive) are looked for only in error text: a pull's or an
# API's error, run_instance.log from its first traceback or ERROR line on, the end of a failed
# image build's log; never in the tests' output or the patch. The first fault that matches wins.
VERDICT, RECORDED, FAULT = "verdict", "recorded", "fault"
DAEMON_FIX = "the Docker daemon failed. Check `docker info` and the daemon's log (`journalctl -u docker`), and run again"
ENDINGS = (
    # cause, class, pattern, what it means (a verdict) or the fix (a fault)
    ("resolved", VERDICT, None, "the harness's report.json: FAIL_TO_PASS and PASS_TO_PASS pass"),
    ("unresolved", VERDICT, None, "the harness's report.json: some test of FAIL_TO_PASS or PASS_TO_PASS fails"),
    ("empty_patch", VERDICT, None, "the prediction has no patch; no container is started"),
    ("patch_failed", VERDICT, None, "run_instance.log: git apply and patch --fuzz=5 both reject the patch"),
    ("timeout", VERDICT, None, "the tests ran past eval_timeout (`Timeout error:` in test_output.txt)"),
    ("registry_rate_limit", FAULT, r"toomanyrequests|too many requests|pull rate limit",
     "the image registry limits pulls (Docker Hub: 100 per 6 hours without a login). Wait and run again, "
     "log in (`docker login`) for a higher limit, or set image_namespace= (empty) to build the images locally"),
    ("out_of_disk", FAULT, r"no space left on device|disk quota exceeded",
     "the Docker disk is full. Free space (`docker image prune -a`, `docker builder prune`) and run again"),
    ("image_not_published", FAULT,
     r"manifest unknown|not found: manifest|repository does not exist|pull access denied|"
     r"requested access to the resource is denied",
     "the registry has no such image. Check image_namespace, or set image_namespace= (empty) to build it locally"),
    ("registry_unavailable", FAULT, r"received unexpected HTTP status: 5\d\d",
     "the image registry answered with a server error. Run again later"),
    # a daemon that does not answer, before the network row: its read timeouts say "timed out" too
    ("docker_daemon", FAULT,
     r"Cannot connect to the Docker daemon|UnixHTTPConnectionPool|Error while fetching server API version|"
     r"OCI runtime|failed to create shim|No such container", DAEMON_FIX),
    ("network", FAULT,
     r"dial tcp|i/o timeout|TLS handshake timeout|connection refused|connection reset|timed out|"
     r"Temporary failure in name resolution|temporary failure resolving|Could not resolve|Name or service not known|"
     r"Network is unreachable|Failed to establish a new connection|Could not fetch URL|Failed to fetch http|"
     r"HTTP error 5\d\d|CondaHTTPError|CONNECTION FAILED|RemoteDisconnected|early EOF|unable to access 'http",
     "a download failed on the network (an image pull, or pip, conda, apt or git in an image build). Check the "
     "connection (and a proxy: HTTP_PROXY of the Docker daemon) and run again"),
    # any other error of the daemon's API
    ("docker_daemon", FAULT, r"Connection aborted|Server Error for (url: )?http\+docker|Error response from daemon",
     DAEMON_FIX),
    ("github_download", FAULT, r"Could not find (requirements\.txt|environment\.yml) at paths",
     "the harness could not download the instance's requirements.txt or environment.yml from "
     "raw.githubusercontent.com (a network error, or GitHub's limit on anonymous downloads). Run again later"),
    ("modal", FAULT, r"Error creating sandbox|modal\.exception|grpclib|SandboxTerminated",
     "the Modal backend failed (its service, the connection, or an image build there). Check "
     "`modal token info` and https://status.modal.com, and run again"),
    ("sb_cli", FAULT, None,
     "the SWE-bench cloud evaluation failed or refused the request (its service, the connection, the API key). "
     "Check SWEBENCH_API_KEY (`sb-cli verify-api-key`) and run again"),
    ("build_failed", RECORDED, r"BuildImageError|Error building image|Environment image .* not found",
     "the environment image does not build from its recipe for a reason that is not the network, the disk or "
     "the daemon: a rerun would fail the same way; retry_failed=true builds it again"),
    ("error", RECORDED, None,
     "the harness gave no report, no cause above is found and the Docker daemon answers (an instance the "
     "harness cannot run, a harness error): a rerun would fail the same way; retry_failed=true runs it again"),
)
FIXES = {cause: text for cause, kind, _, text in ENDINGS if kind == FAULT}


def find_fault(text):
    """(cause, the line that shows it) of the first fault of ENDINGS whose pattern is in text, or None."""
    for cause, kind, pattern, _ in ENDINGS:
        if kind == FAULT and pattern:
            for line in text.splitlines():
                if re.search(pattern, line, re.IGNORECASE):
                    return cause, line
    return None


def fault(cause, detail):
    """The EvaluationFault of cause: its fix, with what showed it."""
    return EvaluationFault(cause, f"{FIXES[cause]} ({_one_line(detail, 300)})")


def raise_on_fault(text):
    found = find_fault(text)
    if found:
        raise fault(*found)


# --- preflight ---

def preflight(config, environ, home=None):
    """Raise PreflightError saying what is missing for config's evaluation backend."""
    backend = config["evaluation"]
    if backend == "docker":
        docker_preflight(config["min_free_disk_gb"], environ)
    elif backend == "modal":
        modal_preflight(environ, Path(home or Path.home()))
    elif backend == "sb-cli":
        sbcli_subset(config["dataset"], config["split"])
        if not environ.get("SWEBENCH_API_KEY"):
            raise PreflightError(
                "evaluation=sb-cli needs an API key of the SWE-bench cloud evaluation: set the environment "
                "variable SWEBENCH_API_KEY (`sb-cli gen-api-key EMAIL` makes one).")


def docker_preflight(min_free_gb, environ):
    import docker

    address = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(environment=environ, timeout=10)
        client.ping()
        root = client.info()["DockerRootDir"]
    except Exception as e:
        raise PreflightError(
            f"evaluation=docker needs a running Docker daemon, and none answers at {address} ({e}). "
            "Start it (`sudo systemctl start docker`, or `sudo dockerd &`); for podman, start its API service "
            "(`podman system service --time=0 unix:///run/podman/podman.sock &`) and set DOCKER_HOST to that "
            "address; or choose another backend: evaluation=modal, sb-cli or none.") from None
    free_gb = images.free_disk_gb(client)
    if free_gb is not None:  # a remote daemon's disk cannot be seen from here
        if free_gb < min_free_gb:
            raise PreflightError(
                f"only {free_gb:.1f} GB are free at {root}, below min_free_disk_gb={min_free_gb}; SWE-bench "
                "instance images take GBs each. Free space (`docker image prune -a` removes unused images) "
                "or lower min_free_disk_gb.")


def modal_preflight(environ, home):
    if environ.get("MODAL_TOKEN_ID") and environ.get("MODAL_TOKEN_SECRET"):
        return
    if not (home / ".modal.toml").is_file():
        raise PreflightError(
            "evaluation=modal needs Modal credentials: run `modal token new` (it writes ~/.modal.toml), "
            "or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET.")


def sbcli_subset(dataset, split):
    """The cloud evaluation's subset of a dataset and split, or PreflightError."""
    for subset, (names, splits) in SBCLI_SUBSETS.items():
        if dataset in names and split in splits:
            return subset
    raise PreflightError(
        f"evaluation=sb-cli evaluates only the subsets the SWE-bench cloud accepts: lite (split dev or test), "
        f"verified (test) and multimodal (dev or test); dataset={dataset} split={split} is not one of them. "
        "Use evaluation=docker or modal for it.")


# --- one instance ---

def patch_sha256(patch):
    return hashlib.sha256((patch or "").encode()).hexdigest()


def harness_run_id(run_id, run_dir):
    """The harness's run id: names its containers, so two folders running the same run id
    (each with their own results) never take each other's containers."""
    return f"{run_id}.{hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:8]}"


@contextlib.contextmanager
def scratch_directory(parent):
    """A new working directory under parent for the harness, which writes logs/ relative to it."""
    Path(parent).mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(dir=parent, prefix=".harness.")
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield Path(folder)
    finally:
        os.chdir(previous)
        shutil.rmtree(folder, ignore_errors=True)


def collect_logs(scratch, prediction, harness_run, destination):
    """Move the harness's logs of the instance from scratch to destination; return whether there were any."""
    from swebench.harness.constants import RUN_EVALUATION_LOG_DIR

    model = (prediction.get("model_name_or_path") or "None").replace("/", "__")
    source = scratch / RUN_EVALUATION_LOG_DIR / harness_run / model / prediction["instance_id"]
    builds = scratch / "logs" / "build_images"
    if not source.is_dir() and not builds.is_dir():
        return False
    destination.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        for item in source.iterdir():
            if not item.is_symlink():  # image_build_dir points into scratch
                shutil.move(item, destination / item.name)
    if builds.is_dir():
        shutil.move(builds, destination / "build_images")
    return True


def classify(log_dir, instance_id, timeout):
    """(status, reason, the harness's report of the instance or None) from the harness's logs, by
    ENDINGS; EvaluationFault when they show a fault of the machinery."""
    from swebench.harness.constants import APPLY_PATCH_FAIL

    report = log_dir / "report.json"
    if report.is_file() and report.stat().st_size:  # the Modal backend leaves it empty when it has none
        verdict = read_json(report)[instance_id]
        return ("resolved" if verdict["resolved"] else "unresolved"), None, verdict
    log = _text(log_dir / "run_instance.log")
    if APPLY_PATCH_FAIL in log:
        output = re.split(r"\n\d{4}-\d\d-\d\d ", log.split(APPLY_PATCH_FAIL, 1)[1], maxsplit=1)[0]
        if re.search(r"no space left on device", output, re.IGNORECASE):  # git could not write the files
            raise fault("out_of_disk", output)
        return "patch_failed", f"the patch does not apply: {_one_line(output.strip(': '))}", None
    if "Timeout error:" in _text(log_dir / "test_output.txt") or "Test timed out after" in log:
        return "timeout", f"the tests ran longer than eval_timeout={timeout} s", None
    errors = harness_errors(log) + failed_builds(log_dir)
    raise_on_fault(errors)
    built = [line.split("BuildImageError: ", 1)[1] for line in log.splitlines() if "BuildImageError: " in line]
    if built or re.search(r"Error building image|Environment image .* not found", errors):
        return "build_failed", f"the environment could not be built: {_one_line((built or [errors])[-1])}", None
    lines = [line.split(" - ERROR - ", 1)[1] for line in log.splitlines() if " - ERROR - " in line]
    return "error", (_one_line(lines[-1]) if lines else "the harness gave no report; see its run_instance.log"), None


def harness_errors(log):
    """run_instance.log from its first traceback or ERROR line on: the harness's error, past the
    patch and the git diffs it logs before."""
    start = re.search(r"^Traceback \(most recent call last\)|^\S+ \S+ - ERROR - ", log, re.MULTILINE)
    return log[start.start():] if start else ""


def failed_builds(log_dir, lines=40):
    """The last lines of each image build log that does not end in success (local builds)."""
    tails = []
    for path in sorted((log_dir / "build_images").rglob("build_image.log")):
        text = _text(path).rstrip()
        if not text.endswith("Image built successfully!"):
            tails += text.splitlines()[-lines:]
    return "\n".join(tails)


def _one_line(text, limit=400):
    return " ".join(text.split())[:limit]


def _text(path):
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def pull(client, image):
    """Pull image, or raise the EvaluationFault its error shows. Pulled here rather than by the
    harness, which records any pull error as a build failure; the daemon sends an error that
    comes after the first progress line in the stream, which docker-py's images.pull ignores."""
    import docker
    import requests

    repository, tag = image.rsplit(":", 1)
    try:
        for line in client.api.pull(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise docker.errors.APIError(line["error"])
    except (docker.errors.DockerException, requests.RequestException) as e:
        message = getattr(e, "explanation", None) or str(e)  # the daemon's message, without the API's URL
        found = find_fault(message)
        raise fault(found[0] if found else "network", f"pulling {image}: {message}") from e


def pull_image(client, name, image_settings, run_dir, log):
    """images.pull_image with this module's pull; its stops and the registry API's errors as the EvaluationFault
    of their cause."""
    import requests

    try:
        return images.pull_image(client, name, image_settings, run_dir, log, pull)
    except images.PullStopped as e:
        raise fault(e.cause, str(e)) from e
    except requests.RequestException as e:  # the registry's API, before the daemon's pull
        raise fault("network", f"asking {images.split(name)[0]} about {name}: {e}") from e


def check_disk(client, min_free_gb, what):
    try:
        images.check_disk(client, min_free_gb, 0, what)
    except images.PullStopped as e:
        raise fault(e.cause, str(e)) from e


def pull_stage(row, settings, run_dir, out):
    """Pull the row's image and write its record to out; a fault fails the job with its cause and writes nothing.
    What it does goes to stdout (the job's log)."""
    import docker

    def log(message):
        print(f"{now()} {row['instance_id']}: {message}", flush=True)

    try:
        name = images.image_name(row, settings)
    except images.ImageError as e:
        sys.exit(f"pull {row['instance_id']}: {e}")
    try:
        try:
            client = docker.from_env(timeout=600)
        except docker.errors.DockerException as e:
            raise fault("docker_daemon", str(e)) from e
        image, pulled = pull_image(client, name, settings, run_dir, log)
    except EvaluationFault as e:  # the last line of the log, which scripts.status reads
        sys.exit(f"pull {row['instance_id']}: {name} not pulled; nothing written; a plain rerun retries it.\n"
                 f"{fault_line(e.cause, e)}")
    # pulled by this run, earlier, or by another run beside it (a model of several): the workflow's to remove
    entry = images.record(image, name, pulled or images.pulled_by_workflow(run_dir, name))
    write_json_atomic(out, entry)
    log(f"{name}: {'pulled' if pulled else 'already here'}, {entry['size_bytes'] / 1e9:.2f} GB, {entry['digest']}")


def carries_eval_script(row, image="prebuilt"):
    """Whether row is evaluated as harness 5.x does, with its own eval_script and log_parser (the
    hub's rows carry them, with an image): unless images are to be built here (no image name),
    which takes the 4.1.0 specification's scripts."""
    return bool(row.get("eval_script") and row.get("image")) and image is not None


def named_image(spec, image):
    """The harness's TestSpec spec evaluated in the image of that name (images.image_name), which the
    harness would otherwise name from its namespace and the instance id."""
    from swebench.harness.test_spec.test_spec import TestSpec

    @dataclass
    class NamedImageSpec(TestSpec):
        image: str = ""

        @property
        def instance_image_key(self):
            return self.image

        @property
        def is_remote_image(self):
            return True

    return NamedImageSpec(**{field.name: getattr(spec, field.name) for field in dataclasses.fields(TestSpec)},
                          image=image)


def row_test_spec(row, image=None, arch="x86_64"):
    """The harness's TestSpec of a row that carries its eval script: the row's script, in image (by
    default the row's own), nothing computed from the harness's specifications and nothing downloaded."""
    from swebench.harness.test_spec.test_spec import TestSpec

    def tests(value):
        return json.loads(value) if isinstance(value, str) else list(value or [])

    lines = [line for line in row["eval_script"].strip().split("\n") if line not in ("#!/bin/bash", "set -uxo pipefail")]
    spec = TestSpec(
        instance_id=row["instance_id"], repo=row["repo"], version=row.get("version"), repo_script_list=[],
        eval_script_list=lines, env_script_list=[], arch=arch, FAIL_TO_PASS=tests(row["FAIL_TO_PASS"]),
        PASS_TO_PASS=tests(row["PASS_TO_PASS"]), language="", docker_specs={}, namespace=None)
    return named_image(spec, image or images.qualified_name(row["image"]))


def use_row_grading(row):
    """Make the harness grade row by its own log_parser and eval_type, as harness 5.x does;
    4.1.0 looks them up by repository. The error result when the harness has no such parser."""
    from swebench.harness.constants import FAIL_ONLY_REPOS, MAP_REPO_VERSION_TO_SPECS
    from swebench.harness.log_parsers import MAP_REPO_TO_PARSER

    modules = {sys.modules[parser.__module__] for parser in MAP_REPO_TO_PARSER.values()}
    parsers = [getattr(m, row.get("log_parser") or "", None) for m in modules]
    parser = next((p for p in parsers if callable(p)), None)
    if parser is None:
        return ("error", f"the row's log_parser {row.get('log_parser')!r} is no log parser of the harness "
                f"(swebench {importlib.metadata.version('swebench')})", None)
    MAP_REPO_TO_PARSER[row["repo"]] = parser
    # get_logs_eval reads the specification's test_cmd, which a row's eval script makes unneeded
    MAP_REPO_VERSION_TO_SPECS.setdefault(row["repo"], {}).setdefault(row.get("version"), {"test_cmd": ""})
    if row.get("eval_type") == "fail_only":
        FAIL_ONLY_REPOS.add(row["repo"])
    else:
        FAIL_ONLY_REPOS.discard(row["repo"])
    return None


def run_docker(row, prediction, harness_run, timeout, image_settings, keep_images, logs, run_dir=None,
               recorded=False):
    """Evaluate with the harness's run_instance in the image that image_settings name (images.image_name),
    pulled at the registry's pace when it is not on the daemon, or built here; returns (status, reason,
    harness report). recorded: the pull stage or the validation recorded the image (its clean-up is the run's, not
    the harness's)."""
    import docker
    import requests
    from swebench.harness.docker_build import BuildImageError, build_env_images
    from swebench.harness.run_evaluation import run_instance
    from swebench.harness.test_spec.test_spec import make_test_spec

    image_settings = {**IMAGE_DEFAULTS, **image_settings}
    name = images.image_name(row, image_settings)
    arch = image_settings["image_arch"]
    try:
        spec = (
            row_test_spec(row, name, arch)
            if carries_eval_script(row, name)
            else make_test_spec(row, namespace=None, arch=arch)
        )
        if name:
            spec = named_image(spec, name)
    except (requests.RequestException, ValueError) as e:  # for some repos it reads requirements files from GitHub
        if isinstance(e, ValueError) and not find_fault(str(e)):
            raise
        raise fault("github_download", str(e)) from e
    try:
        client = docker.from_env(timeout=DOCKER_TIMEOUT)
        try:  # a container left by a killed job of this instance
            client.containers.get(spec.get_instance_container_name(harness_run)).remove(force=True)
        except docker.errors.NotFound:
            pass
        try:
            client.images.get(spec.instance_image_key)
            image_was_there = True
        except docker.errors.ImageNotFound:
            image_was_there = False
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise fault("docker_daemon", str(e)) from e
    if name and not image_was_there:  # removed by the clean-up after another evaluation of it: pulled again
        pull_image(client, name, image_settings, run_dir or str(logs.parents[2]), print)
    check_disk(client, image_settings["min_free_disk_gb"], f"the evaluation of {row['instance_id']}")
    with scratch_directory(logs.parent) as scratch:
        try:
            if name is None:  # built here, as the harness's own run does before run_instance
                build_env_images(client, [row], False, 1, None, spec.instance_image_tag, spec.env_image_tag)
        except BuildImageError as e:
            collect_logs(scratch, prediction, harness_run, logs)
            raise_on_fault(str(e) + "\n" + failed_builds(logs))
            return "build_failed", f"the environment could not be built: {_one_line(str(e))}", None
        # Images that were here before are the user's; the others go unless keep_images: a recorded one (pulled by
        # the pull stage, or built by the validation) once no evaluation of the run needs it any more (release_image).
        run_instance(spec, prediction, not keep_images and not image_was_there and not recorded, False, client,
                     harness_run, timeout)
        collect_logs(scratch, prediction, harness_run, logs)
    outcome = classify(logs, row["instance_id"], timeout)
    if outcome[0] == "error":
        try:
            client.ping()
        except Exception as e:  # the daemon went away during the run
            raise fault("docker_daemon", f"it stopped answering during the run: {e}") from e
    return outcome


def modal_arguments(row, prediction, harness_run, timeout):
    """The arguments of the harness's run_instances_modal for this one instance."""
    return {"predictions": {row["instance_id"]: prediction}, "instances": [row], "full_dataset": [row],
            "run_id": harness_run, "timeout": timeout}


def run_modal(row, prediction, harness_run, timeout, logs):
    from swebench.harness.modal_eval import run_instances_modal

    with scratch_directory(logs.parent) as scratch:
        try:
            run_instances_modal(**modal_arguments(row, prediction, harness_run, timeout))
        except Exception as e:  # Modal unreachable or refusing, or the test spec's downloads
            found = find_fault(str(e))
            raise fault(found[0] if found and found[0] == "github_download" else "modal", f"{type(e).__name__}: {e}") from e
        collect_logs(scratch, prediction, harness_run, logs)
    if not (logs / "run_instance.log").is_file():
        # the harness's starmap(return_exceptions=True) prints a remote exception and goes on
        raise fault("modal", "the remote call gave no result; the harness printed its exception above "
                             "(`Result failed with error: ...`)")
    return classify(logs, row["instance_id"], timeout)


def run_sbcli(prediction, subset, split, cloud_run, api_key, logs, previous_submission):
    """Submit the prediction to the cloud run, wait for its evaluation and read the run's report."""
    import requests
    from sb_cli.get_report import get_report
    from sb_cli.submit import submit_prediction, wait_for_evaluation

    instance_id, digest = prediction["instance_id"], patch_sha256(prediction["model_patch"])
    payload = {"split": split, "subset": subset, "instance_ids": [instance_id], "run_id": cloud_run}
    try:
        launched = submit_prediction(prediction, {"x-api-key": api_key}, payload)["launched"]
        if not launched and (previous_submission or {}).get("patch_sha256") != digest:
            raise PreflightError(
                f"the cloud run {cloud_run} already holds a submission of {instance_id} with another patch, and "
                "the cloud evaluates an instance once per run: set another run_id to evaluate the new patch.")
        logs.mkdir(parents=True, exist_ok=True)
        write_json_atomic(logs / "submission.json", {"run_id": cloud_run, "subset": subset, "split": split,
                                                     "patch_sha256": digest})
        wait_for_evaluation(all_ids=[instance_id], api_key=api_key, subset=subset, split=split, run_id=cloud_run,
                            timeout=SBCLI_WAIT)
        get_report(subset=subset, split=split, run_id=cloud_run, api_key=api_key, overwrite=1, output_dir=str(logs),
                   extra_args="")
    except requests.RequestException as e:  # transport errors, and sb-cli's own for any status but 200
        raise fault("sb_cli", f"{type(e).__name__}: {e}") from e
    report = read_json(logs / f"{subset}__{split}__{cloud_run}.json")
    for status, key in (("resolved", "resolved_ids"), ("unresolved", "unresolved_ids"),
                        ("empty_patch", "empty_patch_ids")):
        if instance_id in report.get(key, []):
            return status, None, None
    where = "among its errors" if instance_id in report.get("error_ids", []) else "neither resolved nor unresolved"
    return "error", f"the cloud evaluation lists the instance {where}; see its report in {LOGS}/", None


def evaluate_instance(backend, row, prediction, logs, harness_run, timeout, image_settings=None, keep_images=False,
                      subset=None, split=None, api_key=None, recorded=False, run_dir=None):
    """The instance's report record; its logs go to the folder `logs`."""
    instance_id = row["instance_id"]
    previous = _read_optional(logs / "submission.json")
    shutil.rmtree(logs, ignore_errors=True)  # an earlier evaluation's logs
    started = time.monotonic()
    verdict = None
    if not prediction.get("model_patch"):
        status, reason = "empty_patch", "the prediction has no patch; nothing to evaluate"
    elif backend == "docker":
        image_settings = {**IMAGE_DEFAULTS, **(image_settings or {})}
        name = images.image_name(row, image_settings)
        known = use_row_grading(row) if carries_eval_script(row, name) else known_environment(row)
        status, reason, verdict = known or run_docker(row, prediction, harness_run, timeout, image_settings,
                                                      keep_images, logs, run_dir, recorded)
    elif backend == "modal":
        status, reason, verdict = known_environment(row) or run_modal(row, prediction, harness_run, timeout, logs)
    else:
        status, reason, verdict = run_sbcli(prediction, subset, split, harness_run, api_key, logs, previous)
    return {
        "instance_id": instance_id,
        "backend": backend,
        "harness": f"sb-cli {importlib.metadata.version('sb-cli')}" if backend == "sb-cli"
        else f"swebench {importlib.metadata.version('swebench')}",
        "run_id": harness_run,
        "model_name_or_path": prediction.get("model_name_or_path"),
        "patch_sha256": patch_sha256(prediction.get("model_patch")),
        "status": status,
        "resolved": status == "resolved",
        "reason": reason,
        "duration_s": round(time.monotonic() - started, 3),
        "logs": LOGS if logs.is_dir() else None,
        "report": verdict,
    }


def _read_optional(path):
    return read_json(path) if path.is_file() else None


def known_environment(row):
    """None when the harness has an environment (a specification) for the row's repo and version; else the
    (status, reason, report) of the error result that the instance gets instead of an evaluation."""
    if not known_to_harness(row):
        return ("error", f"the harness (swebench {importlib.metadata.version('swebench')}) has no environment for "
                f"repo {row['repo']} version {row.get('version')}", None)
    return None


# --- merge ---

def merge(rows, predictions, reports, backend):
    """evaluation.json: the harness's run report (make_run_report's format, schema_version 2)
    from the instances' reports, with the failures without a verdict split by reason."""
    by_status = {status: sorted(i for i, r in reports.items() if r["status"] == status) for status in STATUSES}
    patch_of = {p["instance_id"]: p.get("model_patch") for p in predictions}
    empty = sorted(i for i in patch_of if patch_of[i] in ("", None))
    completed = sorted(by_status["resolved"] + by_status["unresolved"])
    errors = sorted(i for i in reports if i not in completed and i not in empty)
    selected = [row["instance_id"] for row in rows]
    return {
        "total_instances": len(rows),
        "submitted_instances": len(predictions),
        "completed_instances": len(completed),
        "resolved_instances": len(by_status["resolved"]),
        "unresolved_instances": len(by_status["unresolved"]),
        "empty_patch_instances": len(empty),
        "error_instances": len(errors),
        "completed_ids": completed,
        "incomplete_ids": sorted(i for i in selected if i not in patch_of),
        "empty_patch_ids": empty,
        "submitted_ids": sorted(patch_of),
        "resolved_ids": by_status["resolved"],
        "unresolved_ids": by_status["unresolved"],
        "error_ids": errors,
        "schema_version": 2,
        # what the harness's make_run_report adds when it is given no Docker client
        "unstopped_instances": 0,
        "unstopped_containers": [],
        "unremoved_images": [],
        "backend": backend,
        "status_counts": {status: len(ids) for status, ids in by_status.items()},
        "patch_failed_ids": by_status["patch_failed"],
        "build_failed_ids": by_status["build_failed"],
        "timeout_ids": by_status["timeout"],
    }


# --- command line ---

def stop_on_signal(signum, frame):
    """The handler of SIGTERM and SIGINT of a job that runs the harness (catch_stop_signals): it notes the signal in
    stop_on_signal.received and interrupts. The harness removes its container in a `finally` that swallows the
    interrupt; the note keeps the interrupted job from writing a report."""
    stop_on_signal.received = signum
    raise KeyboardInterrupt


stop_on_signal.received = None


def catch_stop_signals():
    """Handle SIGTERM and SIGINT with stop_on_signal, none received yet."""
    stop_on_signal.received = None
    signal.signal(signal.SIGTERM, stop_on_signal)
    signal.signal(signal.SIGINT, stop_on_signal)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("instance", help="evaluate one instance's prediction")
    one.add_argument("--backend", choices=BACKENDS, required=True)
    one.add_argument("--instances", required=True)
    one.add_argument("--index", required=True)
    one.add_argument("--predictions", required=True)
    one.add_argument("--id", required=True)
    one.add_argument("--run-id", required=True)
    one.add_argument("--out", required=True)
    one.add_argument("--timeout", type=int, default=1800)
    images.settings_arguments(one)
    one.add_argument("--image-record", help="the instance's image.json, written by the pull stage (images.py), or "
                     "with images built locally its validation.json, written by the validation that built the image")
    one.add_argument("--samples", type=int, default=1, help="the run's samples, which all evaluate in the image")
    one.add_argument("--sample", type=int, default=1)
    one.add_argument("--keep-images", action="store_true")
    one.add_argument("--dataset", help="the run's dataset (sb-cli: gives the subset)")
    one.add_argument("--split", default="test")
    pulled = commands.add_parser("pull", help="pull one instance's image ahead of its evaluation")
    pulled.add_argument("--instances", required=True)
    pulled.add_argument("--index", required=True)
    pulled.add_argument("--id", required=True)
    pulled.add_argument("--run-dir", required=True)
    pulled.add_argument("--out", required=True)
    images.settings_arguments(pulled)
    merged = commands.add_parser("merge", help="merge the instances' reports into evaluation.json")
    merged.add_argument("--instances", required=True)
    merged.add_argument("--predictions", required=True)
    merged.add_argument("--run-dir", required=True)
    merged.add_argument("--backend", required=True)
    merged.add_argument("--sample", type=int, default=1, help="the sample whose evaluations are merged")
    merged.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    if args.command == "pull":
        pull_stage(read_row(args.instances, args.index, args.id), images.settings_of(args), args.run_dir, args.out)
        return
    if args.command == "merge":
        rows = read_jsonl(args.instances)
        # with allow_partial, an instance whose evaluation failed on a fault has no evaluation yet
        sample = sample_folder(args.sample)
        paths = {row["instance_id"]: Path(args.run_dir) / "instances" / row["instance_id"] / sample / "evaluation.json"
                 for row in rows}
        reports = {i: read_json(path) for i, path in paths.items() if path.is_file()}
        write_json_atomic(args.out, merge(rows, read_jsonl(args.predictions), reports, args.backend))
        return

    out = Path(args.out).resolve()
    row = read_row(args.instances, args.index, args.id)
    prediction = find_jsonl_row(args.predictions, args.id)
    if prediction is None:
        sys.exit(f"evaluate {args.id}: {args.predictions} has no prediction for it")
    harness_run = harness_run_id(args.run_id, out.parents[2]) if args.backend != "sb-cli" else args.run_id
    catch_stop_signals()
    try:
        subset = sbcli_subset(args.dataset, args.split) if args.backend == "sb-cli" else None
        record = evaluate_instance(args.backend, row, prediction, out.parent / LOGS, harness_run, args.timeout,
                                   images.settings_of(args), args.keep_images, subset, args.split,
                                   os.environ.get("SWEBENCH_API_KEY"), recorded=bool(args.image_record),
                                   run_dir=str(Path(args.image_record).parents[2]) if args.image_record else None)
    except PreflightError as e:
        sys.exit(f"evaluate {args.id}: {e}")
    except EvaluationFault as e:  # the last line of the log, which scripts.status reads
        sys.exit(f"evaluate {args.id}: nothing written; a plain rerun retries it.\n{fault_line(e.cause, e)}")
    if stop_on_signal.received:
        sys.exit(f"evaluate {args.id}: stopped by signal {stop_on_signal.received}; nothing written")
    write_json_atomic(out, record)
    print(f"{args.id}: {record['status']}" + (f" ({record['reason']})" if record["reason"] else ""))
    if args.backend == "docker" and args.image_record and not args.keep_images:
        images.release_image(args.image_record, args.index, args.id, args.sample, args.samples,
                             images.settings_of(args), print)


if __name__ == "__main__":
    main()

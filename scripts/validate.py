"""Validate: whether an instance's environment works on this machine, by its gold patch and an empty patch.

With validate_gold=true, each instance's image is evaluated twice by the official harness (the
evaluate stage's run_docker): with the row's gold patch, which must resolve, and with no patch,
which must not. An instance where either fails is "environment broken here": its verdicts say
nothing about a model, and the summary lists it apart. The outcome is kept in a cache shared by
runs, under the digest of the image (<cache>/<digest>/<id>.json, the harness's logs beside it in
<id>/gold/ and <id>/empty/), so another run, or another model's, on the same image reads it
instead of evaluating again. The run's own copy is instances/<id>/validation.json
(schemas/validation.schema.json).

A fault of the machinery (daemon, registry, network, disk) is no outcome: the job fails, nothing
is written or cached, and a plain rerun retries it.
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from scripts import evaluate
from scripts.common import fault_line, now, read_json, read_row, write_json_atomic

# The row's fields that decide its evaluation: a cached outcome holds for the same image and these.
GRADED_FIELDS = ("repo", "version", "patch", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS", "eval_script",
                 "log_parser", "eval_type")


def row_sha256(row):
    return hashlib.sha256(json.dumps([row.get(k) for k in GRADED_FIELDS], sort_keys=True).encode()).hexdigest()


def test_spec(row, namespace):
    """The harness's TestSpec of row, as the evaluate stage makes it (scripts/evaluate.py: run_docker)."""
    from swebench.harness.test_spec.test_spec import make_test_spec

    if evaluate.carries_eval_script(row, namespace):
        return evaluate.row_test_spec(row, evaluate.qualified(namespace))
    return make_test_spec(row, namespace=evaluate.qualified(namespace))


def local_digest(client, name):
    """The digest of the image name on the daemon: the registry's digest of a pulled image, the id of one
    built here; None when the daemon does not have it."""
    import docker

    try:
        image = client.images.get(name)
    except docker.errors.ImageNotFound:
        return None
    digests = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or []]
    return digests[0] if digests else image.id


def registry_digest(client, name):
    """The registry's digest of a remote image, read without pulling it."""
    import docker
    import requests

    try:
        return client.images.get_registry_data(name).id
    except (docker.errors.DockerException, requests.RequestException) as e:
        message = getattr(e, "explanation", None) or str(e)
        found = evaluate.find_fault(message)
        raise evaluate.fault(found[0] if found else "network", f"reading the digest of {name}: {message}") from e


def fetch_image(client, spec, row, scratch):
    """Pull or build (image_namespace empty) the instance image, as the evaluation would. A failed build is
    left to run_docker, which builds again and records it or raises its fault."""
    if spec.is_remote_image:
        evaluate.pull(client, spec.instance_image_key)
        return
    from swebench.harness.docker_build import build_instance_images

    with evaluate.scratch_directory(scratch):  # the harness writes its build logs under the working directory
        build_instance_images(client, [row], False, 1, None, spec.instance_image_tag, spec.env_image_tag)


def outcome(status, reason, report, duration_s, logs):
    tests = (report or {}).get("tests_status")
    return {"status": status, "reason": reason, "duration_s": round(duration_s, 3),
            "failed_tests": tests["FAIL_TO_PASS"]["failure"] + tests["PASS_TO_PASS"]["failure"] if tests else None,
            "logs": str(logs) if logs.is_dir() else None}


def run_patch(row, patch, logs, harness_run, timeout, namespace):
    """The harness's outcome of one patch ("" for none: GNU patch applies an empty file) on the instance's image,
    which is on the daemon; the image is kept."""
    shutil.rmtree(logs, ignore_errors=True)
    started = time.monotonic()
    prediction = {"instance_id": row["instance_id"], "model_name_or_path": "validation", "model_patch": patch}
    status, reason, report = evaluate.run_docker(row, prediction, harness_run, timeout, namespace, True, logs)
    return outcome(status, reason, report, time.monotonic() - started, logs)


def verdict(gold, empty):
    """(validated, why not) from the two outcomes."""
    if gold["status"] != "resolved":
        why = gold["status"] + (f": {gold['reason']}" if gold["reason"] else "")
        if gold["failed_tests"]:
            why += f"; tests of FAIL_TO_PASS or PASS_TO_PASS that fail: {', '.join(gold['failed_tests'])}"
        return False, f"the gold patch does not resolve here ({why})"
    if empty["status"] == "resolved":
        return False, "the instance resolves with no patch: its FAIL_TO_PASS tests pass before the fix"
    return True, None


def validate(row, cache, harness_run, timeout, namespace="swebench", keep_images=False):
    """The validation record of row (from the cache when it holds one for the image and row); raises
    EvaluationFault on a fault of the machinery."""
    import docker
    import requests

    harness = f"swebench {importlib.metadata.version('swebench')}"
    base = {"instance_id": row["instance_id"], "harness": harness, "row_sha256": row_sha256(row)}
    known = evaluate.use_row_grading(row) if evaluate.carries_eval_script(row, namespace) else \
        evaluate._known_environment(row)
    if known:  # no environment to run: nothing to key a cache by
        return {**base, "image": None, "digest": None, "validated": False,
                "reason": f"the harness cannot evaluate it: {known[1]}", "gold": None, "empty": None,
                "validated_at": now(), "cache": None, "cached": False}
    try:
        spec = test_spec(row, namespace)
    except (requests.RequestException, ValueError) as e:
        if isinstance(e, ValueError) and not evaluate.find_fault(str(e)):
            raise
        raise evaluate.fault("github_download", str(e)) from e
    image = spec.instance_image_key
    try:
        client = docker.from_env(timeout=evaluate.DOCKER_TIMEOUT)
        digest = local_digest(client, image)
    except (docker.errors.DockerException, requests.RequestException) as e:
        raise evaluate.fault("docker_daemon", str(e)) from e
    fetched = digest is None
    if fetched and spec.is_remote_image:
        digest = registry_digest(client, image)
    if digest is None:  # built here: known once built
        fetch_image(client, spec, row, cache)
        digest = local_digest(client, image)
    folder = Path(cache) / (digest.split(":", 1)[-1] if digest else "unbuilt")
    path = folder / f"{row['instance_id']}.json"
    if digest and path.is_file():
        record = read_json(path)
        if record.get("row_sha256") == base["row_sha256"]:
            return {**record, "cached": True}
    if fetched and local_digest(client, image) is None:
        fetch_image(client, spec, row, cache)
    try:
        gold = run_patch(row, row["patch"], folder / row["instance_id"] / "gold", harness_run, timeout, namespace)
        empty = run_patch(row, "", folder / row["instance_id"] / "empty", harness_run, timeout, namespace)
    finally:
        if fetched and not keep_images:  # as the evaluation does: images that were here before are kept
            try:
                client.images.remove(image)
            except docker.errors.APIError:  # in use by another job's container, or gone
                pass
    if getattr(evaluate._stop_on_signal, "received", None):  # the harness swallows the interrupt: no outcome
        raise KeyboardInterrupt
    validated, reason = verdict(gold, empty)
    record = {**base, "image": image, "digest": digest, "validated": validated, "reason": reason,
              "gold": gold, "empty": empty, "validated_at": now(), "cache": str(path) if digest else None}
    if digest:
        write_json_atomic(path, record)
    return {**record, "cached": False}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--cache", required=True, help="the validation cache folder, shared by runs")
    parser.add_argument("--timeout", type=int, default=1800)
    parser.add_argument("--namespace", default="swebench", help="image namespace; empty to build images locally")
    parser.add_argument("--keep-images", action="store_true")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    row = read_row(args.instances, args.index, args.id)
    # containers of their own: the instance's evaluate job may run at the same time
    harness_run = evaluate.harness_run_id(f"{args.run_id}.validation", out.parents[2])
    evaluate._stop_on_signal.received = None
    signal.signal(signal.SIGTERM, evaluate._stop_on_signal)
    signal.signal(signal.SIGINT, evaluate._stop_on_signal)
    try:
        record = validate(row, os.path.abspath(args.cache), harness_run, args.timeout, args.namespace or None,
                          args.keep_images)
    except evaluate.EvaluationFault as e:  # the last line of the log, which scripts.status reads
        sys.exit(f"validate {args.id}: nothing written; a plain rerun retries it.\n{fault_line(e.cause, e)}")
    if evaluate._stop_on_signal.received:
        sys.exit(f"validate {args.id}: stopped by signal {evaluate._stop_on_signal.received}; nothing written")
    write_json_atomic(out, record)
    print(f"{args.id}: {'validated' if record['validated'] else 'environment broken here: ' + record['reason']}"
          + (" (cached)" if record["cached"] else ""))


if __name__ == "__main__":
    main()

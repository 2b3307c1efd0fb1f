"""Validate: whether an instance's environment works on this machine, by its gold patch and an empty patch.

With validate_gold=true, each instance's image is evaluated twice by the official harness (the
evaluate stage's run_docker): with the row's gold patch, which must resolve, and with no patch,
which must not. An instance where either fails is "environment broken here": its verdicts say
nothing about a model, and the summary lists it apart. The outcome is kept in a cache shared by
runs, under the digest of the image (<cache>/<digest>/<id>.json, the harness's logs beside it in
<id>/gold/ and <id>/empty/), so another run, or another model's, on the same image reads it
instead of evaluating again. The run's own copy is instances/<id>/validation.json
(schemas/validation.schema.json). The image is the one the settings name (scripts/images.py's image_name), the
pull stage's (its instances/<id>/image.json gives the digest), or built here when images are built locally;
validation removes none: the evaluation after it needs it, and the evaluations' clean-up removes it, a pulled one
as its image.json says, one built here as validation.json's `built` says (keep_images=false).

A fault of the machinery (daemon, registry, network, disk) is no outcome: the job fails, nothing
is written or cached, and a plain rerun retries it.
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import time
from pathlib import Path

from scripts import evaluate, images
from scripts.common import fault_line, now, read_json, read_row, write_json_atomic

# The row's fields that decide its evaluation: a cached outcome holds for the same image and these.
GRADED_FIELDS = ("repo", "version", "patch", "test_patch", "FAIL_TO_PASS", "PASS_TO_PASS", "eval_script",
                 "log_parser", "eval_type")


def row_sha256(row):
    return hashlib.sha256(json.dumps([row.get(k) for k in GRADED_FIELDS], sort_keys=True).encode()).hexdigest()


def local_digest(client, name):
    """The id of a locally built image name on the daemon; None when the daemon does not have it."""
    import docker

    try:
        return client.images.get(name).id
    except docker.errors.ImageNotFound:
        return None


def build_image(client, row, arch, scratch, run_dir):
    """The harness's instance image of row built here (images built locally: no image name), as the evaluation
    would build it, unless the daemon has it; (its name, its id). An image built is noted as the run's
    (images.note_built). A failed build is left to run_docker, which builds again and records it or raises its
    fault: the id is then None."""
    import requests
    from swebench.harness.docker_build import build_instance_images
    from swebench.harness.test_spec.test_spec import make_test_spec

    try:
        spec = make_test_spec(row, namespace=None, arch=arch)
    except (requests.RequestException, ValueError) as e:  # for some repos it reads requirements files from GitHub
        if isinstance(e, ValueError) and not evaluate.find_fault(str(e)):
            raise
        raise evaluate.fault("github_download", str(e)) from e
    image = spec.instance_image_key
    if local_digest(client, image) is None:
        with evaluate.scratch_directory(scratch):  # the harness writes its build logs under the working directory
            build_instance_images(client, [row], False, 1, None, spec.instance_image_tag, spec.env_image_tag)
        if run_dir and local_digest(client, image) is not None:
            images.note_built(run_dir, image)
    return image, local_digest(client, image)


def outcome(status, reason, report, duration_s, logs):
    tests = (report or {}).get("tests_status")
    return {"status": status, "reason": reason, "duration_s": round(duration_s, 3),
            "failed_tests": tests["FAIL_TO_PASS"]["failure"] + tests["PASS_TO_PASS"]["failure"] if tests else None,
            "logs": str(logs) if logs.is_dir() else None}


def run_patch(row, patch, logs, harness_run, timeout, image_settings, run_dir):
    """The harness's outcome of one patch ("" for none: GNU patch applies an empty file) on the instance's image;
    the image is kept (its clean-up is the evaluations', scripts/images.py's release_image)."""
    shutil.rmtree(logs, ignore_errors=True)
    started = time.monotonic()
    prediction = {"instance_id": row["instance_id"], "model_name_or_path": "validation", "model_patch": patch}
    status, reason, report = evaluate.run_docker(row, prediction, harness_run, timeout, image_settings, True, logs,
                                                 run_dir, recorded=True)
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


def validate(row, cache, harness_run, timeout, image_settings, image_record=None, run_dir=None):
    """The validation record of row in the image image_settings name (images.image_name), whose pull's record
    (image.json) is image_record, or built here when they name none; from the cache when it holds one for the
    image's digest and row. Raises EvaluationFault on a fault of the machinery."""
    import docker
    import requests

    image_settings = {**evaluate.IMAGE_DEFAULTS, **image_settings}
    harness = f"swebench {importlib.metadata.version('swebench')}"
    base = {"instance_id": row["instance_id"], "harness": harness, "row_sha256": row_sha256(row)}
    name = images.image_name(row, image_settings)
    known = evaluate.use_row_grading(row) if evaluate.carries_eval_script(row, name) else \
        evaluate.known_environment(row)
    if known:  # no environment to run: nothing to key a cache by
        return {**base, "image": None, "digest": None, "validated": False,
                "reason": f"the harness cannot evaluate it: {known[1]}", "gold": None, "empty": None,
                "validated_at": now(), "cache": None, "cached": False, "built": False}
    if name:  # pulled by the pull stage (rules/images.smk): its record names the image and its digest
        if image_record is None:
            raise ValueError(f"the image {name} of {row['instance_id']} is pulled by the pull stage: give its "
                             "record (--image-record instances/<id>/image.json)")
        pulled = read_json(image_record)
        if pulled["image"] != name:
            raise ValueError(f"{image_record} records {pulled['image']}, not {name}: pull it again (delete it)")
        image, digest = name, pulled["digest"] or pulled["id"]  # an image tagged here has no registry digest
    else:
        try:
            client = docker.from_env(timeout=evaluate.DOCKER_TIMEOUT)
            image, digest = build_image(client, row, image_settings["image_arch"], cache, run_dir)
        except (docker.errors.DockerException, requests.RequestException) as e:
            raise evaluate.fault("docker_daemon", str(e)) from e
    # built by this run or one beside it (not kept in the cache: another run may find it on the daemon before it)
    built = bool(name is None and digest and run_dir and images.built_by_workflow(run_dir, image))
    folder = Path(cache) / (digest.split(":", 1)[-1] if digest else "unbuilt")
    path = folder / f"{row['instance_id']}.json"
    if digest and path.is_file():
        record = read_json(path)
        if record.get("row_sha256") == base["row_sha256"]:
            return {**record, "cached": True, "built": built}
    gold = run_patch(row, row["patch"], folder / row["instance_id"] / "gold", harness_run, timeout, image_settings,
                     run_dir)
    empty = run_patch(row, "", folder / row["instance_id"] / "empty", harness_run, timeout, image_settings, run_dir)
    if evaluate.stop_on_signal.received:  # the harness swallows the interrupt: no outcome
        raise KeyboardInterrupt
    validated, reason = verdict(gold, empty)
    record = {**base, "image": image, "digest": digest, "validated": validated, "reason": reason,
              "gold": gold, "empty": empty, "validated_at": now(), "cache": str(path) if digest else None}
    if digest:
        write_json_atomic(path, record)
    return {**record, "cached": False, "built": built}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--cache", required=True, help="the validation cache folder, shared by runs")
    parser.add_argument("--timeout", type=int, default=1800)
    images.settings_arguments(parser)
    parser.add_argument("--image-record", help="the instance's image.json, written by the pull stage (images.py)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    out = Path(args.out).resolve()
    row = read_row(args.instances, args.index, args.id)
    # containers of their own: the instance's evaluate job may run at the same time
    harness_run = evaluate.harness_run_id(f"{args.run_id}.validation", out.parents[2])
    evaluate.catch_stop_signals()
    try:
        record = validate(row, os.path.abspath(args.cache), harness_run, args.timeout, images.settings_of(args),
                          args.image_record, str(out.parents[2]))
    except evaluate.EvaluationFault as e:  # the last line of the log, which scripts.status reads
        sys.exit(f"validate {args.id}: nothing written; a plain rerun retries it.\n{fault_line(e.cause, e)}")
    if evaluate.stop_on_signal.received:
        sys.exit(f"validate {args.id}: stopped by signal {evaluate.stop_on_signal.received}; nothing written")
    write_json_atomic(out, record)
    print(f"{args.id}: {'validated' if record['validated'] else 'environment broken here: ' + record['reason']}"
          + (" (cached)" if record["cached"] else ""))


if __name__ == "__main__":
    main()

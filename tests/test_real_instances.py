"""Real SWE-bench Lite instances of psf/requests and pallets/flask, evaluated end to end: the real
snakemake runs the official harness in Docker on instance images that tests/real_instances.py
builds from the git bundles in ../shared/data (the first run builds them; later runs reuse them).

Rows of the classic JSONL take harness 4.1.0's path (make_test_spec); the hub's parquet rows
carry eval_script, image and log_parser and take harness 5.x's. pallets/flask's rows only take
the second: 4.1.0's make_test_spec downloads flask's requirements from GitHub, which is not
reachable here."""
import json
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import real_instances

from scripts.images import qualified

import swebench_images
from conftest import DATA, LITE_TEST, PROJECT, assert_valid, jobs_run, read_rows, snakemake, write_rows

# the real instances' images: built with Docker once per module (about 10 minutes on a fresh machine)
pytestmark = [pytest.mark.real_instances, pytest.mark.docker, pytest.mark.workflow, pytest.mark.timeout(1800)]

REPOS = ("psf/requests", "pallets/flask")
# Instances whose gold patch cannot resolve on this machine, and why (docs/testing.md names them too).
CONNECT_TIMEOUT = ("TestTimeout::test_connect_timeout and test_total_timeout_connect expect a connection to the "
                   "unroutable 10.255.255.1 to time out; this machine refuses it at once")
LEFT_OUT = {
    "psf__requests-2148": "RequestsTestCase::test_mixed_case_scheme_acceptable sends to https://httpbin.org "
                          "with requests' own CA bundle, which no local stand-in's certificate can satisfy",
    "psf__requests-2317": CONNECT_TIMEOUT,
    "psf__requests-2674": CONNECT_TIMEOUT,
    "psf__requests-3362": CONNECT_TIMEOUT,
}
EVAL_TIMEOUT = 600
HUB_LITE = DATA / "hub" / "SWE-bench_Lite" / "test.parquet"  # the hub's rows, with eval_script, image, log_parser


def official_resolved():
    return set(json.loads((DATA / "results_20240617_moatless_gpt4o.json").read_text())["resolved"])


def classic_rows():
    return [r for r in read_rows(LITE_TEST) if r["repo"] in REPOS and r["instance_id"] not in LEFT_OUT]


def hub_rows():
    import pyarrow.parquet

    table = pyarrow.parquet.read_table(HUB_LITE)
    return [r for r in table.to_pylist() if r["repo"] in REPOS and r["instance_id"] not in LEFT_OUT]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The instance images of every kept row, built where the daemon lacks them."""
    client = docker.from_env(timeout=3600)
    return real_instances.ensure_instances(client, classic_rows(), tmp_path_factory.mktemp("mirrors"))


def evaluate(tmp_path, rows, predictions=None, dataset=None, env=None):
    """Run the workflow on rows, of dataset if given (predictions: {instance_id: patch}, else the
    gold patches), on the engine env points at (Docker by default); returns {instance_id: evaluation.json}."""
    tmp_path.mkdir(exist_ok=True)
    selection = [f"instances={','.join(r['instance_id'] for r in rows)}"] if dataset else []
    dataset = dataset or write_rows(tmp_path / "rows.jsonl", rows)
    config = [f"dataset={dataset}", *selection, "evaluation=docker", f"eval_timeout={EVAL_TIMEOUT}",
              "min_free_disk_gb=1"]
    run = tmp_path / "results" / "gold"
    if predictions is not None:
        given = write_rows(tmp_path / "preds.jsonl", [
            {"instance_id": i, "model_name_or_path": "real-test", "model_patch": p} for i, p in predictions.items()])
        config.append(f"predictions={given}")
        run = tmp_path / "results" / "predictions-preds"
    result = snakemake(tmp_path, "--config", *config, env=env)
    assert jobs_run(result).count("evaluate") == len(rows)
    return {r["instance_id"]: json.loads((run / "instances" / r["instance_id"] / "evaluation.json").read_text())
            for r in rows}


def moatless():
    return {p["instance_id"]: p["model_patch"] for p in read_rows(DATA / "preds_20240617_moatless_gpt4o.jsonl")}


@pytest.fixture(scope="module")
def classic_verdicts(images, tmp_path_factory):
    """The statuses of gold and of moatless's predictions on the classic rows of psf/requests."""
    rows = [r for r in classic_rows() if r["repo"] == "psf/requests"]
    gold = evaluate(tmp_path_factory.mktemp("classic-gold"), rows)
    given = evaluate(tmp_path_factory.mktemp("classic-moatless"), rows,
                     {r["instance_id"]: moatless()[r["instance_id"]] for r in rows})
    return gold, given


def test_gold_patches_resolve_on_the_real_instances(classic_verdicts):
    gold, _ = classic_verdicts
    assert {i: e["status"] for i, e in gold.items()} == {i: "resolved" for i in gold}
    for record in gold.values():
        assert record["report"]["tests_status"]["FAIL_TO_PASS"]["failure"] == []
        assert record["report"]["tests_status"]["PASS_TO_PASS"]["failure"] == []


def test_real_predictions_get_the_official_verdicts(classic_verdicts):
    _, given = classic_verdicts
    resolved = official_resolved()
    assert {i: e["status"] for i, e in given.items()} == {
        i: "resolved" if i in resolved else "unresolved" for i in given}


def test_an_empty_and_a_malformed_patch_on_a_real_instance(images, tmp_path):
    rows = {r["instance_id"]: r for r in classic_rows() if r["instance_id"] in ("psf__requests-1963", "psf__requests-863")}
    lines = rows["psf__requests-1963"]["patch"].split("\n")
    removed = next(n for n, line in enumerate(lines) if line.startswith("-") and not line.startswith("---"))
    lines[removed] = "-    a line that is not in the file"
    malformed = "\n".join(lines)
    verdicts = evaluate(tmp_path, list(rows.values()), {"psf__requests-1963": malformed, "psf__requests-863": ""})
    assert verdicts["psf__requests-1963"]["status"] == "patch_failed"
    assert verdicts["psf__requests-1963"]["reason"].startswith("the patch does not apply: ")
    assert verdicts["psf__requests-863"]["status"] == "empty_patch"


def test_rows_that_carry_their_eval_script_get_the_same_verdicts(classic_verdicts, tmp_path):
    """The hub's rows, through their own eval_script, image and log_parser: gold resolves,
    moatless's predictions get the official verdicts, and psf/requests' equal the 4.1.0 path's."""
    rows = hub_rows()
    assert all(r["eval_script"] and r["image"] == real_instances.instance_image_name(r) for r in rows)
    gold = evaluate(tmp_path / "gold", rows, dataset=HUB_LITE)
    given = evaluate(tmp_path / "moatless", rows, {r["instance_id"]: moatless()[r["instance_id"]] for r in rows},
                     dataset=HUB_LITE)
    assert {i: e["status"] for i, e in gold.items()} == {i: "resolved" for i in gold}
    resolved = official_resolved()
    assert {i: e["status"] for i, e in given.items()} == {
        i: "resolved" if i in resolved else "unresolved" for i in given}
    classic_gold, classic_given = classic_verdicts
    for classic, hub in ((classic_gold, gold), (classic_given, given)):
        for instance_id, record in classic.items():
            assert hub[instance_id]["report"]["tests_status"] == record["report"]["tests_status"]
    # the script that ran is the row's own
    run = tmp_path / "gold" / "results" / "gold" / "instances"
    for row in rows:
        assert (run / row["instance_id"] / "evaluation" / "eval.sh").read_text() == row["eval_script"].strip() + "\n"


@pytest.mark.podman
def test_podman_gives_the_same_verdicts_as_docker_on_the_real_instances(images, classic_verdicts, podman, tmp_path):
    """podman's Docker-compatible API, its images copied from Docker's: the classic psf/requests rows
    (harness 4.1.0's path) and the hub's pallets/flask rows (their own eval script) get Docker's verdicts
    and test results, for the gold patches and for moatless's predictions."""
    for name in images.values():  # under the name a pull would give it in podman: docker.io/swebench/...
        swebench_images.copy_image(name, podman)
        repository, tag = qualified(name).rsplit(":", 1)
        swebench_images.client(podman).images.get(name).tag(repository, tag)
    env = {"DOCKER_HOST": podman}
    rows = [r for r in classic_rows() if r["repo"] == "psf/requests"]
    gold = evaluate(tmp_path / "gold", rows, env=env)
    given = evaluate(tmp_path / "moatless", rows, {r["instance_id"]: moatless()[r["instance_id"]] for r in rows},
                     env=env)
    for docker_verdicts, podman_verdicts in zip(classic_verdicts, (gold, given), strict=True):
        assert {i: (e["status"], e["report"]["tests_status"]) for i, e in podman_verdicts.items()} == {
            i: (e["status"], e["report"]["tests_status"]) for i, e in docker_verdicts.items()}
    flask = [r for r in hub_rows() if r["repo"] == "pallets/flask"]
    hub_gold = evaluate(tmp_path / "hub-gold", flask, dataset=HUB_LITE, env=env)
    assert {i: e["status"] for i, e in hub_gold.items()} == {i: "resolved" for i in hub_gold}


def test_gold_validation_lists_a_broken_environment_apart_and_is_done_once_per_image(images, tmp_path):
    """validate_gold on psf/requests' kept rows and on psf__requests-2317, whose gold patch cannot resolve on this
    machine (LEFT_OUT): 1963 is validated; 2317 is environment broken here, and so is 863, whose FAIL_TO_PASS
    tests pass here with no patch (against the local httpbin); listed apart from the model's results, with both
    rates. A second run (another model's predictions) reads every validation from the cache."""
    broken, no_patch_passes = "psf__requests-2317", "psf__requests-863"
    rows = [r for r in classic_rows() if r["repo"] == "psf/requests"]
    rows += [r for r in read_rows(LITE_TEST) if r["instance_id"] == broken]
    real_instances.ensure_instances(docker.from_env(timeout=3600), rows[-1:], tmp_path / "mirrors")
    ids = sorted(r["instance_id"] for r in rows)
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    cache = tmp_path / "validation-cache"
    runs = {}
    for name, patches in (("moatless", moatless()), ("gold", {r["instance_id"]: r["patch"] for r in rows})):
        given = write_rows(tmp_path / f"{name}.jsonl", [
            {"instance_id": i, "model_name_or_path": name, "model_patch": patches[i]} for i in ids])
        runs[name] = snakemake(tmp_path, "--config", f"dataset={dataset}", f"predictions={given}", "evaluation=docker",
                               f"eval_timeout={EVAL_TIMEOUT}", "min_free_disk_gb=1", "validate_gold=true",
                               f"validation_cache={cache}")
    first, second = (tmp_path / "results" / f"predictions-{name}" for name in ("moatless", "gold"))
    assert jobs_run(runs["moatless"]).count("validate") == len(ids)

    records = {i: json.loads((first / "instances" / i / "validation.json").read_text()) for i in ids}
    for record in records.values():
        assert_valid(record, "validation")
    assert {i: r["validated"] for i, r in records.items()} == {i: i not in (broken, no_patch_passes) for i in ids}
    assert all(r["cached"] is False for r in records.values())
    good = records["psf__requests-1963"]
    assert (good["gold"]["status"], good["empty"]["status"], good["reason"]) == ("resolved", "unresolved", None)
    assert records[broken]["gold"]["status"] == "unresolved"
    assert records[broken]["reason"].startswith("the gold patch does not resolve here (unresolved; tests of ")
    assert "test_requests.py::TestTimeout::test_connect_timeout" in records[broken]["gold"]["failed_tests"]
    assert (records[no_patch_passes]["gold"]["status"], records[no_patch_passes]["empty"]["status"]) == (
        "resolved", "resolved")
    assert records[no_patch_passes]["reason"].startswith("the instance resolves with no patch")
    assert (records[broken]["gold"]["logs"].endswith(f"{broken}/gold")
            and "Timeout" in (Path(records[broken]["gold"]["logs"]) / "test_output.txt").read_text())
    assert records[broken]["digest"] == docker.from_env().images.get(records[broken]["image"]).id

    summary = json.loads((first / "summary.json").read_text())
    assert_valid(summary, "summary")
    resolved = json.loads((first / "evaluation.json").read_text())["resolved_ids"]
    # moatless's patch of 2317 resolves it officially: not here, where its environment is broken
    assert broken in official_resolved() and broken not in resolved
    assert summary["resolution"]["rate"] == round(len(resolved) / len(ids), 4)
    validated_resolved = [i for i in resolved if i == "psf__requests-1963"]
    assert summary["validation"] == {
        "validated": 1, "environment_broken": 2, "not_validated": 0, "resolved": len(validated_resolved),
        "rate": float(len(validated_resolved)),
        "broken": [{"instance_id": i, "reason": records[i]["reason"], "resolved": i in resolved,
                    "file": f"results/predictions-moatless/instances/{i}/validation.json"}
                   for i in (broken, no_patch_passes)]}
    md = (first / "summary.md").read_text()
    assert "## Environment broken here" in md and f"| {broken} | the gold patch does not resolve here" in md
    assert f"- over the instances whose environment the gold patch validated: {len(validated_resolved)} of 1" in md
    status = subprocess.run([sys.executable, "-m", "scripts.status", "--run", str(first)], cwd=PROJECT,
                            capture_output=True, text=True, check=True).stdout
    assert "gold validation: 1 validated, 2 environment broken here" in status
    listed = status.split("Environment broken here (2)")[1]
    assert broken in listed and no_patch_passes in listed

    # the second run evaluated its patches, and validated nothing again: the cache holds every instance
    assert jobs_run(runs["gold"]).count("evaluate") == len(ids)
    again = {i: json.loads((second / "instances" / i / "validation.json").read_text()) for i in ids}
    assert all(r["cached"] for r in again.values())
    assert {i: {**r, "cached": False} for i, r in again.items()} == records
    assert "(cached)" in (second / "logs" / broken / "validate.log").read_text()
    assert len(list(cache.glob("*/*.json"))) == len(ids)

    # compared over the validated instances alone: the broken one is left out
    compared = subprocess.run([sys.executable, "-m", "scripts.compare", str(first), str(second), "--validated",
                               "--out", str(tmp_path / "compare")], cwd=PROJECT, capture_output=True, text=True,
                              check=True)
    result = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert compared.returncode == 0 and result["shared_instances"] == 1
    assert result["environment_broken"] == [broken, no_patch_passes]

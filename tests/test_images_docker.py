"""The pull stage in real Docker: the real snakemake pulls each instance's image from a loopback registry (Debian's
docker-registry), through a loopback stand-in of Docker Hub's rate limit in front of it, ahead of its evaluation
by the official harness."""
import json
import socket
import subprocess
import sys

import pytest

import swebench_images as images
from conftest import PROJECT, assert_valid, jobs_run, snakemake, write_rows
from registries import PacedRegistry, serve_registry

IDS = ["psf__requests-90011", "psf__requests-90012", "psf__requests-90013"]
EPOCH_STYLE = "epoch-research/swe-bench.eval.{arch}.{id}:latest"


@pytest.fixture(scope="module")
def registry_ports():
    """Two loopback ports of this module's own (Docker pulls from any loopback registry over plain HTTP)."""
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return first.getsockname()[1], second.getsockname()[1]


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, registry_ports):
    """The testbed image in a loopback registry under Epoch AI's names and the harness's Docker Hub names of the
    rows of IDS; yields (the registry's storage, its port, the rows)."""
    storage = tmp_path_factory.mktemp("registry") / "data"
    port = registry_ports[0]
    tag, base_commit = images.ensure_testbed_image()
    client = images.client()
    rows = [images.row(i, base_commit) for i in IDS]
    with serve_registry(storage, port):
        for row in rows:
            # an image of its own per instance (the testbed's layers, a label of its own), so that the daemon reads
            # each one's manifest from the registry rather than from its own store
            container = client.containers.create(tag, command="true")
            own = container.commit(changes=f"LABEL instance={row['instance_id']}")
            container.remove()
            names = [f"127.0.0.1:{port}/" + EPOCH_STYLE.format(arch="x86_64", id=row["instance_id"]),
                     images.instance_image(row, f"127.0.0.1:{port}/swebench")]
            for name in names:
                own.tag(*name.rsplit(":", 1))
                errors = [line["error"] for line in client.images.push(*name.rsplit(":", 1), stream=True, decode=True)
                          if "error" in line]
                assert not errors, errors
            client.images.remove(own.id, force=True)
        yield storage, port, rows


def given(tmp_path, rows):
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    predictions = write_rows(tmp_path / "preds.jsonl", [{"instance_id": r["instance_id"], "model_name_or_path": "m",
                                                         "model_patch": images.GOLD_PATCH} for r in rows])
    return ["--config", f"dataset={dataset}", f"predictions={predictions}", "evaluation=docker", "run_id=r"]


def status(run, instance_id):
    return json.loads((run / "instances" / instance_id / "evaluation.json").read_text())["status"]


def absent(names):
    client = images.client()
    for name in names:
        if images.image_exists(client, name):
            client.images.remove(name, force=True)


@pytest.mark.workflow
@pytest.mark.docker
def test_pulls_say_their_plan_keep_the_registry_pace_and_an_epoch_template_names_the_images(tmp_path, pushed,
                                                                                           registry_ports):
    storage, backend, rows = pushed
    port = registry_ports[1]
    template = f"127.0.0.1:{port}/{EPOCH_STYLE}"
    names = [template.format(arch="x86_64", id=r["instance_id"]) for r in rows]
    absent(names)
    run = tmp_path / "results" / "r"
    with serve_registry(storage, backend), PacedRegistry(port, backend, limit=2, window=12) as paced:
        result = snakemake(tmp_path, *given(tmp_path, rows), f"image_source={template}", "min_free_disk_gb=0",
                           "--resources", "pulls=3", "docker=2")
    # the plan, before the pulls
    assert "Images: 3 of 3 to pull (0 already here)" in result.stderr
    assert (f"127.0.0.1:{port}: 3 images, size not told by the registry; it allows 2 pulls per 12 s, 2 left now: "
            "the pulls take at least 12 s at that pace.") in result.stderr
    # never more pulls than the registry allows in its window, none refused, and the third waited for its turn
    assert len(paced.pulls) == 3 and not paced.refused and paced.most_in_a_window(12) == 2
    assert any("waiting" in (run / "logs" / i / "pull.log").read_text() for i in IDS)
    for row, name in zip(rows, names, strict=True):
        record = json.loads((run / "instances" / row["instance_id"] / "image.json").read_text())
        assert record["image"] == name and record["pulled"] and record["digest"].startswith("sha256:")
        assert_valid(record, "image")
        assert status(run, row["instance_id"]) == "resolved"
        assert not images.image_exists(images.client(), name)  # removed once its evaluation was done
    assert sorted(jobs_run(result)).count("pull") == 3


@pytest.mark.workflow
@pytest.mark.docker
def test_a_refused_pull_is_a_fault_and_a_rerun_resumes(tmp_path, pushed, registry_ports):
    storage, backend, rows = pushed
    port = registry_ports[1]
    template = f"127.0.0.1:{port}/{EPOCH_STYLE}"
    row = rows[0]
    absent([template.format(arch="x86_64", id=row["instance_id"])])
    run = tmp_path / "results" / "r"
    config = [*given(tmp_path, [row]), f"image_source={template}", "min_free_disk_gb=0"]
    with serve_registry(storage, backend), PacedRegistry(port, backend, limit=5, window=60) as paced:
        paced.refuse = True
        failed = snakemake(tmp_path, *config, check=False)
        assert failed.returncode != 0 and paced.refused
        assert not (run / "instances" / row["instance_id"] / "image.json").exists()
        assert not (run / "instances" / row["instance_id"] / "evaluation.json").exists()
        last = (run / "logs" / row["instance_id"] / "pull.log").read_text().strip().splitlines()[-1]
        assert last.startswith("infrastructure fault: registry_rate_limit: ") and "toomanyrequests" in last, last
        text = subprocess.run([sys.executable, "-m", "scripts.status", "--run", str(run)], cwd=PROJECT,
                              capture_output=True, text=True, check=True).stdout
        assert f"{row['instance_id']}  evaluate  registry_rate_limit" in text

        paced.refuse = False
        rerun = snakemake(tmp_path, *config)
    assert "pull" in jobs_run(rerun) and status(run, row["instance_id"]) == "resolved"


@pytest.mark.workflow
@pytest.mark.docker
def test_the_users_image_namespace_wins_over_the_rows_image(tmp_path, pushed, registry_ports):
    """A row that carries its eval script and an image (as the hub's rows do) is evaluated in the image of the
    namespace the user set."""
    from swebench.harness.log_parsers import MAP_REPO_TO_PARSER
    from swebench.harness.test_spec.test_spec import make_test_spec

    storage, backend, rows = pushed
    namespace = f"127.0.0.1:{backend}/swebench"
    row = {**rows[1], "image": "docker.io/nobody/absent:latest", "eval_script": make_test_spec(rows[1]).eval_script,
           "log_parser": MAP_REPO_TO_PARSER[images.REPO].__name__, "eval_type": "pass_and_fail"}
    name = images.instance_image(row, namespace)
    absent([name])
    run = tmp_path / "results" / "r"
    with serve_registry(storage, backend):
        snakemake(tmp_path, *given(tmp_path, [row]), f"image_namespace={namespace}", "min_free_disk_gb=0")
    assert json.loads((run / "instances" / row["instance_id"] / "image.json").read_text())["image"] == name
    assert status(run, row["instance_id"]) == "resolved"


@pytest.mark.workflow
@pytest.mark.docker
def test_pulls_stop_before_the_disk_fills_and_nothing_evaluated_is_lost(tmp_path, pushed):
    storage, backend, rows = pushed
    namespace = f"127.0.0.1:{backend}/swebench"
    absent([images.instance_image(row, namespace) for row in rows[:2]])
    run = tmp_path / "results" / "r"
    first = run / "instances" / rows[0]["instance_id"] / "evaluation.json"
    with serve_registry(storage, backend):
        snakemake(tmp_path, *given(tmp_path, rows[:1]), f"image_namespace={namespace}", "min_free_disk_gb=5",
                  env={"SWEBENCH_RUNNER_FREE_DISK_GB": "100"})
        assert status(run, rows[0]["instance_id"]) == "resolved"
        before = first.stat().st_mtime_ns
        # 5.001 GB free: the run starts, but the download of an image would leave less than 5 GB
        failed = snakemake(tmp_path, *given(tmp_path, rows[:2]), f"image_namespace={namespace}", "min_free_disk_gb=5",
                           env={"SWEBENCH_RUNNER_FREE_DISK_GB": "5.001"}, check=False)
    assert failed.returncode != 0
    assert "size not told" not in failed.stderr and "GB to download (1 of 1 sized)" in failed.stderr
    assert "The downloads alone would leave less than min_free_disk_gb" in failed.stderr
    plan = json.loads((run / "images" / "plan.json").read_text())
    assert_valid(plan, "image_plan")
    assert plan["to_pull"] == 1 and plan["registries"][0]["sized"] == 1 and plan["registries"][0]["limit"] is None
    second = rows[1]["instance_id"]
    last = (run / "logs" / second / "pull.log").read_text().strip().splitlines()[-1]
    assert last.startswith("infrastructure fault: out_of_disk: ") and "stopped before it started: 5.0 GB" in last, last
    assert not images.image_exists(images.client(), images.instance_image(rows[1], namespace))
    assert not (run / "instances" / second / "image.json").exists()
    assert first.stat().st_mtime_ns == before and status(run, rows[0]["instance_id"]) == "resolved"


@pytest.mark.workflow
@pytest.mark.docker
def test_gold_validation_validates_the_pulled_image_of_the_users_source_and_leaves_its_removal_to_the_evaluation(
        tmp_path, pushed, registry_ports):
    """validate_gold with an image_source template: the validation runs in the image the template names, after its
    pull job and without pulling it again, keys its cache by the digest the pull recorded, and removes nothing:
    the evaluation after it finds the image, and the clean-up removes it once the evaluation is done."""
    storage, backend, rows = pushed
    port = registry_ports[1]
    template = f"127.0.0.1:{port}/{EPOCH_STYLE}"
    row = rows[2]
    name = template.format(arch="x86_64", id=row["instance_id"])
    absent([name])
    run = tmp_path / "results" / "r"
    cache = tmp_path / "validation-cache"
    with serve_registry(storage, backend), PacedRegistry(port, backend, limit=10, window=60) as paced:
        result = snakemake(tmp_path, *given(tmp_path, [row]), f"image_source={template}", "min_free_disk_gb=0",
                           "validate_gold=true", f"validation_cache={cache}")
    assert [rule for rule in jobs_run(result) if rule in ("pull", "validate", "evaluate")] == [
        "evaluate", "pull", "validate"]
    assert len(paced.pulls) == 1  # the pull job's: neither the validation nor the evaluation pulled it again
    pulled = json.loads((run / "instances" / row["instance_id"] / "image.json").read_text())
    validation = json.loads((run / "instances" / row["instance_id"] / "validation.json").read_text())
    assert_valid(validation, "validation")
    assert (validation["image"], validation["digest"]) == (name, pulled["digest"])
    assert validation["validated"] and validation["gold"]["status"] == "resolved"
    assert validation["cache"] == str(cache / pulled["digest"].split(":", 1)[1] / f"{row['instance_id']}.json")
    assert status(run, row["instance_id"]) == "resolved"
    assert not images.image_exists(images.client(), name)  # removed once its evaluation was done

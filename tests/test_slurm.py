"""The workflow on a real SLURM cluster through profiles/slurm (snakemake-executor-plugin-slurm).

Needs the one-node cluster of tests/slurm_cluster.sh (which .ci/run starts): the jobs are
submitted with sbatch and run by slurmd on this machine, which shares tmp_path with the
submitting snakemake as a cluster's nodes share a filesystem, and reach the loopback model
server of the test."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import fixture_repos
from conftest import LITE_TEST, PROJECT, read_rows, write_rows
from fake_api import FakeModelServer

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

SETUP = "bash tests/slurm_cluster.sh"
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def slurm_states(job_ids):
    """{SLURM job id: (state, job name)} as squeue reports them (finished jobs included)."""
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T|%j", f"--jobs={','.join(job_ids)}"],
        capture_output=True, text=True, check=True,
    ).stdout
    return {i: (state, name) for i, state, name in (line.split("|") for line in out.split())}


@pytest.fixture(scope="module")
def slurm():
    """The cluster must be there and take jobs; a missing one fails the test, it is not skipped."""
    missing = [tool for tool in ("sbatch", "squeue", "scancel", "sinfo") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"SLURM is not installed ({', '.join(missing)} missing): run `{SETUP}` (root) first.")
    state = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True)
    if state.returncode != 0 or not re.match(r"(idle|mixed|allocated|completing)", state.stdout.strip()):
        pytest.fail(f"SLURM does not take jobs (sinfo: {(state.stdout + state.stderr).strip()!r}): run `{SETUP}`.")


def slurm_snakemake(workdir, config, out, env=None, options=()):
    """Start snakemake with the SLURM profile, options and config (--config items), its output going to the file
    out."""
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory", str(workdir),
        "--workflow-profile", str(PROJECT / "profiles" / "slurm"),
        # Poll squeue every few seconds rather than the profile's 40 s: the jobs here are short.
        "--slurm-init-seconds-before-status-checks", "2",
        *options, "--config", *config,
    ]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SWEBENCH_")}, **(env or {})}
    return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir)


def gold_config(dataset):
    """Gold patches, no evaluation, and no fetching of the repositories to check them."""
    return [f"dataset={dataset}", "evaluation=none", "apply_check=false"]


def finish(process, timeout=150):
    """The exit code of a snakemake run; one still running after timeout is stopped (it then
    cancels its SLURM jobs) and fails the test."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(timeout=60)
        pytest.fail(f"snakemake did not finish within {timeout} s")


def cluster_job(log_path):
    """The group (prepare, check) or the rule (generate) of a cluster job, from the path of its SLURM log."""
    return re.search(r"/slurm_logs/(?:group|rule)_([a-z]+)", log_path).group(1)


def submissions(text):
    """[(SLURM job id, SLURM log)] of the jobs that snakemake submitted, in order."""
    return SUBMITTED.findall(text)


def slurm_job(job_id):
    """What SLURM holds of a job (scontrol show job), as {field: value}."""
    out = subprocess.run(["scontrol", "--oneliner", "show", "job", job_id], capture_output=True, text=True,
                         check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def stages_run(slurm_log):
    """[(rule, instance id)] of the jobs that ran in one cluster job, from the log SLURM wrote of it: the output
    of the Snakemake that ran them (a group job's), or of the one job."""
    blocks = re.findall(r"^\s*rule (\w+):\n((?:\s+\w+: .*\n)*)", Path(slurm_log).read_text(), re.M)
    return sorted((rule, re.search(r"wildcards: id=([^,\s]+)", lines).group(1)) for rule, lines in blocks)


def test_slurm_run_cancel_and_rerun(tmp_path, slurm):
    rows = read_rows(LITE_TEST, 4)
    ids = sorted(r["instance_id"] for r in rows)
    dataset = write_rows(tmp_path / "sample.jsonl", rows)
    log = tmp_path / "first.log"

    # 1. A run in the background; once the four instances' first group jobs (context and
    # prompt) are submitted, two of them are cancelled with scancel, as a cluster may kill jobs
    # (preemption, time limits).
    with open(log, "w") as out:
        run = slurm_snakemake(tmp_path, gold_config(dataset), out)
        try:
            deadline = time.monotonic() + 90
            groups = []
            while len(groups) < 4 and run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                groups = [(i, path) for i, path in submissions(log.read_text()) if "/group_prepare_" in path]
            assert len(groups) == 4, f"four group jobs were not submitted:\n{log.read_text()}"
            cancelled = [job_id for job_id, _ in groups[2:]]
            before = slurm_states(cancelled)
            assert all(before[j][0] in ("PENDING", "RUNNING", "CONFIGURING") for j in cancelled), before
            subprocess.run(["scancel", *cancelled], check=True)
        except BaseException:
            run.terminate()  # snakemake cancels its SLURM jobs as it stops
            run.wait(timeout=60)
            raise
        code = finish(run)
    text = log.read_text()
    assert code != 0, text  # with --keep-going the rest finished, and the run reports the failures

    # Every job went through sbatch: squeue knows each id, under the run's SLURM name.
    run_name = re.search(r"SLURM run ID: (\S+)", text).group(1)
    jobs = submissions(text)
    states = slurm_states([job_id for job_id, _ in jobs])
    assert set(states) == {job_id for job_id, _ in jobs}
    assert {name for _, name in states.values()} == {run_name}
    assert {states[j][0] for j in cancelled} == {"CANCELLED"}
    # Only the instances' jobs went to the cluster: select and the merges are local rules.
    assert {cluster_job(path) for _, path in jobs} == {"prepare", "generate", "check"}, jobs
    assert all(states[j][0] == "COMPLETED" for j, _ in jobs if j not in cancelled), states

    # The cancelled jobs' instances have no patch yet; the others are done; no predictions yet.
    instances = tmp_path / "results" / "gold" / "instances"
    done = sorted(i for i in ids if (instances / i / "patch.diff").exists())
    assert len(done) == 2, text
    assert not (tmp_path / "results" / "gold" / "predictions.jsonl").exists()

    # 2. A plain rerun completes only the two cancelled instances (three jobs each), then merges.
    rerun_log = tmp_path / "rerun.log"
    with open(rerun_log, "w") as out:
        code = finish(slurm_snakemake(tmp_path, gold_config(dataset), out))
    text = rerun_log.read_text()
    assert code == 0, text
    redone = sorted(set(re.findall(r"wildcards: id=([^,\s]+)", text)))
    assert redone == sorted(set(ids) - set(done))
    rerun_jobs = submissions(text)
    assert sorted(cluster_job(p) for _, p in rerun_jobs) == ["check", "check", "generate", "generate", "prepare", "prepare"]
    assert {s for s, _ in slurm_states([j for j, _ in rerun_jobs]).values()} == {"COMPLETED"}

    predictions = read_rows(tmp_path / "results" / "gold" / "predictions.jsonl")
    assert [p["instance_id"] for p in predictions] == ids
    reference = {r["instance_id"]: r["patch"] for r in rows}
    assert all(p["model_patch"] == reference[p["instance_id"]] for p in predictions)


def test_slurm_model_run_repairs_on_the_cluster_and_keeps_paid_answers(tmp_path, slurm):
    """provider=openai (a priced model, so the cost estimate runs first) with self-repair and the apply
    check, on small repositories the test builds; the loopback server answers one instance with a patch
    that does not apply, which the repair stage mends."""
    rows, url = fixture_repos.build(tmp_path / "repos")
    rows = rows[:2]
    ids = sorted(r["instance_id"] for r in rows)
    broken = rows[0]["instance_id"]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    run = tmp_path / "results" / "openai-gpt-4o-mini"
    with FakeModelServer(rows) as server:
        server.answers[broken] = [rows[0]["patch"].replace("-        return math.pi * self.radius\n",
                                                           "-        return math.tau * self.radius\n")]
        config = [f"dataset={dataset}", "evaluation=none", "provider=openai", "model=gpt-4o-mini",
                  f"base_url={server.url}/v1", "provider_prices=true", "max_attempts=2", "retry_backoff=0.01", "request_timeout=5",
                  "apply_check=true", "repair_attempts=1", f"repo_cache={tmp_path / 'cache'}", "context=none"]
        env = {"OPENAI_API_KEY": "sk-test-slurm"}

        # 1. The repositories cannot be fetched: each instance's check job fails, a fault of the
        # machinery, after its answer was paid for. The answers are kept.
        first_log = tmp_path / "first.log"
        with open(first_log, "w") as out:
            code = finish(slurm_snakemake(tmp_path, [*config, f"repo_url={tmp_path}/none/{{repo}}"], out, env), 240)
        text = first_log.read_text()
        assert code != 0, text
        assert sorted(r["instance_id"] for r in server.requests) == ids
        jobs = submissions(text)
        states = slurm_states([job_id for job_id, _ in jobs])
        assert sorted((cluster_job(path), states[job_id][0]) for job_id, path in jobs) == [
            ("check", "FAILED"), ("check", "FAILED"), ("generate", "COMPLETED"), ("generate", "COMPLETED"),
            ("prepare", "COMPLETED"), ("prepare", "COMPLETED")]
        assert all((run / "instances" / i / "response.json").exists() for i in ids), text
        assert not list(run.glob("instances/*/patch.json"))

        # 2. With the repositories: only the check jobs run; the broken patch is mended by one request,
        # made by the repair stage in its cluster job; no answer is asked again.
        rerun_log = tmp_path / "rerun.log"
        with open(rerun_log, "w") as out:
            code = finish(slurm_snakemake(tmp_path, [*config, f"repo_url={url}"], out, env))
        text = rerun_log.read_text()
        assert code == 0, text
        assert [r["instance_id"] for r in server.requests[len(ids):]] == [broken]
    jobs = submissions(text)
    assert [cluster_job(path) for _, path in jobs] == ["check", "check"]
    assert all("/group_check_patch_repair/" in path for _, path in jobs)
    assert {state for state, _ in slurm_states([job_id for job_id, _ in jobs]).values()} == {"COMPLETED"}

    assert json.loads((run / "instances" / broken / "patch.json").read_text())["reason"] == "does_not_apply"
    record = json.loads((run / "instances" / broken / "repair.json").read_text())
    assert (record["status"], record["answer"]) == ("valid", "repair-1")
    predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
    assert sorted(predictions) == ids and all(predictions.values())
    assert predictions[broken] == (run / "instances" / broken / "repair.diff").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"]["patch"]["mended_by_model"] == 1 and (run / "summary.md").exists()


@pytest.mark.docker
@pytest.mark.real_instances
@pytest.mark.timeout(1200)
def test_slurm_agent_run_makes_the_trajectory_patch_and_evaluation_on_the_cluster(tmp_path, slurm):
    """agent=swebench through profiles/slurm: the trajectory is made in a cluster job, in the real instance image on
    the node's Docker daemon, its steps asked of the scripted loopback server; its patch is checked and evaluated on
    the cluster too."""
    import docker
    import real_instances
    from agent_server import AgentServer, apply_command, submit_steps

    row = next(r for r in read_rows(LITE_TEST) if r["instance_id"] == "psf__requests-1963")
    real_instances.ensure_instances(docker.from_env(timeout=3600), [row], tmp_path / "mirrors")
    dataset = write_rows(tmp_path / "rows.jsonl", [row])
    steps = submit_steps(apply_command(row["patch"]), "python -m pytest test_requests.py -x -q -k redirect 2>&1 | "
                         "tail -3", ["requests/sessions.py"])
    run = tmp_path / "results" / "openai-m"
    here = run / "instances" / row["instance_id"]
    with AgentServer({row["instance_id"]: steps}, [row]) as server:
        config = [f"dataset={dataset}", "provider=openai", "model=m", f"base_url={server.url}/v1", "agent=swebench",
                  "prices={m: {input: 1.0, output: 2.0}}", "provider_prices=false", "evaluation=docker",
                  "min_free_disk_gb=1", "eval_timeout=600", "apply_check=false"]
        log = tmp_path / "run.log"
        with open(log, "w") as out:
            code = finish(slurm_snakemake(tmp_path, config, out, {"OPENAI_API_KEY": "sk-test-slurm"},
                                          ["--slurm-keep-successful-logs"]), 900)
        text = log.read_text()
        assert code == 0, text
        assert sorted(r["step"] for r in server.requests if r["answered"]) == [0, 1, 2, 3, 4]
    jobs = submissions(text)
    states = slurm_states([job_id for job_id, _ in jobs])
    kinds = [cluster_job(path) for _, path in jobs]
    assert kinds.count("agent") == 1 and "check" in kinds and "evaluate" in kinds, jobs  # each in a cluster job
    # the image's pull ran in the trajectory's job, on its node (the image is there: the pull only records it)
    assert [stages_run(path) for _, path in jobs if cluster_job(path) == "agent"] == [
        [("agent", row["instance_id"]), ("pull", row["instance_id"])]]
    assert {state for state, _ in states.values()} == {"COMPLETED"}, states
    trajectory = json.loads((here / "trajectory.json").read_text())
    assert trajectory["info"]["exit_status"] == "Submitted" and "requests/sessions.py" in trajectory["info"]["diff"]
    assert not (here / "agent.partial.json").exists()
    prediction = read_rows(run / "predictions.jsonl")[0]
    assert prediction["model_patch"] == (here / "patch.diff").read_text()
    assert "a/requests/sessions.py" in prediction["model_patch"]
    assert json.loads((here / "evaluation.json").read_text())["status"] == "resolved"


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_slurm_pulls_an_image_in_the_cluster_job_that_validates_and_evaluates_in_it(tmp_path, slurm, registry_ports):
    """Given predictions evaluated in Docker with gold validation, each image pulled from a loopback registry
    (Debian's docker-registry, behind the stand-in of Docker Hub's rate limit that counts the pulls): each
    instance's pull, validation and evaluation run in one SLURM job, as the log SLURM wrote of the job shows, so
    on the node that pulled the image; the validation and the evaluation find it there (each image is pulled
    once), and the evaluation's clean-up removes it."""
    import swebench_images as images
    from registries import PacedRegistry, serve_registry

    backend, port = registry_ports
    tag, base_commit = images.ensure_testbed_image()
    rows = [images.row(i, base_commit) for i in ("psf__requests-90041", "psf__requests-90042")]
    ids = [r["instance_id"] for r in rows]
    namespace = f"127.0.0.1:{port}/swebench"
    names = [images.instance_image(row, namespace) for row in rows]
    client = images.client()
    with serve_registry(tmp_path / "registry", backend):
        for row in rows:  # an image of its own per instance: the daemon reads each one's manifest from the registry
            container = client.containers.create(tag, command="true")
            own = container.commit(changes=f"LABEL instance={row['instance_id']}")
            container.remove()
            pushed = images.instance_image(row, f"127.0.0.1:{backend}/swebench")
            own.tag(*pushed.rsplit(":", 1))
            errors = [line["error"] for line in client.images.push(*pushed.rsplit(":", 1), stream=True, decode=True)
                      if "error" in line]
            assert not errors, errors
            client.images.remove(own.id, force=True)
        for name in names:
            if images.image_exists(client, name):
                client.images.remove(name, force=True)
        dataset = write_rows(tmp_path / "rows.jsonl", rows)
        given = write_rows(tmp_path / "preds.jsonl", [{"instance_id": i, "model_name_or_path": "m",
                                                       "model_patch": images.GOLD_PATCH} for i in ids])
        config = [f"dataset={dataset}", f"predictions={given}", "evaluation=docker", f"image_namespace={namespace}",
                  "validate_gold=true", f"validation_cache={tmp_path / 'cache'}", "min_free_disk_gb=0"]
        log = tmp_path / "run.log"
        with PacedRegistry(port, backend, limit=100, window=60) as paced, open(log, "w") as out:
            code = finish(slurm_snakemake(tmp_path, config, out, options=["--slurm-keep-successful-logs"]), 600)
    text = log.read_text()
    assert code == 0, text
    jobs = submissions(text)
    states = slurm_states([job_id for job_id, _ in jobs])
    assert {state for state, _ in states.values()} == {"COMPLETED"}, states
    # each instance's given_patch (a job of its own) and one `evaluate` group job, which ran its three stages
    assert sorted(cluster_job(path) for _, path in jobs) == ["evaluate", "evaluate", "given", "given"], jobs
    evaluating = [path for _, path in jobs if cluster_job(path) == "evaluate"]
    assert sorted(stages_run(path) for path in evaluating) == [
        [("evaluate", i), ("pull", i), ("validate", i)] for i in ids], [stages_run(path) for _, path in jobs]
    # what each asked SLURM for: the largest memory of its stages, and the sum of their runtimes (profiles/slurm)
    wanted = yaml.safe_load((PROJECT / "profiles" / "slurm" / "config.yaml").read_text())["set-resources"]
    stages = ("pull", "validate", "evaluate")
    minutes = sum(wanted[stage]["runtime"] for stage in stages)
    memory = max(wanted[stage]["mem_mb"] for stage in stages)
    for job_id, path in jobs:
        if cluster_job(path) == "evaluate":
            job = slurm_job(job_id)
            assert job["TimeLimit"] == f"{minutes // 60:02d}:{minutes % 60:02d}:00", job
            assert (job["MinMemoryNode"], job["NumCPUs"]) == (f"{memory}M", "1"), job
    # the pulls are the pull stage's alone: neither the validation nor the evaluation pulled again
    assert sorted(repository for _, repository in paced.pulls) == sorted(
        name.split("/", 1)[1].rsplit(":", 1)[0] for name in names)
    run = tmp_path / "results" / "predictions-preds"
    for instance_id, name in zip(ids, names, strict=True):
        here = run / "instances" / instance_id
        pulled = json.loads((here / "image.json").read_text())
        assert (pulled["image"], pulled["pulled"]) == (name, True)
        validation = json.loads((here / "validation.json").read_text())
        assert (validation["image"], validation["digest"], validation["validated"]) == (name, pulled["digest"], True)
        assert json.loads((here / "evaluation.json").read_text())["status"] == "resolved"
        assert f"{name} removed: its evaluations are done" in (run / "logs" / instance_id / "evaluate.log").read_text()
        assert not images.image_exists(client, name)

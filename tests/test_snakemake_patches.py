"""The uses of Snakemake's internals (scripts/snakemake_patches.py): in place with the pinned Snakemake,
left out with a warning on another version, and left out when the setting is off."""
import inspect
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from scripts import snakemake_patches

from conftest import LITE_TEST, PROJECT, read_rows, snakemake, write_rows

ALL_IN_USE = "Snakemake patches in use: remaining_jobs, no pipe/service lookup, jobs of no core, daemon timer, thread pool, untracked params"
WARNING = "Warning: Snakemake "


def pinned_snakemake():
    text = (PROJECT / "requirements.txt").read_text()
    return re.search(r"^snakemake==(\S+)$", text, re.MULTILINE).group(1)


@pytest.mark.unit
def test_written_for_the_pinned_and_installed_snakemake():
    """A new pin needs the patches checked against that version, then WRITTEN_FOR moved with it."""
    assert snakemake_patches.WRITTEN_FOR == pinned_snakemake() == snakemake_patches.installed_version()


@pytest.mark.unit
def test_what_the_patches_replace_is_still_there_and_still_read():
    from snakemake import jobs, persistence
    from snakemake.executors import local
    from snakemake.scheduling import job_scheduler

    remaining = snakemake_patches.EAGER.get("remaining_jobs", job_scheduler.JobScheduler.__dict__["remaining_jobs"])
    assert isinstance(remaining, property)
    assert "self.remaining_jobs" in inspect.getsource(job_scheduler.JobScheduler)
    is_pipe = snakemake_patches.EAGER.get("is_pipe", jobs.Job.is_pipe_or_service_input)
    assert list(inspect.signature(is_pipe).parameters) == ["self", "path"]
    assert "self.is_pipe_or_service_input(f)" in inspect.getsource(jobs.Job)
    # the local executor's pool, which widen_thread_pool replaces, and the scheduler's resources it reads
    assert "self.pool = concurrent.futures.ThreadPoolExecutor" in inspect.getsource(local.Executor)
    assert "self.global_resources = " in inspect.getsource(job_scheduler.JobScheduler)
    # the re-evaluation timer, which schedule_reevaluation replaces, and its call with the rate limiter's span
    reevaluation = snakemake_patches.EAGER.get("reevaluation", job_scheduler.JobScheduler._schedule_reevalutation)
    assert list(inspect.signature(reevaluation).parameters) == ["self", "delay"]
    assert "self._schedule_reevalutation(self.job_rate_limiter.timespan)" in inspect.getsource(job_scheduler)
    # the job selector, which selects nothing while no core is free, and its call in the scheduler's loop
    selector = snakemake_patches.EAGER.get("job_selector", job_scheduler.JobScheduler.job_selector)
    assert list(inspect.signature(selector).parameters) == ["self", "jobs"]
    assert 'if self.resources["_cores"] == 0:' in inspect.getsource(selector)
    assert "run = self.job_selector(needrun)" in inspect.getsource(job_scheduler.JobScheduler)
    # params Snakemake cannot represent are left out of its record of a job's params
    assert "lambda p: p is not UNREPRESENTABLE" in inspect.getsource(persistence)


@pytest.mark.unit
def test_the_reevaluation_timer_releases_the_scheduler_and_keeps_no_process_alive():
    import threading

    released = threading.Event()
    scheduler = SimpleNamespace(_open_jobs=SimpleNamespace(release=released.set))
    before = set(threading.enumerate())
    snakemake_patches.schedule_reevaluation(scheduler, 0.2)
    (timer,) = set(threading.enumerate()) - before
    assert timer.daemon  # Python does not wait for it at exit
    assert released.wait(5)


@pytest.mark.unit
def test_another_snakemake_version_warns_once_and_uses_nothing(monkeypatch, capsys):
    monkeypatch.setattr(snakemake_patches, "installed_version", lambda: "9.30.0")
    monkeypatch.setattr(snakemake_patches, "_warned", False)
    assert snakemake_patches.usable(True, warn=False) is False
    assert capsys.readouterr().err == ""
    assert snakemake_patches.usable(True) is False
    assert snakemake_patches.usable(True) is False
    err = capsys.readouterr().err
    assert err.count(WARNING) == 1
    assert "Snakemake 9.30.0 is installed" in err and f"snakemake=={snakemake_patches.WRITTEN_FOR}" in err


@pytest.mark.unit
def test_the_setting_off_uses_nothing_and_says_nothing(monkeypatch, capsys):
    monkeypatch.setattr(snakemake_patches, "installed_version", lambda: "9.30.0")
    monkeypatch.setattr(snakemake_patches, "_warned", False)
    assert snakemake_patches.usable(False) is False
    assert snakemake_patches.usable(True) is False  # the version check still speaks when on
    assert capsys.readouterr().err.count(WARNING) == 1
    monkeypatch.setattr(snakemake_patches, "installed_version", lambda: snakemake_patches.WRITTEN_FOR)
    assert snakemake_patches.usable(True) is True
    assert snakemake_patches.usable(False) is False


@pytest.mark.unit
def test_untracked_only_with_the_patches():
    param = snakemake_patches.untracked("--timeout 5", True)
    assert isinstance(param, snakemake_patches.Untracked) and str(param) == "--timeout 5"
    assert snakemake_patches.untracked("--timeout 5", False) == "--timeout 5"


@pytest.mark.unit
def test_lazy_jobs_are_made_once_when_read():
    made = []
    jobs = snakemake_patches.LazyJobs(lambda: made.append(1) or ["a", "b"])
    assert made == []
    assert len(jobs) == 2 and list(jobs) == ["a", "b"] and bool(jobs)
    assert made == [1]


@pytest.mark.unit
def test_pipe_lookup_is_kept_for_a_workflow_with_pipe_outputs(monkeypatch):
    from snakemake.io import pipe
    from snakemake.jobs import Job
    from snakemake.scheduling.job_scheduler import JobScheduler

    monkeypatch.setattr(snakemake_patches, "EAGER", {})
    monkeypatch.setattr(JobScheduler, "remaining_jobs", JobScheduler.remaining_jobs)
    monkeypatch.setattr(Job, "is_pipe_or_service_input", Job.is_pipe_or_service_input)
    original = Job.is_pipe_or_service_input
    plain = SimpleNamespace(rules=[SimpleNamespace(output=["a.txt"])])
    snakemake_patches.patch(plain)
    assert Job.is_pipe_or_service_input is snakemake_patches.no_pipe_or_service_input
    assert JobScheduler.__dict__["remaining_jobs"].fget is snakemake_patches.lazy_remaining_jobs
    # read again with a rule that has a pipe() output (each model's module reads the Snakefile anew)
    snakemake_patches.patch(SimpleNamespace(rules=[*plain.rules, SimpleNamespace(output=[pipe("b.fifo")])]))
    assert Job.is_pipe_or_service_input is original


CORELESS = """
import sys
sys.path.insert(0, {project!r})
from scripts import snakemake_patches

rule all:
    input: "busy.txt", "pull.txt"

# takes the one core, and waits for pull.txt, which a job of no core makes once `ready` has run
rule busy:
    output: "busy.txt"
    shell: "for i in $(seq 100); do [ -e pull.txt ] && break; sleep 0.1; done; ls pull.txt > {{output}} 2>&1 || true"

rule ready:
    output: "ready.txt"
    threads: 0
    shell: "sleep 1; touch {{output}}"

rule pull:
    input: "ready.txt"
    output: "pull.txt"
    threads: 0
    shell: "touch {{output}}"

if {patched}:
    snakemake_patches.patch(workflow)
"""


@pytest.mark.workflow
@pytest.mark.parametrize("patched", [True, False])
def test_a_job_of_no_core_starts_while_every_core_is_taken(tmp_path, patched):
    """Snakemake selects no job while no core is free (here the one core waits for pull.txt, 10 s at most); with the
    patch a job of no thread (a pull, a model request) starts as soon as it is ready."""
    (tmp_path / "Snakefile").write_text(CORELESS.format(project=str(PROJECT), patched=patched))
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--scheduler", "greedy"], cwd=tmp_path,
                   check=True, capture_output=True)
    # busy.txt: what busy saw; without the patch pull ran only after busy ended
    assert (tmp_path / "busy.txt").read_text().strip() == ("pull.txt" if patched else
                                                           "ls: cannot access 'pull.txt': No such file or directory")


def gold_run(tmp_path, *args, env=None):
    rows = read_rows(LITE_TEST)[:2]
    dataset = write_rows(tmp_path / "sample.jsonl", rows)
    result = snakemake(tmp_path, "--verbose", "--config", f"dataset={dataset}", *args, env=env)
    predictions = read_rows(tmp_path / "results" / "gold" / "predictions.jsonl")
    assert [p["model_patch"] for p in predictions] == [r["patch"] for r in sorted(rows, key=lambda r: r["instance_id"])]
    assert json.loads((tmp_path / "results" / "gold" / "summary.json").read_text())["counts"]["patch"]["valid"] == 2
    return result.stdout + result.stderr


@pytest.mark.workflow
def test_with_the_pinned_snakemake_every_patch_is_in_place_during_a_run(tmp_path):
    output = gold_run(tmp_path)
    assert ALL_IN_USE in output
    assert WARNING not in output


@pytest.mark.workflow
def test_another_snakemake_version_runs_plain_with_one_warning(tmp_path):
    # A distribution record of another snakemake version, found first on the path: the version the check reads.
    fake = tmp_path / "site" / "snakemake-9.0.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: snakemake\nVersion: 9.0.0\n")
    output = gold_run(tmp_path, env={"PYTHONPATH": str(tmp_path / "site")})
    assert output.count(WARNING) == 1
    assert "Snakemake 9.0.0 is installed" in output
    assert "Snakemake patches in use: none" in output


@pytest.mark.workflow
def test_the_setting_off_runs_plain_snakemake(tmp_path):
    output = gold_run(tmp_path, "snakemake_patches=false")
    assert "Snakemake patches in use: none" in output
    assert WARNING not in output

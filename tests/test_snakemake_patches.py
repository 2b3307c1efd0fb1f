"""The uses of Snakemake's internals (scripts/snakemake_patches.py): in place with the pinned Snakemake,
left out with a warning on another version, and left out when the setting is off."""
import inspect
import json
import re
from types import SimpleNamespace

import pytest

from scripts import snakemake_patches

from conftest import LITE_TEST, PROJECT, read_rows, snakemake, write_rows

ALL_IN_USE = "Snakemake patches in use: remaining_jobs, no pipe/service lookup, daemon timer, thread pool, untracked params"
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

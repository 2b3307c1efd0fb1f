"""The run's view when not in a terminal (CI, SLURM logs, a pipe): the real snakemake with the project's
logger plugin, against the loopback model server; `status --watch` on a running and a finished run; and the
logger fed with the records of two runs of one invocation (models=[...])."""
import io
import json
import logging
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from rich.console import Console
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_logger_plugin_swebench import LogHandler, LogHandlerSettings

from scripts import common, live

from conftest import PROJECT, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

STAGE_LINE = re.compile(r"^\d\d:\d\d:\d\d (context|prompt|generate|patch|repair) (\S+): \S")
SUMMARY = re.compile(r"^\d\d:\d\d:\d\d progress: context \d+/20 .*; spend \d+\.\d{4} USD.* of max_cost 1 USD; .*")


@pytest.mark.workflow
def test_a_20_instance_run_prints_a_line_per_instance_stage_and_summaries(tmp_path):
    rows = read_rows(PROJECT.parent / "shared/data/swebench_lite_test.jsonl")[::15][:20]
    failing = rows[3]["instance_id"]
    with FakeModelServer(rows, latency=0.5) as server:
        server.faults[failing] = ["500"] * 3
        server.faults[rows[11]["instance_id"]] = ["refusal"]
        result = snakemake(tmp_path, "--logger", "swebench", "--logger-swebench-every", "1", "--cores", "4",
                           "--config", f"dataset={write_rows(tmp_path / 'rows.jsonl', rows)}", "provider=openai",
                           f"base_url={server.url}/v1", "model=gpt-4o", "max_attempts=3", "retry_backoff=0.1",
                           "max_cost=1", "context=none", env={"OPENAI_API_KEY": "sk-test"}, check=False)
    assert result.returncode != 0  # the failing instance
    lines = (result.stdout + result.stderr).splitlines()
    assert "\x1b" not in result.stdout + result.stderr
    assert len(lines) < 150, "\n".join(lines)
    assert not [line for line in lines if "Rule: " in line or line.startswith(("rule ", "localrule "))]

    # one line per instance stage done, as many as the run's files say
    run = tmp_path / "results/openai-gpt-4o"
    stage_lines = [line for line in lines if STAGE_LINE.match(line)]
    files = {"context": "context.json", "prompt": "prompt.json", "generate": "response.json", "patch": "patch.json",
             "repair": "repair.json"}
    made = sorted((stage, path.parent.name) for stage, name in files.items() for path in run.glob(f"instances/*/{name}"))
    assert sorted(STAGE_LINE.match(line).groups() for line in stage_lines) == made
    assert len(made) == 20 * 5 - 3  # the failing instance has no answer, patch or repair
    assert f"generate {rows[11]['instance_id']}: refused in " in "\n".join(stage_lines)

    # summaries: whole lines, with the spend and an ETA while running; the last one says how it ended
    summaries = [line for line in lines if " progress: " in line]
    assert summaries and all(SUMMARY.match(line) for line in summaries), summaries
    assert any(re.search(r"; ETA \d:\d\d:\d\d$", line) for line in summaries), summaries
    assert re.search(r"; ended with \d+ jobs not done; jobs failed: provider_unreachable 1$", summaries[-1]), summaries[-1]
    # never two messages on one line
    assert not [line for line in lines if len(re.findall(r"\d\d:\d\d:\d\d (progress|context|prompt|generate|patch)",
                                                         line)) > 1]

    # the failing instance, of a known cause: one line with the rule, the cause and the log file, no traceback;
    # the log holds the attempts, the traceback and Snakemake's error block
    log = f"results/openai-gpt-4o/logs/{failing}/generate.log"
    assert [line for line in lines if line.startswith("error: ")] == [
        f"error: generate {failing}: provider_unreachable (log: {log})"]
    assert not [line for line in lines if "Traceback" in line or "Error in rule" in line or "GenerationFailed" in line]
    text = (tmp_path / log).read_text()
    assert "attempt 1: InternalServerError 500" in text and "no answer after 3 attempt(s)" in text
    assert "GenerationFailed in file" in text and "Error in rule generate:" in text
    assert [line for line in lines if "failed for one cause" in line] == [
        next(line for line in lines if line.startswith("1 instance failed for one cause: provider_unreachable ("))]


def watch(run, *args, timeout=None):
    return subprocess.run([sys.executable, "-m", "scripts.status", "--watch", "--every", "0.5", "--run", str(run),
                           *args], capture_output=True, text=True, cwd=PROJECT, timeout=timeout)


@pytest.mark.workflow
def test_watch_on_a_finished_and_on_a_running_run(tmp_path):
    rows = read_rows(PROJECT.parent / "shared/data/swebench_lite_test.jsonl")[:3]
    snakemake(tmp_path, "--config", f"dataset={write_rows(tmp_path / 'rows.jsonl', rows)}")
    run = tmp_path / "results/gold"
    finished = watch(run, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.count("\n") == 1  # done: one view, then it ends
    assert re.search(r"progress: context 3/3 prompt 3/3 generate 3/3 patch 3/3; 0 jobs running; "
                     r"spend 0\.0000 USD \(no max_cost\); requests in flight 0; done$", finished.stdout.strip())

    # the logger's snapshots read an instance's files until every stage has its file, then no more
    settled = {}
    assert live.snapshot(run, settled)["stages"]["generate"] == {"answered": 3}
    assert sorted(settled) == sorted(r["instance_id"] for r in rows)

    # a run not done: an answer missing; the view is drawn again until it is stopped
    (run / "instances" / rows[0]["instance_id"] / "response.json").unlink()
    assert live.snapshot(run, settled)["stages"]["generate"] == {"answered": 3}  # as the running Snakemake left it
    assert live.snapshot(run)["stages"]["generate"] == {"answered": 2}
    unsettled = {}
    assert live.snapshot(run, unsettled)["stages"]["generate"] == {"answered": 2}
    assert rows[0]["instance_id"] not in unsettled and len(unsettled) == 2
    process = subprocess.Popen([sys.executable, "-m", "scripts.status", "--watch", "--every", "0.3", "--run", str(run)],
                               stdout=subprocess.PIPE, text=True, cwd=PROJECT)
    try:
        views = [process.stdout.readline() for _ in range(3)]  # a line for each view, drawn again and again
        assert process.poll() is None  # still going after three views: it runs until stopped
    finally:
        process.terminate()
        process.communicate()
    # no Snakemake holds the folder: the view says so
    assert all("generate 2/3" in view and "not running (run the same command again to go on)" in view
               for view in views), views

    missing = watch(tmp_path / "nothing", timeout=60)
    assert missing.returncode == 2 and "no such run folder" in missing.stderr


@pytest.mark.unit
def test_the_run_folder_of_a_path_and_the_stage_of_a_rule(tmp_path):
    run = tmp_path / "results/gpt"
    (run / "instances.index.json").parent.mkdir(parents=True)
    (run / "instances.index.json").write_text("{}")
    (tmp_path / "results/compare").mkdir()
    assert live.run_of(tmp_path / "results/new/instances.index.json") == tmp_path / "results/new"  # being selected
    for path in ("instances/a__a-1/response.json", "instances/a__a-1/samples/2/patch.json", "summary.json",
                 "predictions.jsonl", "samples/2/evaluation.json", "figures/resolved.png", "batch/done.json"):
        assert live.run_of(run / path) == run, path
    assert live.run_of(tmp_path / "results/compare/table.md") is None  # no run folder holds it
    assert live.run_of(tmp_path / "results/new/summary.json") is None  # no selection there
    assert [live.stage_of(rule) for rule in ("generate", "model1_generate", "model12_all", "models_all", "compare")] \
        == ["generate", "generate", "all", "models_all", "compare"]


def record(event, **fields):
    """A log record of Snakemake's as the logger plugin gets it."""
    entry = logging.LogRecord("snakemake", logging.INFO, __file__, 0, None, None, None)
    entry.__dict__.update(event=event, **fields)
    return entry


def job(handler, jobid, rule, output=(), instance=None, log=()):
    """A job of a rule started: the records Snakemake sends."""
    handler.handle(record(LogEvent.JOB_STARTED, jobs=[jobid]))
    wildcards = {"id": instance} if instance else {}
    handler.handle(record(LogEvent.JOB_INFO, jobid=jobid, rule_name=rule, wildcards=wildcards, output=list(output),
                          log=list(log)))


@pytest.mark.workflow
def test_the_logger_with_two_runs_names_each_line_s_run_and_stage(tmp_path, monkeypatch, capsys):
    # two models' runs of one invocation (models=[...]): the first holds the contexts and prompts of both
    monkeypatch.chdir(tmp_path)
    ids = ["a__a-1", "b__b-2"]
    for name, stages in (("gpt", ["context", "prompt", "generate", "patch"]), ("claude", ["generate", "patch"])):
        (tmp_path / "results" / name / "instances").mkdir(parents=True)
        (tmp_path / "results" / name / "instances.index.json").write_text(json.dumps({i: 0 for i in ids}))
        (tmp_path / "results" / name / "run.json").write_text(json.dumps({"stages": stages, "samples": 1}))
    files = {"gpt/instances/a__a-1/context.json": {},
             "gpt/instances/a__a-1/response.json": {"status": "answered", "latency_s": 1.5, "cost_usd": 0.01},
             "claude/instances/a__a-1/response.json": {"status": "failed", "failure_reason": "refused",
                                                       "latency_s": 2.0, "cost_usd": 0.003},
             "claude/instances/a__a-1/patch.json": {"status": "invalid", "reason": "generation_failed"}}
    for path, content in files.items():
        (tmp_path / "results" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "results" / path).write_text(json.dumps(content))
    (tmp_path / "results/claude/logs/b__b-2").mkdir(parents=True)
    (tmp_path / "results/claude/logs/b__b-2/generate.log").write_text("b__b-2: attempt 1: error: server down\n")

    common = SimpleNamespace(stdout=True, quiet=None, verbose=False, dryrun=False, debug_dag=False, nocolor=True,
                             show_failed_logs=False, printshellcmds=False)
    handler = LogHandler(common, LogHandlerSettings(every=0.1))
    assert not handler.terminal
    job(handler, 1, "model1_select", ["results/gpt/instances.jsonl (update)",
                                      "results/gpt/instances.index.json (update)"])
    job(handler, 2, "model2_select", ["results/claude/instances.index.json (update)"])
    for jobid in (1, 2):
        handler.handle(record(LogEvent.JOB_FINISHED, job_id=jobid))
    job(handler, 3, "model1_context", ["results/gpt/instances/a__a-1/context.json"], "a__a-1")
    job(handler, 4, "model1_generate", ["results/gpt/instances/a__a-1/response.json (update)"], "a__a-1")
    job(handler, 5, "model2_generate", ["results/claude/instances/a__a-1/response.json"], "a__a-1")
    job(handler, 6, "model2_generate", ["results/claude/instances/b__b-2/response.json"], "b__b-2",
        ["results/claude/logs/b__b-2/generate.log"])
    job(handler, 7, "model1_generate", ["results/gpt/instances/b__b-2/response.json"], "b__b-2")

    # in a terminal: a view per run, each with its own jobs running
    screen = Console(file=io.StringIO(), width=200)
    screen.print(handler.render())
    text = screen.file.getvalue()
    gpt, claude = text.index(str(tmp_path / "results/gpt")), text.index(str(tmp_path / "results/claude"))
    assert gpt < claude and re.search("^ context ", text[gpt:claude], re.M) and "context" not in text[claude:]
    assert re.findall(r"^ generate  (\S+__\S+)", text[gpt:claude], re.M) == ["a__a-1", "b__b-2"]
    assert re.findall(r"^ (context|generate) +(\S+__\S+)", text[claude:], re.M) == [("generate", "a__a-1"),
                                                                              ("generate", "b__b-2")]

    # not in a terminal: a summary line per run while running, each with its own jobs running
    out = ""
    for _ in range(1200):  # the summaries' thread writes one each 0.1 s; a loaded machine may hold it up
        out += capsys.readouterr().out
        if re.search("^claude: .* progress: ", out, re.M):
            break
        time.sleep(0.05)
    assert re.search(r"^gpt: \d\d:\d\d:\d\d progress: context 1/2 prompt 0/2 generate 1/2 patch 0/2; 3 jobs running;",
                     out, re.M), out
    assert re.search(r"^claude: \d\d:\d\d:\d\d progress: generate 1/2 patch 1/2; 2 jobs running;", out, re.M), out

    for jobid in (3, 4, 5):
        handler.handle(record(LogEvent.JOB_FINISHED, job_id=jobid))
    handler.handle(record(LogEvent.JOB_ERROR, jobid=6, rule_name="model2_generate", log=[], rule_msg=None))
    job(handler, 8, "model2_patch", ["results/claude/instances/a__a-1/patch.diff",
                                     "results/claude/instances/a__a-1/patch.json"], "a__a-1")
    job(handler, 9, "compare", ["results/compare/table.md"])
    job(handler, 10, "model1_all")
    job(handler, 11, "all")
    for jobid in (8, 9, 10, 11):
        handler.handle(record(LogEvent.JOB_FINISHED, job_id=jobid))
    handler.close()
    lines = (out + capsys.readouterr().out).splitlines()
    stage_lines = [re.sub(r"\d\d:\d\d:\d\d", "T", line) for line in lines if "progress: " not in line]
    assert stage_lines == [
        "gpt: T select: done", "claude: T select: done",
        "gpt: T context a__a-1: built", "gpt: T generate a__a-1: answered in 1.5 s, 0.0100 USD",
        "claude: T generate a__a-1: refused in 2.0 s, 0.0030 USD",
        "error: generate b__b-2 failed: server down", "  log: results/claude/logs/b__b-2/generate.log",
        "    b__b-2: attempt 1: error: server down",
        "claude: T patch a__a-1: generation_failed"]
    # at the end: a line per run
    ends = [line for line in lines if "progress: " in line][-2:]
    assert re.match(r"gpt: \S+ progress: context 1/2 prompt 0/2 generate 1/2 patch 0/2; 0 jobs running; ", ends[0])
    assert re.match(r"claude: \S+ progress: generate 1/2 patch 1/2; 0 jobs running; .*; ended$", ends[1]), ends


@pytest.mark.unit
def test_the_logger_shows_a_known_cause_in_one_line_and_an_unknown_one_in_full(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results/gpt"
    (run / "instances").mkdir(parents=True)
    (run / "instances.index.json").write_text(json.dumps({"a__a-1": 0, "b__b-2": 0}))
    (run / "run.json").write_text(json.dumps({"stages": ["context", "prompt"], "samples": 2}))
    logs = {instance: run / "logs" / instance / "context.log" for instance in ("a__a-1", "b__b-2")}
    for log in logs.values():
        log.parent.mkdir(parents=True)
    logs["a__a-1"].write_text("a__a-1: cannot fetch http://127.0.0.1:9/a/a.git\n"
                              + common.fault_line("repository_unreachable", "cannot fetch it; a rerun retries it") + "\n")
    logs["b__b-2"].write_text("b__b-2: something else went wrong\n")
    common_settings = SimpleNamespace(stdout=True, quiet=None, verbose=False, dryrun=False, debug_dag=False,
                                      nocolor=True, show_failed_logs=False, printshellcmds=False)
    handler = LogHandler(common_settings, LogHandlerSettings(every=600))
    for jobid, instance in ((1, "a__a-1"), (2, "b__b-2")):
        job(handler, jobid, "context", [f"results/gpt/instances/{instance}/context.json"], instance,
            [f"results/gpt/logs/{instance}/context.log"])

    def fail(jobid, instance, exception):
        """A job's exception, then its error, as Snakemake logs them (from the thread that ran the job)."""
        traceback = record(LogEvent.ERROR, exception=exception, msg=f"{exception} in file rules/context.smk:\n"
                                                                   f"  File \"scripts/context.py\", line 1, in run")
        traceback.levelno, traceback.thread = logging.ERROR, 100 + jobid
        error = record(LogEvent.JOB_ERROR, jobid=jobid, rule_name="context", rule_msg=None, msg=None, indent=False,
                       input=["results/gpt/instances.jsonl"], output=[f"results/gpt/instances/{instance}/context.json"],
                       log=[f"results/gpt/logs/{instance}/context.log"], conda_env=None, shellcmd=None, aux={})
        error.thread = 100 + jobid
        handler.handle(traceback)
        handler.handle(error)

    fail(1, "a__a-1", "RepoError")
    fail(2, "b__b-2", "ValueError")
    handler.close()
    out = capsys.readouterr().out
    # the known cause: one line; the unknown one: its traceback and its error in full, with the log's lines
    assert "RepoError" not in out
    lines = out.splitlines()
    assert lines[0] == "error: context a__a-1: repository_unreachable (log: results/gpt/logs/a__a-1/context.log)"
    assert lines[1:5] == ["ValueError in file rules/context.smk:", '  File "scripts/context.py", line 1, in run',
                          "error: context b__b-2 failed: the job failed", "  log: results/gpt/logs/b__b-2/context.log"]
    assert lines[5] == "    b__b-2: something else went wrong"
    # the closing line counts the jobs failed for a known cause
    assert re.search(r"progress: .*; ended; jobs failed: repository_unreachable 1$", lines[-1]), lines
    screen = Console(file=io.StringIO(), width=200)  # in a terminal: the view's closing line
    screen.print(handler.render())
    assert screen.file.getvalue().rstrip().splitlines()[-1] == \
        "0 of 4 instance stages done; jobs failed: repository_unreachable 1"
    # the known cause's log keeps the traceback and Snakemake's error block, above its fault line
    kept = logs["a__a-1"].read_text().splitlines()
    assert kept[1:3] == ["RepoError in file rules/context.smk:", '  File "scripts/context.py", line 1, in run']
    assert "Error in rule context:" in kept and "    output: results/gpt/instances/a__a-1/context.json" in kept
    assert kept[-1].startswith("infrastructure fault: repository_unreachable: ")
    assert logs["b__b-2"].read_text() == "b__b-2: something else went wrong\n"  # an unknown cause's log is left alone


@pytest.mark.unit
def test_a_known_cause_whose_log_cannot_be_written_is_shown_in_full(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "results/gpt/logs/a__a-1/context.log"
    log.parent.mkdir(parents=True)
    log.write_text(common.fault_line("repository_unreachable", "cannot fetch it") + "\n")

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(live, "keep_in_log", full_disk)
    common_settings = SimpleNamespace(stdout=True, quiet=None, verbose=False, dryrun=False, debug_dag=False,
                                      nocolor=True, show_failed_logs=False, printshellcmds=False)
    handler = LogHandler(common_settings, LogHandlerSettings(every=600))
    job(handler, 1, "context", [], "a__a-1", ["results/gpt/logs/a__a-1/context.log"])
    handler.handle(record(LogEvent.JOB_ERROR, jobid=1, rule_name="context", rule_msg=None, msg=None, input=[],
                          output=[], log=["results/gpt/logs/a__a-1/context.log"], conda_env=None, shellcmd=None, aux={}))
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["error: context a__a-1 failed: infrastructure fault: repository_unreachable: cannot fetch it",
                         "  log: results/gpt/logs/a__a-1/context.log"]

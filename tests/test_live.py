"""The run's view when not in a terminal (CI, SLURM logs, a pipe): the real snakemake with the project's
logger plugin, against the loopback model server; and `status --watch` on a running and a finished run."""
import re
import subprocess
import sys

from scripts import live

from conftest import PROJECT, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

STAGE_LINE = re.compile(r"^\d\d:\d\d:\d\d (context|prompt|generate|patch|repair) (\S+): \S")
SUMMARY = re.compile(r"^\d\d:\d\d:\d\d progress: context \d+/20 .*; spend \d+\.\d{4} USD.* of max_cost 1 USD; .*")


def test_a_20_instance_run_prints_a_line_per_instance_stage_and_summaries(tmp_path):
    rows = read_rows(PROJECT.parent / "shared/data/swebench_lite_test.jsonl")[::15][:20]
    failing = rows[3]["instance_id"]
    with FakeModelServer(rows, latency=0.5) as server:
        server.faults[failing] = ["500"] * 3
        server.faults[rows[11]["instance_id"]] = ["refusal"]
        result = snakemake(tmp_path, "--logger", "swebench", "--logger-swebench-every", "1", "--cores", "4",
                           "--config", f"dataset={write_rows(tmp_path / 'rows.jsonl', rows)}", "provider=openai",
                           f"base_url={server.url}/v1", "model=gpt-4o", "max_attempts=3", "retry_backoff=0.1",
                           "max_cost=1", env={"OPENAI_API_KEY": "sk-test"}, check=False)
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
    assert re.search(r"; ended with \d+ jobs not done$", summaries[-1]), summaries[-1]
    # never two messages on one line
    assert not [line for line in lines if len(re.findall(r"\d\d:\d\d:\d\d (progress|context|prompt|generate|patch)",
                                                         line)) > 1]

    # the failing instance: its error with the cause and the log file, and the log's lines
    error = next(i for i, line in enumerate(lines) if line.startswith(f"error: generate {failing} failed: "))
    assert "no answer after 3 attempt(s); last error: InternalServerError 500" in lines[error]
    assert lines[error + 1] == f"  log: results/openai-gpt-4o/logs/{failing}/generate.log"
    assert "attempt 1: InternalServerError 500" in lines[error + 2]


def watch(run, *args, timeout=None):
    return subprocess.run([sys.executable, "-m", "scripts.status", "--watch", "--every", "0.5", "--run", str(run),
                           *args], capture_output=True, text=True, cwd=PROJECT, timeout=timeout)


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
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        process.terminate()
    out = process.communicate()[0]
    assert process.returncode != 0 and out.count("\n") >= 3  # still going when stopped: a view each 0.3 s
    # no Snakemake holds the folder: the view says so
    assert out.count("generate 2/3") >= 3 and "not running (run the same command again to go on)" in out

    missing = watch(tmp_path / "nothing", timeout=60)
    assert missing.returncode == 2 and "no such run folder" in missing.stderr

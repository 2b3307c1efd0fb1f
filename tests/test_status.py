"""The status command, on run folders written record by record (each valid against its schema)."""
import json

import pytest

from scripts import common, costs, records, status

from conftest import assert_valid

pytestmark = pytest.mark.unit


def write_record(run, instance_id, name, record, schema):
    assert_valid(record, schema)
    path = run / "instances" / instance_id / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def context(instance_id):
    return {"instance_id": instance_id, "repo": "o/r", "base_commit": "abc", "strategy": "none",
            "problem_statement": "bug", "files": [], "token_counter": "estimate",
            "tokens": {"problem_statement": 1, "files": 0, "total": 1}, "source": "none", "candidates": 0,
            "budget": {"context_tokens": None, "template_reserve": 500, "files": None}}


def prompt(instance_id):
    return {"instance_id": instance_id, "template": "style3", "messages": [{"role": "user", "content": "fix"}],
            "tokens": 1, "token_counter": "estimate"}


def response(instance_id, failure=None):
    return {"instance_id": instance_id, "provider": "openai", "model": "m", "status": "failed" if failure else "ok",
            "failure_reason": failure, "failure_detail": failure and "why", "answer": None if failure else "diff",
            "stop_reason": None if failure else "end",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cached_input_tokens": 0, "cache_write_tokens": 0},
            "cost_usd": 0.01, "latency_s": 1.0,
            "attempts": [{"started_at": "2025-01-01T00:00:00Z", "latency_s": 1.0, "error": None, "status": 200,
                          "wait_s": 0.0}],
            "created_at": "2025-01-01T00:00:01Z", "raw_stop_reason": None if failure else "stop",
            "price_per_million": None, "dropped_context_files": []}


def patch(instance_id, reason=None):
    record = {"instance_id": instance_id, "status": "valid", "reason": None, "generation_failure": None, "problems": [],
              "source": "fence", "fixes": [], "files": ["a.py"], "hunks": 1, "lines_added": 1, "lines_removed": 1,
              "rejected_patch": None, "applies": True, "apply_attempt": "git apply --verbose", "apply_error": None,
              "syntax_errors": []}
    if reason == "invalid_diff":
        record.update(status="invalid", reason=reason, problems=["hunk 1 of a.py does not parse"], rejected_patch="x",
                      applies=None, apply_attempt=None)
    elif reason == "does_not_apply":
        record.update(status="invalid", reason=reason, problems=["hunk 1 of a.py does not apply"], rejected_patch="x",
                      applies=False, apply_attempt=None, apply_error="error: patch failed: a.py:1")
    elif reason:
        record.update(status="empty", reason=reason, source=None, files=[], hunks=0, lines_added=0, lines_removed=0,
                      generation_failure="refused" if reason == "generation_failed" else None, applies=None,
                      apply_attempt=None)
    return record


def report(instance_id, outcome):
    return {"instance_id": instance_id, "backend": "docker", "harness": "swebench 4.1.0", "run_id": "r.0",
            "model_name_or_path": "m", "patch_sha256": "0" * 64, "status": outcome, "resolved": outcome == "resolved",
            "reason": None if outcome in ("resolved", "unresolved") else "why", "duration_s": 1.0,
            "logs": "evaluation", "report": None}


# instance: (generation failure, patch reason, evaluation status); None: the file is not there
OUTCOMES = {
    "o__r-1": (None, None, "resolved"),
    "o__r-2": (None, None, "unresolved"),
    "o__r-3": ("refused", "generation_failed", "empty_patch"),
    "o__r-4": (None, "no_diff", "empty_patch"),
    "o__r-5": (None, "invalid_diff", "empty_patch"),
    "o__r-6": (None, None, "patch_failed"),
    "o__r-7": (None, None, "build_failed"),
    "o__r-8": (None, None, "timeout"),
    "o__r-9": (None, None, "error"),
    "o__r-10": (None, None, None),  # not evaluated yet
    "o__r-13": (None, "does_not_apply", "empty_patch"),
}
NOT_ANSWERED = "o__r-11"  # context and prompt only; its generate job failed (a log, no response.json)
NOT_STARTED = "o__r-12"


def make_run(run):
    ids = [*OUTCOMES, NOT_ANSWERED, NOT_STARTED]
    index = {instance_id: [100 * n, 100] for n, instance_id in enumerate(ids)}
    assert_valid(index, "instance_index")
    run.mkdir(parents=True)
    (run / "instances.index.json").write_text(json.dumps(index))
    for instance_id, (failure, reason, outcome) in OUTCOMES.items():
        write_record(run, instance_id, "context.json", context(instance_id), "context")
        write_record(run, instance_id, "prompt.json", prompt(instance_id), "prompt")
        write_record(run, instance_id, "response.json", response(instance_id, failure), "response")
        write_record(run, instance_id, "patch.json", patch(instance_id, reason), "patch")
        if outcome:
            write_record(run, instance_id, "evaluation.json", report(instance_id, outcome), "evaluate")
    write_record(run, NOT_ANSWERED, "context.json", context(NOT_ANSWERED), "context")
    write_record(run, NOT_ANSWERED, "prompt.json", prompt(NOT_ANSWERED), "prompt")
    (run / "logs" / NOT_ANSWERED).mkdir(parents=True)
    (run / "logs" / NOT_ANSWERED / "generate.log").write_text("429 Too Many Requests\n")
    # o__r-10 has no report: its evaluation failed on the machinery, twice
    (run / "logs" / "o__r-10").mkdir(parents=True)
    (run / "logs" / "o__r-10" / "evaluate.log").write_text(
        "infrastructure fault: network: an earlier attempt\n"
        "evaluate o__r-10: nothing written; a plain rerun retries it.\n"
        "infrastructure fault: registry_rate_limit: the image registry limits pulls (toomanyrequests)\n")
    (run / "predictions.jsonl").write_text("")
    return run


def test_status_counts_and_lists_every_kind_of_outcome(tmp_path, capsys):
    run = make_run(tmp_path / "results" / "r")
    assert status.main(["--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out  # plain text
    lines = out.splitlines()
    assert lines[0] == f"{run}: 13 instances selected"
    table = {line.split()[0]: line.split(None, 4)[1:] for line in lines[3:9]}
    assert table["context"] == ["12", "0", "1"]
    assert table["prompt"] == ["12", "0", "1"]
    assert table["generate"] == ["10", "1", "2", "failed: refused 1"]
    assert table["patch"] == ["7", "4", "2",
                              "failed: does_not_apply 1, generation_failed 1, invalid_diff 1, no_diff 1"]
    assert table["evaluate"] == ["2", "8", "3",
                                 "failed: build_failed 1, empty_patch 4, error 1, patch_failed 1, timeout 1"]
    assert "run files: predictions.jsonl yes, evaluation.json no, summary.md no, figures no" in out

    failed = out[out.index("Failed for good (8)"):out.index("Infrastructure faults")]
    folder = run / "instances"
    # each instance once, at its first failed stage, with the file to look at
    assert failed.count("\n  ") == 8
    for instance_id, stage, reason, name in [
        ("o__r-3", "generate", "refused", "response.json"), ("o__r-4", "patch", "no_diff", "patch.json"),
        ("o__r-5", "patch", "invalid_diff", "patch.json"), ("o__r-6", "evaluate", "patch_failed", "evaluation.json"),
        ("o__r-7", "evaluate", "build_failed", "evaluation.json"), ("o__r-8", "evaluate", "timeout", "evaluation.json"),
        ("o__r-9", "evaluate", "error", "evaluation.json"), ("o__r-13", "patch", "does_not_apply", "patch.json"),
    ]:
        line = next(line for line in failed.splitlines() if line.split()[:1] == [instance_id])
        assert line.split() == [instance_id, stage, reason, str(folder / instance_id / name)]

    # each cause of the faults once, with its count and fix, before the instances it holds
    assert ("1 instance failed for one cause: registry_rate_limit (the image registry limits pulls "
            f"(toomanyrequests)). Fix: {records.FIXES['registry_rate_limit']}. A rerun retries it.\n\n"
            "Infrastructure faults (1)") in out
    # apart from the model's failures: the instance whose evaluation failed on the machinery
    faults = out[out.index("Infrastructure faults (1)"):out.index("Still to do")]
    assert "not on the model's work" in faults and "a rerun retries it" in faults
    assert faults.splitlines()[1].split()[:6] == ["o__r-10", "evaluate", "registry_rate_limit", "a", "rerun",
                                                  "retries"]
    assert "the image registry limits pulls (toomanyrequests)" in faults

    to_do = out[out.index("Still to do (2)"):]
    assert "snakemake --cores N" in to_do
    assert [line.split()[:2] for line in to_do.splitlines()[1:]] == [["o__r-11", "generate"], ["o__r-12", "context"]]
    assert f"last attempt's log: {run / 'logs' / NOT_ANSWERED / 'generate.log'}" in to_do


def test_status_of_a_run_without_evaluation_says_so(tmp_path, capsys):
    run = tmp_path / "results" / "gold"
    run.mkdir(parents=True)
    (run / "instances.index.json").write_text(json.dumps({"o__r-1": [0, 10]}))
    for name, record, schema in [("context.json", context("o__r-1"), "context"),
                                 ("prompt.json", prompt("o__r-1"), "prompt"),
                                 ("response.json", response("o__r-1"), "response"),
                                 ("patch.json", patch("o__r-1"), "patch")]:
        write_record(run, "o__r-1", name, record, schema)
    (run / "summary.json").write_text(json.dumps({"mode": "generate", "evaluation": "none"}))
    assert status.main(["--results", str(tmp_path / "results")]) == 0  # every run under results/
    out = capsys.readouterr().out
    assert "evaluate        -       -      -   not part of this run (evaluation=none)" in out
    assert "patch           1       0      0" in out
    assert "Failed for good" not in out and "Still to do" not in out


def test_status_of_a_missing_run_folder_fails_with_a_message(tmp_path, capsys):
    assert status.main(["--run", str(tmp_path / "results" / "nope")]) == 2
    assert capsys.readouterr().err == f"status: no such run folder: {tmp_path / 'results' / 'nope'}\n"
    assert status.main(["--results", str(tmp_path / "results")]) == 2
    assert "no run under" in capsys.readouterr().err


def test_status_names_a_corrupt_file(tmp_path, capsys):
    run = make_run(tmp_path / "results" / "r")
    corrupt = run / "instances" / "o__r-4" / "patch.json"
    corrupt.write_text('{"instance_id": "o__r-4", "status": ')
    assert status.main(["--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"status: cannot read {corrupt}: ") and "Delete it and rerun" in err


def test_status_gives_the_spend_of_the_ledger_with_self_repair_and_what_the_budget_stopped(tmp_path, capsys):
    from scripts import costs

    run = tmp_path / "results" / "budget"
    (run).mkdir(parents=True)
    (run / "instances.index.json").write_text(json.dumps({"o__r-1": [0, 10], "o__r-2": [10, 10], "o__r-3": [20, 10]}))
    write_record(run, "o__r-1", "response.json", dict(response("o__r-1"), cost_usd=0.5), "response")
    write_record(run, "o__r-1", "patch.json", patch("o__r-1", "invalid_diff"), "patch")
    (run / "instances" / "o__r-1" / "repair.json").write_text(json.dumps(dict(patch("o__r-1"), cost_usd=0.25)))
    ledger = run / "spend.jsonl"
    for usd in (0.5, 0.25):
        costs.settle(ledger, costs.reserve(ledger, "o__r-1", usd, 2.0), "settled", usd)
    costs.settle(ledger, costs.reserve(ledger, "o__r-2", 0.125, 2.0), "worst_case")  # it timed out
    costs.reserve(ledger, "o__r-2", 0.5, 2.0)  # its job was then killed mid-request
    for instance in ("o__r-2", "o__r-3"):
        try:
            costs.reserve(ledger, instance, 1.0, 2.0)
        except costs.BudgetSpent:
            pass
    assert status.main(["--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert (f"spend: 1.3750 USD in 4 requests ({ledger}): answers 0.5000, self-repair 0.2500, requests of jobs "
            "that wrote nothing 0.6250") in out
    assert "  2 of them count at their worst case (0.6250 USD)" in out
    assert "  2 instances not asked: the budget max_cost was reached" in out
    assert costs.spent(ledger) == 1.375
    assert "Failed for good" not in out  # o__r-1's patch was rejected, and its repair mended it


def test_status_and_the_view_count_the_answers_of_every_sample(tmp_path, capsys):
    from scripts import live

    run = tmp_path / "results" / "k"
    ids = ["o__r-1", "o__r-2"]
    run.mkdir(parents=True)
    (run / "instances.index.json").write_text(json.dumps({i: [n * 10, 10] for n, i in enumerate(ids)}))
    (run / "run.json").write_text(json.dumps({"stages": ["context", "prompt", "generate", "patch", "evaluate"],
                                              "max_cost": None, "samples": 3}))
    for instance_id in ids:
        for name, record, schema in [("context.json", context(instance_id), "context"),
                                     ("prompt.json", prompt(instance_id), "prompt"),
                                     ("response.json", response(instance_id), "response"),
                                     ("samples/2/response.json", response(instance_id), "response"),
                                     ("evaluation.json", report(instance_id, "resolved"), "evaluate")]:
            write_record(run, instance_id, name, record, schema)
    write_record(run, "o__r-1", "samples/3/response.json", response("o__r-1"), "response")
    write_record(run, "o__r-1", "samples/2/evaluation.json", report("o__r-1", "unresolved"), "evaluate")
    for _ in range(5):  # what the five answers cost
        costs.record_spend(run / "spend.jsonl", "o__r-1", 0.01)
    # faults of the machinery in samples 1 and 2 (the patch stage) and 3 (o__r-2's answer), each in its own log
    unreachable = common.fault_line("repository_unreachable", "cannot fetch http://127.0.0.1:9/o/r.git; a rerun retries it")
    for log in ("o__r-1/patch.log", "o__r-1/samples/2/patch.log", "o__r-2/samples/2/patch.log"):
        common.append_log(run / "logs" / log, unreachable)
    common.append_log(run / "logs/o__r-2/samples/3/generate.log",
                      common.fault_line("provider_unreachable", "no answer after 3 attempt(s); a rerun retries it"))
    assert status.main(["--run", str(run)]) == 0
    out = capsys.readouterr().out
    assert (f"3 samples of 2 instances failed for one cause: repository_unreachable (cannot fetch http://127.0.0.1:9/o/r.git). "
            f"Fix: {records.FIXES['repository_unreachable']}. A rerun retries them.\n") in out
    assert (f"1 sample of 1 instance failed for one cause: provider_unreachable (no answer after 3 attempt(s)). "
            f"Fix: {records.FIXES['provider_unreachable']}. A rerun retries it.\n") in out
    assert "3 samples: 5/6 answered" in out
    assert "answers 0.0500, self-repair 0.0000, requests of jobs that wrote nothing 0.0000" in out
    assert "  sample 1   answered 2/2, evaluated 2, resolved 2\n" in out
    assert "  sample 2   answered 2/2, evaluated 1, resolved 0\n" in out
    assert "  sample 3   answered 1/2\n" in out
    snap = live.snapshot(run)
    assert live.samples_text(snap) == "3 samples: 5/6 answered"
    assert "; 3 samples: 5/6 answered; " in live.summary_line(snap, "ETA measuring")
    assert live.stage_outcome(run, "generate", "o__r-1", "samples/3/").startswith("generate o__r-1 sample 3: answered in ")
    assert live.samples_text(live.snapshot(tmp_path / "nothing")) == ""  # a run of one sample says nothing of them
    # retry_failed sets aside a failed answer of any sample
    write_record(run, "o__r-2", "samples/3/response.json", response("o__r-2", "refused"), "response")
    assert records.set_aside_failures(run, ids, stamp="T") == [run / "instances/o__r-2/samples/3/response.json"]
    assert (run / "instances/o__r-2/samples/3/response.failed-T.json").is_file()

"""A run's records: the set aside of those that a rerun makes again."""
import json
import os

import pytest

from scripts.records import FIXES, earlier_duration, set_aside_failures

pytestmark = pytest.mark.unit


def test_set_aside_failures_renames_the_file_that_must_change(tmp_path):
    def write(instance_id, name, record):
        path = tmp_path / "instances" / instance_id / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))

    write("refused", "response.json", {"status": "failed", "failure_reason": "refused"})
    write("no-diff", "response.json", {"status": "ok"})
    write("no-diff", "patch.json", {"status": "empty", "reason": "no_diff"})
    write("crashed", "response.json", {"status": "ok"})
    write("crashed", "patch.json", {"status": "valid"})
    write("crashed", "evaluation.json", {"status": "error"})
    write("fine", "response.json", {"status": "ok"})
    write("fine", "patch.json", {"status": "valid"})
    write("fine", "evaluation.json", {"status": "resolved"})
    moved = set_aside_failures(tmp_path, ["refused", "no-diff", "crashed", "fine", "not-started"], stamp="T1")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in moved) == [
        "instances/crashed/evaluation.json", "instances/no-diff/response.json", "instances/refused/response.json"]
    assert (tmp_path / "instances/refused/response.failed-T1.json").is_file()
    assert (tmp_path / "instances/crashed/evaluation.failed-T1.json").is_file()
    assert (tmp_path / "instances/no-diff/patch.json").is_file()  # remade from the new answer
    assert (tmp_path / "instances/fine/evaluation.json").is_file()


def test_failure_causes_groups_the_failed_instances_by_the_cause_of_their_latest_log(tmp_path):
    from scripts import common, evaluate
    from scripts.records import cause_lines, failure_causes

    def fail(instance_id, stage, line):
        common.append_log(tmp_path / "logs" / instance_id / f"{stage}.log", line)

    (tmp_path / "instances").mkdir()
    unreachable = "cannot fetch http://127.0.0.1:9/pallets/flask.git: connection refused"
    for instance_id in ("a", "b", "c"):  # as scripts/context.py writes it
        fail(instance_id, "context", f"error: {instance_id}: {unreachable}")
        fail(instance_id, "context", common.fault_line("repository_unreachable", f"{unreachable}; a rerun retries it"))
    # an earlier fault of d, then the latest attempt's: the latest counts
    fail("d", "context", common.fault_line("repository_unreachable", "earlier"))
    (tmp_path / "instances" / "d").mkdir()
    for stage, name in (("context", "context.json"), ("prompt", "prompt.json"), ("generate", "response.json"),
                        ("patch", "patch.json")):
        (tmp_path / "instances" / "d" / name).write_text(json.dumps({"status": "ok" if stage != "patch" else "valid"}))
    error = evaluate.fault("network", "Error: dial tcp: lookup registry-1.docker.io: i/o timeout")
    fail("d", "evaluate", common.fault_line(error.cause, error))
    fail("e", "context", "a log without a fault line: a job still to do, no fault")

    causes = failure_causes(tmp_path, ["a", "b", "c", "d", "e"])
    assert {cause: (n, ids) for cause, (n, _, ids) in causes.items()} == {
        "repository_unreachable": (3, [("a", 1), ("b", 1), ("c", 1)]), "network": (1, [("d", 1)])}
    lines = cause_lines(causes)
    assert lines == [
        f"3 instances failed for one cause: repository_unreachable ({unreachable}). "
        f"Fix: {FIXES['repository_unreachable']}. A rerun retries them.",
        "1 instance failed for one cause: network (Error: dial tcp: lookup registry-1.docker.io: i/o timeout). "
        f"Fix: {evaluate.FIXES['network']}. A rerun retries it."]
    assert cause_lines({}) == []


def test_earlier_duration_is_the_longest_evaluation_of_any_run_or_of_the_gold_validation(tmp_path):
    def write(path, record):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))

    results, cache = tmp_path / "results", tmp_path / "cache"
    write(results / "a" / "instances" / "x-1" / "evaluation.json", {"duration_s": 12.7})
    write(results / "b" / "instances" / "x-1" / "samples" / "2" / "evaluation.json", {"duration_s": 40.2})
    write(results / "b" / "instances" / "x-2" / "evaluation.json", {"duration_s": 3.0})
    write(results / "b" / "instances" / "x-3" / "evaluation.json.tmp", {"duration_s": 99})
    write(cache / "0123abcd" / "x-3.json", {"gold": {"duration_s": 61.5}})
    write(cache / "0123abcd" / "x-2.json", {"gold": None})  # broken before any container ran
    (cache / "0123abcd" / "x-4.json").write_text("{")  # being written
    assert [earlier_duration(results, cache, i) for i in ("x-1", "x-2", "x-3", "x-4", "x-5")] == [40, 3, 61, 0, 0]
    assert earlier_duration(tmp_path / "nothing", tmp_path / "none", "x-1") == 0


def test_an_evaluations_fault_is_that_of_the_latest_log_of_it_its_pull_or_its_gold_validation(tmp_path):
    from scripts import common

    logs = tmp_path / "logs" / "x-1"
    logs.mkdir(parents=True)
    written = {}
    for at, (stage, cause) in enumerate((("evaluate", "network"), ("pull", "registry_rate_limit"),
                                         ("validate", "docker_daemon")), start=1):
        written[stage] = logs / f"{stage}.log"
        written[stage].write_text(common.fault_line(cause, f"{stage} failed") + "\n")
        os.utime(written[stage], ns=(at * 10**9, at * 10**9))
    # the validation ran last: it stopped the evaluation, which waits for it
    assert common.stage_log(tmp_path, "x-1", "evaluate") == written["validate"]
    assert common.stage_fault(tmp_path, "x-1", "evaluate") == ("docker_daemon", "validate failed")
    # the validation itself waits for the pull only
    os.utime(written["pull"], ns=(9 * 10**9, 9 * 10**9))
    assert common.stage_fault(tmp_path, "x-1", "validate") == ("registry_rate_limit", "pull failed")
    os.utime(written["evaluate"], ns=(10 * 10**9, 10 * 10**9))
    assert common.stage_fault(tmp_path, "x-1", "evaluate") == ("network", "evaluate failed")
    assert common.stage_fault(tmp_path, "x-1", "validate") == ("registry_rate_limit", "pull failed")
    assert common.stage_log(tmp_path, "x-2", "evaluate") is None and common.stage_fault(tmp_path, "x-2", "evaluate") is None

"""A run's records: the set aside of those that a rerun makes again."""
import json

import pytest

from scripts.records import set_aside_failures

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

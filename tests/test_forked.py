"""Jobs run as forks of a process that imported their module once (scripts/forked.py)."""
import json

import pytest

from scripts import forked

pytestmark = pytest.mark.unit


def test_a_forked_job_writes_its_output_and_log_as_its_command_line_would(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the job runs in the folder of the caller, as Snakemake's shell jobs do
    (tmp_path / "rows.jsonl").write_text(json.dumps({"instance_id": "a-1", "repo": "o/a"}) + "\n")
    (tmp_path / "preds.jsonl").write_text(json.dumps({"instance_id": "a-1", "model_patch": ""}) + "\n")
    forked.run("scripts.evaluate", ["merge", "--instances", "rows.jsonl", "--predictions", "preds.jsonl",
                                    "--run-dir", ".", "--backend", "docker", "--out", "evaluation.json"], "logs/merge.log")
    assert json.loads((tmp_path / "evaluation.json").read_text())["empty_patch_ids"] == ["a-1"]
    assert (tmp_path / "logs" / "merge.log").read_text() == ""

    with pytest.raises(forked.JobFailed, match="exited with 2; its log: logs/bad.log"):
        forked.run("scripts.evaluate", ["instance", "--backend", "nowhere"], "logs/bad.log")
    assert "invalid choice: 'nowhere'" in (tmp_path / "logs" / "bad.log").read_text()
    # an exception: its traceback goes to the log, as the command line prints it
    with pytest.raises(forked.JobFailed, match="exited with 1"):
        forked.run("scripts.evaluate", ["instance", "--backend", "docker", "--instances", "rows.jsonl", "--index",
                                        "missing.json", "--predictions", "preds.jsonl", "--id", "a-1", "--run-id", "r",
                                        "--out", "out.json"], "logs/missing.log")
    assert "FileNotFoundError" in (tmp_path / "logs" / "missing.log").read_text()
    assert not (tmp_path / "out.json").exists()


def test_a_rule_s_command_line_is_run_forked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.jsonl").write_text(json.dumps({"instance_id": "a 1", "repo": "o/a"}) + "\n")
    (tmp_path / "preds.jsonl").write_text(json.dumps({"instance_id": "a 1", "model_patch": None}) + "\n")
    forked.run_command("python -m scripts.evaluate merge --instances rows.jsonl --predictions preds.jsonl --run-dir . "
                       "--backend docker --out 'with space.json'", "merge.log")
    assert json.loads((tmp_path / "with space.json").read_text())["empty_patch_ids"] == ["a 1"]
    with pytest.raises(ValueError, match="not a command line `python -m <module> ...`: bash -c true"):
        forked.run_command("bash -c true", "other.log")

import json

import pytest

from conftest import DATA, assert_valid, read_rows, write_rows
from scripts import generate
from scripts.select import write_selection

PROMPT = {"instance_id": "x", "messages": [{"role": "user", "content": "fix it"}]}


def test_gold_answers_with_the_reference_patch(lite_rows):
    row = lite_rows[3]
    record = generate.generate(PROMPT, row, "gold", "gold", {})
    assert_valid(record, "response")
    assert record["status"] == "ok"
    assert record["answer"] == row["patch"]
    assert record["instance_id"] == row["instance_id"]
    assert len(record["attempts"]) == 1 and record["attempts"][0]["error"] is None


def test_replay_takes_full_output_then_model_patch(tmp_path, lite_rows):
    replay_file = write_rows(tmp_path / "answers.jsonl", [
        {"instance_id": lite_rows[0]["instance_id"], "full_output": "the whole answer", "model_patch": "p"},
        {"instance_id": lite_rows[1]["instance_id"], "model_patch": "only the patch"},
        # a row that mentions another id in its text must not be taken for it
        {"instance_id": "other", "full_output": json.dumps(lite_rows[2]["instance_id"])},
    ])
    settings = {"replay_file": str(replay_file)}
    assert generate.generate(PROMPT, lite_rows[0], "replay", "m", settings)["answer"] == "the whole answer"
    assert generate.generate(PROMPT, lite_rows[1], "replay", "m", settings)["answer"] == "only the patch"
    missing = generate.generate(PROMPT, lite_rows[2], "replay", "m", settings)
    assert_valid(missing, "response")
    assert missing["status"] == "failed"
    assert missing["failure_reason"] == "no_answer_recorded"
    assert missing["answer"] is None


def test_replay_of_real_answers(lite_rows):
    replay_file = DATA / "preds_swe4cc_claude-sonnet-4-5_standard_api_39.jsonl"
    recorded = read_rows(replay_file)[0]
    row = next(r for r in lite_rows if r["instance_id"] == recorded["instance_id"])
    record = generate.generate(PROMPT, row, "replay", "claude", {"replay_file": str(replay_file)})
    assert record["answer"] == recorded["full_output"]


def test_transient_fault_raises_and_cli_writes_nothing(tmp_path, lite_rows, monkeypatch):
    def flaky(prompt, row, settings):
        raise ConnectionError("connection reset")

    monkeypatch.setitem(generate.PROVIDERS, "gold", flaky)
    rows_path, index_path = tmp_path / "instances.jsonl", tmp_path / "index.json"
    write_selection(lite_rows[:2], rows_path, index_path)
    prompt_path = tmp_path / "prompt.json"
    prompt_path.write_text(json.dumps(PROMPT))
    out = tmp_path / "response.json"
    args = ["--prompt", str(prompt_path), "--instances", str(rows_path), "--index", str(index_path),
            "--id", lite_rows[1]["instance_id"], "--provider", "gold", "--model", "gold", "--out", str(out)]
    with pytest.raises(ConnectionError):
        generate.main(args)
    assert list(tmp_path.glob("response*")) == [] and list(tmp_path.glob(".response*")) == []
    monkeypatch.undo()
    generate.main(args)
    assert json.loads(out.read_text())["answer"] == lite_rows[1]["patch"]

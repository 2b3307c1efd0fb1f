import json

import pytest

from scripts import generate
from scripts.select import write_selection
from scripts.settings import api_settings

from conftest import DATA, assert_valid, read_rows, run_config, write_rows

PROMPT = {"instance_id": "x", "messages": [{"role": "user", "content": "fix it"}]}


@pytest.mark.unit
def test_gold_answers_with_the_reference_patch(lite_rows):
    row = lite_rows[3]
    record = generate.generate(PROMPT, row, "gold", "gold", {})
    assert_valid(record, "response")
    assert record["status"] == "ok"
    assert record["answer"] == row["patch"]
    assert record["instance_id"] == row["instance_id"]
    assert len(record["attempts"]) == 1 and record["attempts"][0]["error"] is None


@pytest.mark.unit
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


@pytest.mark.unit
def test_replay_of_real_answers(lite_rows):
    replay_file = next(DATA.glob("preds_swe4cc_*.jsonl"))
    recorded = read_rows(replay_file)[0]
    row = next(r for r in lite_rows if r["instance_id"] == recorded["instance_id"])
    record = generate.generate(PROMPT, row, "replay", "m", {"replay_file": str(replay_file)})
    assert record["answer"] == recorded["full_output"]


def stage_inputs(folder, rows):
    """The generate stage's named inputs for rows: the selection, its index and the prompt, written in folder."""
    rows_path, index_path = folder / "instances.jsonl", folder / "index.json"
    write_selection(rows, rows_path, index_path)
    prompt_path = folder / "prompt.json"
    prompt_path.write_text(json.dumps(PROMPT))
    return {"prompt": prompt_path, "instances": rows_path, "index": index_path}


@pytest.mark.unit
def test_run_writes_response_and_log(tmp_path, lite_rows):
    inputs = stage_inputs(tmp_path, lite_rows[:2])
    out, log = tmp_path / "response.json", tmp_path / "logs" / "generate.log"
    settings = api_settings("gold", run_config(), tmp_path)
    generate.run(lite_rows[1]["instance_id"], inputs, "gold", "gold", settings, out, log)
    assert json.loads(out.read_text())["answer"] == lite_rows[1]["patch"]
    assert "ok gold" in log.read_text()


@pytest.mark.unit
def test_the_stage_as_its_rule_calls_it(tmp_path, lite_rows):
    inputs = stage_inputs(tmp_path, lite_rows[:2])
    out, log = tmp_path / "response.json", tmp_path / "generate.log"
    stage_settings = {"provider": "gold", "model": "gold", "settings": api_settings("gold", run_config(), tmp_path)}
    generate.run_stage(lite_rows[0]["instance_id"], inputs, [out], log, stage_settings)
    record = json.loads(out.read_text())
    assert_valid(record, "response")
    assert (record["instance_id"], record["answer"]) == (lite_rows[0]["instance_id"], lite_rows[0]["patch"])


@pytest.mark.unit
def test_backoff_doubles_with_jitter_and_a_cap():
    settings = {"retry_backoff": 2.0}
    for attempt, full in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)]:
        waits = [generate.backoff_seconds(attempt, settings) for _ in range(50)]
        assert all(full * 0.5 <= w <= full for w in waits)
        assert len(set(waits)) > 1


@pytest.mark.unit
def test_redact_hides_the_key():
    assert generate.redact("bad key sk-abc123 given", {"api_key": "sk-abc123"}) == "bad key [redacted] given"
    assert generate.redact("nothing", {"api_key": None}) == "nothing"


@pytest.mark.workflow
def test_a_changed_setting_never_discards_paid_answers(tmp_path):
    from conftest import LITE_TEST, snakemake, snapshot
    from fake_api import FakeModelServer

    rows = read_rows(LITE_TEST)[60:63]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    run = tmp_path / "results" / "paid"
    env = {"OPENAI_API_KEY": "sk-test-paid"}
    with FakeModelServer(rows) as server:
        def config(*extra):
            return ["--config", f"dataset={dataset}", "provider=openai", f"base_url={server.url}/v1",
                    "model=gpt-4o", "run_id=paid", "context=none", *extra]

        snakemake(tmp_path, *config(), env=env)
        assert len(server.requests) == 3
        before = snapshot(run)

        changed = snakemake(tmp_path, *config("temperature=0.7"), env=env, check=False)
        assert changed.returncode != 0
        assert "temperature=0.0 (now 0.7)" in changed.stderr
        assert "run_id=NAME" in changed.stderr and "overwrite=true" in changed.stderr
        assert len(server.requests) == 3 and snapshot(run) == before
        dry = snakemake(tmp_path, "-n", *config("prompt_style=search_replace"), env=env, check=False)
        assert dry.returncode != 0 and "prompt_style='style3' (now 'search_replace')" in dry.stderr

        # The prompt is made again without a changed setting (here: deleted); the job keeps the answer.
        stale = rows[1]["instance_id"]
        (run / "instances" / stale / "prompt.json").unlink()
        kept = snakemake(tmp_path, *config(), env=env, check=False)
        assert kept.returncode != 0 and "holds a paid answer" in kept.stderr + kept.stdout
        assert len(server.requests) == 3
        assert snapshot(run)[f"instances/{stale}/response.json"] == before[f"instances/{stale}/response.json"]
        snakemake(tmp_path, *config(), env=env)  # a rerun goes on with the kept answer
        assert len(server.requests) == 3
        assert snapshot(run)[f"instances/{stale}/response.json"] == before[f"instances/{stale}/response.json"]

        again = snakemake(tmp_path, *config("temperature=0.7", "overwrite=true"), env=env)
    assert again.returncode == 0 and len(server.requests) == 6
    assert all(r["body"]["temperature"] == 0.7 for r in server.requests[3:])
    for row in rows:
        folder = run / "instances" / row["instance_id"]
        (aside,) = folder.glob("response.overwritten-*.json")
        assert aside.read_bytes() == before[f"instances/{row['instance_id']}/response.json"]

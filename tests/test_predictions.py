import json

import pytest

from scripts import predictions
from scripts.select import write_selection

from conftest import DATA, assert_valid, read_rows, write_rows


def test_load_jsonl_list_and_preds_dict(tmp_path):
    rows = [{"instance_id": "b", "model_patch": "pb", "model_name_or_path": "m"},
            {"instance_id": "a", "model_patch": None, "model_name_or_path": "m"}]
    as_jsonl = write_rows(tmp_path / "p.jsonl", rows)
    as_list = tmp_path / "p.json"
    as_list.write_text(json.dumps(rows))
    as_dict = tmp_path / "preds.json"
    as_dict.write_text(json.dumps({r["instance_id"]: r for r in rows}))
    one_row = tmp_path / "one.json"
    one_row.write_text(json.dumps(rows[0]))
    for path in (as_jsonl, as_list, as_dict):
        assert predictions.load_predictions(path) == {r["instance_id"]: r for r in rows}
    assert list(predictions.load_predictions(one_row)) == ["b"]


@pytest.mark.parametrize("text, message", [
    ("{not json\n", "not valid JSON or JSONL"),
    ('{"model_patch": "x"}\n{"model_patch": "y"}\n', "prediction 1 .* has no instance_id"),
    ('{"instance_id": "a", "model_patch": 3}\n', "model_patch that is not text"),
    ("[]", "holds no predictions"),
])
def test_load_errors(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(predictions.PredictionsError, match=message):
        predictions.load_predictions(path)


def test_merge_generated_sorted_with_empty_patches(tmp_path):
    for instance_id, patch in [("b__b-2", "diff b\n"), ("a__a-1", "")]:
        folder = tmp_path / "instances" / instance_id
        folder.mkdir(parents=True)
        (folder / "patch.diff").write_text(patch)
    rows = predictions.merge_generated([tmp_path / "instances" / i / "patch.diff" for i in ("b__b-2", "a__a-1")], "my-model")
    assert rows == [
        {"instance_id": "a__a-1", "model_name_or_path": "my-model", "model_patch": ""},
        {"instance_id": "b__b-2", "model_name_or_path": "my-model", "model_patch": "diff b\n"},
    ]
    for row in rows:
        assert_valid(row, "prediction")


def test_merge_given_real_predictions():
    given = predictions.load_predictions(DATA / "preds_20240617_moatless_gpt4o.jsonl")
    selected = sorted(given)[:25]
    rows = predictions.merge_given(selected, given)
    assert [r["instance_id"] for r in rows] == selected
    assert all(r["model_patch"] == (given[r["instance_id"]]["model_patch"] or "") for r in rows)
    with pytest.raises(predictions.PredictionsError, match="1 selected instance.*no prediction: zzz"):
        predictions.merge_given(selected + ["zzz"], given)


def test_cli_given_and_error(tmp_path, lite_rows, capsys):
    rows_path, index_path = tmp_path / "instances.jsonl", tmp_path / "index.json"
    write_selection(lite_rows[:3], rows_path, index_path)
    given = write_rows(tmp_path / "mine.jsonl", [
        {"instance_id": r["instance_id"], "model_patch": "x", "model_name_or_path": "mine"} for r in lite_rows[:5]
    ])
    out = tmp_path / "predictions.jsonl"
    predictions.main(["--index", str(index_path), "--given", str(given), "--out", str(out)])
    assert [r["instance_id"] for r in read_rows(out)] == sorted(r["instance_id"] for r in lite_rows[:3])
    assert "2 prediction(s) outside the selection left out" in capsys.readouterr().err
    short = write_rows(tmp_path / "short.jsonl", [{"instance_id": lite_rows[0]["instance_id"], "model_patch": ""}])
    with pytest.raises(SystemExit, match="have no prediction"):
        predictions.main(["--index", str(index_path), "--given", str(short), "--out", str(tmp_path / "p2.jsonl")])
    assert not (tmp_path / "p2.jsonl").exists()

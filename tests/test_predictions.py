import json

import pytest

from scripts import predictions
from scripts.select import write_selection

from conftest import DATA, assert_valid, read_rows, write_rows

pytestmark = pytest.mark.unit


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
    ('{"instance_id": "a"}\n{"instance_id": "b"}\n{"instance_id": "a"}\n{"instance_id": "b"}\n{"instance_id": "c"}\n',
     r"p.jsonl has more than one prediction for 2 instance\(s\): a, b. Keep one row per instance_id"),
    ('[{"instance_id": "z", "model_patch": ""}, {"instance_id": "z", "model_patch": "x"}]',
     "more than one prediction for 1 instance.s.: z"),
])
def test_load_errors(tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(predictions.PredictionsError, match=message):
        predictions.load_predictions(path)


DIFF = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n"


@pytest.mark.parametrize("patch, reason", [
    (DIFF, None),
    ("", None),  # empty: no patch, but not "not a diff"
    ("diff --git a/old.py b/new.py\nsimilarity index 100%\nrename from old.py\nrename to new.py\n", None),
    (f"Here is the fix:\n\n```diff\n{DIFF}```\nIt sets a to 2.\n", None),  # git apply takes it
    (DIFF.replace("@@ -1 +1 @@", "@@ -1,4 +1,4 @@"), None),  # a diff whose counts are off is still one
    ("Change a to 2 in x.py.", "no file header ('--- a/...' and '+++ b/...') was found"),
    ("```python\na = 2\n```\n", "no file header ('--- a/...' and '+++ b/...') was found"),
    ("--- a/x.py\n+++ b/x.py\n", "x.py: the file header is followed by no hunk"),
    ("@@ -1 +1 @@\n-a = 1\n+a = 2\n", "the hunks lack the '--- a/...' and '+++ b/...' lines"),
])
def test_not_a_diff(patch, reason):
    found = predictions.not_a_diff(patch)
    assert found == reason if reason is None else reason in found


def test_real_predictions_files_have_their_not_diffs_named():
    moatless = predictions.load_predictions(DATA / "preds_20240617_moatless_gpt4o.jsonl").values()
    assert predictions.not_diffs(moatless) == {}
    small_model = predictions.load_predictions(DATA / "preds_oracle_acecoder-qwen2.5-coder-7b_litesubset.jsonl")
    named = predictions.not_diffs(small_model.values())
    assert named and all(small_model[i]["model_patch"].strip() for i in named)
    assert all("--- a/" not in small_model[i]["model_patch"] or "@@" not in small_model[i]["model_patch"] for i in named)


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
    err = capsys.readouterr().err
    assert "2 prediction(s) outside the selection left out" in err
    prose = lite_rows[0]["instance_id"]
    assert f"predictions: {prose}: the model_patch of {given} is not a diff (no file header" in err
    assert err.count("is not a diff") == 3
    assert all(r["model_patch"] == "x" for r in read_rows(out))  # sent to the evaluation as given
    short = write_rows(tmp_path / "short.jsonl", [{"instance_id": lite_rows[0]["instance_id"], "model_patch": ""}])
    with pytest.raises(SystemExit, match="have no prediction"):
        predictions.main(["--index", str(index_path), "--given", str(short), "--out", str(tmp_path / "p2.jsonl")])
    assert not (tmp_path / "p2.jsonl").exists()

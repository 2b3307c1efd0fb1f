import json
import os
import subprocess
import sys

import pyarrow
import pyarrow.parquet
import pytest

from scripts import common, select

from conftest import LITE_DEV, LITE_TEST, PROJECT, assert_valid, read_rows, write_rows


@pytest.mark.unit
def test_select_by_ids_filter_count(lite_rows):
    ids = [r["instance_id"] for r in lite_rows]
    chosen = select.select(lite_rows, instances=[ids[5], ids[2], ids[5]])
    assert [r["instance_id"] for r in chosen] == [ids[5], ids[2]]  # given order, no duplicates
    django = select.select(lite_rows, id_filter=r"^django__", count=3)
    assert [r["instance_id"] for r in django] == [i for i in ids if i.startswith("django__")][:3]
    assert len(select.select(lite_rows, count=10)) == 10


@pytest.mark.unit
def test_shuffle_is_seeded(lite_rows):
    first = [r["instance_id"] for r in select.select(lite_rows, shuffle=True, seed=3, count=5)]
    again = [r["instance_id"] for r in select.select(lite_rows, shuffle=True, seed=3, count=5)]
    other = [r["instance_id"] for r in select.select(lite_rows, shuffle=True, seed=4, count=5)]
    assert first == again
    assert first != other
    assert first != [r["instance_id"] for r in lite_rows[:5]]


@pytest.mark.unit
def test_unknown_ids_are_named(lite_rows):
    with pytest.raises(select.SelectionError, match="1 instance id.s. of `instances` not in the dataset: nope__nope-1"):
        select.select(lite_rows, instances=[lite_rows[0]["instance_id"], "nope__nope-1"])


@pytest.mark.unit
def test_empty_selection_stops(lite_rows):
    with pytest.raises(select.SelectionError, match="selection is empty"):
        select.select(lite_rows, id_filter="^zzz")


@pytest.mark.unit
def test_missing_fields_are_named(lite_rows):
    rows = [dict(lite_rows[0]), dict(lite_rows[1])]
    del rows[1]["base_commit"]
    with pytest.raises(select.SelectionError, match=f"{rows[1]['instance_id']} lacks required field.*base_commit"):
        select.select(rows)
    rows[1]["base_commit"] = "abc"
    del rows[1]["patch"]
    select.select(rows)
    with pytest.raises(select.SelectionError, match="patch"):
        select.select(rows, required=["patch"])


@pytest.mark.unit
def test_row_without_id_is_named():
    with pytest.raises(select.SelectionError, match="row 2"):
        select.select([{"instance_id": "a"}, {"id": "b"}])


@pytest.mark.unit
@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_load_file_formats(tmp_path, suffix):
    rows = read_rows(LITE_DEV)
    path = tmp_path / f"rows{suffix}"
    if suffix == ".jsonl":
        write_rows(path, rows)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    assert select.load_rows(str(path), "test") == rows


@pytest.mark.unit
def test_load_file_errors(tmp_path):
    with pytest.raises(select.SelectionError, match="does not exist"):
        select.load_rows(str(tmp_path / "none.jsonl"), "test")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instance_id": "a"}\n{not json\n')
    with pytest.raises(select.SelectionError, match="cannot be read"):
        select.load_rows(str(bad), "test")
    obj = tmp_path / "obj.json"
    obj.write_text('{"instance_id": "a"}')
    with pytest.raises(select.SelectionError, match="JSON list"):
        select.load_rows(str(obj), "test")


@pytest.mark.unit
def test_hub_dataset_goes_through_datasets_offline(tmp_path):
    # The real datasets code path: offline and with an empty cache it cannot load, and says so. In a process
    # of its own, as a select job: the hub's client reads HF_HUB_OFFLINE and HF_HOME when first imported,
    # which another test of this session may have done without them (it would then try the network).
    out, index = tmp_path / "out.jsonl", tmp_path / "index.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    result = subprocess.run([sys.executable, "-m", "scripts.select", "--dataset", "lite", "--out", str(out),
                             "--index", str(index)], cwd=PROJECT, capture_output=True, text=True,
                            env={**env, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode != 0
    assert "SWE-bench/SWE-bench_Lite" in result.stderr and "HF_HUB_OFFLINE" in result.stderr
    assert not out.exists() and not index.exists()


@pytest.mark.unit
def test_written_selection_is_indexed(tmp_path, lite_rows):
    chosen = select.select(lite_rows, count=20)
    rows_path, index_path = tmp_path / "instances.jsonl", tmp_path / "index.json"
    select.write_selection(chosen, rows_path, index_path)
    assert read_rows(rows_path) == chosen
    index = json.loads(index_path.read_text())
    assert_valid(index, "instance_index")
    assert list(index) == [r["instance_id"] for r in chosen]
    for row in chosen:
        assert_valid(row, "instance")
        assert common.read_row(rows_path, index_path, row["instance_id"]) == row


@pytest.mark.unit
def test_cli_writes_selection_and_takes_prediction_ids(tmp_path):
    preds = tmp_path / "preds.jsonl"
    rows = read_rows(LITE_TEST)
    wanted = sorted(r["instance_id"] for r in rows[10:14])
    write_rows(preds, [{"instance_id": i, "model_patch": ""} for i in wanted])
    out, index = tmp_path / "out.jsonl", tmp_path / "index.json"
    select.main(["--dataset", str(LITE_TEST), "--predictions", str(preds), "--out", str(out), "--index", str(index)])
    assert [r["instance_id"] for r in read_rows(out)] == wanted


@pytest.mark.unit
def test_cli_error_exits_with_message(tmp_path, capsys):
    out, index = tmp_path / "out.jsonl", tmp_path / "index.json"
    with pytest.raises(SystemExit) as exit_:
        select.main(["--dataset", str(LITE_DEV), "--instances", "x__y-1", "--out", str(out), "--index", str(index)])
    assert f"select: 1 instance id(s) of `instances` not in the dataset {LITE_DEV}: x__y-1" in str(exit_.value.code)
    assert not out.exists() and not index.exists()


@pytest.mark.unit
def test_prediction_ids_not_in_the_dataset_name_the_predictions_file(tmp_path):
    preds = write_rows(tmp_path / "mine.jsonl", [{"instance_id": i, "model_patch": ""}
                                                 for i in (read_rows(LITE_DEV)[0]["instance_id"], "x__y-1", "x__y-2")])
    out, index = tmp_path / "out.jsonl", tmp_path / "index.json"
    with pytest.raises(SystemExit) as exit_:
        select.main(["--dataset", str(LITE_DEV), "--predictions", str(preds), "--out", str(out), "--index", str(index)])
    assert (f"select: 2 instance id(s) of the predictions file {preds} not in the dataset {LITE_DEV}: x__y-1, x__y-2. "
            f"Check the predictions file {preds} and `dataset`.") in str(exit_.value.code)
    assert not out.exists() and not index.exists()


@pytest.mark.workflow
def test_a_rejected_selection_leaves_the_run_as_it_was(tmp_path):
    from conftest import snakemake, snapshot

    dataset = write_rows(tmp_path / "rows.jsonl", read_rows(LITE_TEST)[:3])
    snakemake(tmp_path, "--config", f"dataset={dataset}")
    run = tmp_path / "results" / "gold"

    def files():  # logs/select.log tells why the last selection failed
        return {path: data for path, data in snapshot(run).items() if path != "logs/select.log"}

    before = files()
    assert "instances.jsonl" in before and "predictions.jsonl" in before

    typo = snakemake(tmp_path, "--config", f"dataset={dataset}", "instances=not__an-id", check=False)
    assert typo.returncode != 0
    assert "not in the dataset" in typo.stderr and "not__an-id" in typo.stderr
    assert files() == before

    unknown = snakemake(tmp_path, "--config", "dataset=lightt", check=False, env={"HF_HUB_OFFLINE": "1"})
    assert unknown.returncode != 0 and "lightt" in unknown.stderr
    assert files() == before

    status = subprocess.run([sys.executable, "-m", "scripts.status", "--run", str(run)], cwd=PROJECT,
                            capture_output=True, text=True)
    assert status.returncode == 0 and "3" in status.stdout


@pytest.mark.unit
def test_the_harness_specs_are_read_without_importing_the_harness():
    """In a new interpreter, as in Snakemake's process: the specs are the harness's own, no module of the harness
    is left behind, and a later import of the harness is the real one."""
    code = (
        "import sys\n"
        "from scripts.common import harness_specs\n"
        "specs = harness_specs()\n"
        "left = sorted(m for m in sys.modules if m.split('.')[0] in ('swebench', 'datasets', 'docker', 'modal'))\n"
        "from swebench.harness.constants import MAP_REPO_VERSION_TO_SPECS\n"
        "import swebench\n"
        "print(left, specs == MAP_REPO_VERSION_TO_SPECS, bool(swebench.__version__), harness_specs() is MAP_REPO_VERSION_TO_SPECS)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["[]", "True", "True", "True"]

"""Select: read a SWE-bench dataset once and write the selected rows as instances.jsonl.

Beside it goes instances.index.json, the byte offset of every row, so that per-instance
jobs read their own row without loading the selection.
"""
import argparse
import json
import random
import re
import sys
from pathlib import Path

from scripts.common import read_json, write_json_atomic, write_text_atomic
from scripts.settings import instance_list, is_dataset_path

HUB_NAMES = {
    "lite": "SWE-bench/SWE-bench_Lite",
    "verified": "SWE-bench/SWE-bench_Verified",
    "full": "SWE-bench/SWE-bench",
    "multimodal": "SWE-bench/SWE-bench_Multimodal",
}
REQUIRED_FIELDS = ("instance_id", "repo", "base_commit", "problem_statement")


class SelectionError(Exception):
    pass


def load_rows(dataset, split):
    """All rows of a dataset file or Hugging Face dataset, as dicts."""
    if is_dataset_path(dataset):
        return load_file(Path(dataset))
    import datasets  # slow to import, and only this path needs it

    name = HUB_NAMES.get(dataset, dataset)
    try:
        return list(datasets.load_dataset(name, split=split))
    except Exception as e:
        raise SelectionError(
            f"could not load dataset {name!r} split {split!r}: {e}. "
            "Check the name and split, your network (or HF_HUB_OFFLINE=1 with a filled cache), "
            "or give a local .json, .jsonl or .parquet file."
        ) from e


def load_file(path):
    if not path.is_file():
        raise SelectionError(f"dataset file {path} does not exist.")
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet

            return pyarrow.parquet.read_table(path).to_pylist()
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        rows = read_json(path)
    except (ValueError, OSError) as e:
        raise SelectionError(f"dataset file {path} cannot be read: {e}") from e
    if not isinstance(rows, list):
        raise SelectionError(f"dataset file {path} must hold a JSON list of rows.")
    return rows


def select(rows, instances=None, id_filter=None, shuffle=False, seed=0, count=None, required=()):
    """The selected rows: by ids, then regex filter, then shuffle, then the first `count`."""
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("instance_id"), str):
            raise SelectionError(f"row {number} of the dataset has no instance_id.")
    by_id = {row["instance_id"]: row for row in rows}
    if instances:
        unknown = [i for i in instances if i not in by_id]
        if unknown:
            raise SelectionError(
                f"{len(unknown)} instance id(s) not in the dataset: {', '.join(unknown[:10])}"
                f"{' ...' if len(unknown) > 10 else ''}. Check `instances` and `dataset`."
            )
        chosen = [by_id[i] for i in dict.fromkeys(instances)]
    else:
        chosen = list(by_id.values())
    if id_filter:
        chosen = [r for r in chosen if re.search(id_filter, r["instance_id"])]
    if shuffle:
        random.Random(seed).shuffle(chosen)
    if count is not None:
        chosen = chosen[:count]
    if not chosen:
        raise SelectionError(
            f"the selection is empty (dataset has {len(by_id)} rows; "
            f"instances={instances}, filter={id_filter!r}, count={count}). Widen it."
        )
    fields = REQUIRED_FIELDS + tuple(required)
    for row in chosen:
        missing = [f for f in fields if row.get(f) in (None, "")]
        if missing:
            raise SelectionError(
                f"instance {row['instance_id']} lacks required field(s) {', '.join(missing)}."
            )
    return chosen


def write_selection(rows, rows_path, index_path):
    lines = [json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows]
    index, offset = {}, 0
    for row, line in zip(rows, lines):
        size = len(line.encode("utf-8"))
        index[row["instance_id"]] = [offset, size]
        offset += size
    write_text_atomic(rows_path, "".join(lines))
    write_json_atomic(index_path, index)


def read_row(rows_path, index_path, instance_id):
    """One row of instances.jsonl, found through its index."""
    offset, size = read_json(index_path)[instance_id]
    with open(rows_path, "rb") as f:
        f.seek(offset)
        return json.loads(f.read(size))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--instances", default="")
    parser.add_argument("--filter", default="")
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int)
    parser.add_argument("--predictions", help="take the ids of these predictions when --instances is empty")
    parser.add_argument("--require", default="", help="comma-separated fields every selected row needs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--index", required=True)
    args = parser.parse_args(argv)
    try:
        instances = instance_list(args.instances)
        if args.predictions and not instances:
            from scripts.predictions import load_predictions

            instances = sorted(load_predictions(args.predictions))
        rows = select(
            load_rows(args.dataset, args.split),
            instances=instances,
            id_filter=args.filter or None,
            shuffle=args.shuffle,
            seed=args.seed,
            count=args.count,
            required=[f for f in args.require.split(",") if f],
        )
    except (SelectionError, ValueError) as e:
        sys.exit(f"select: {e}")
    write_selection(rows, args.out, args.index)
    print(f"select: {len(rows)} instance(s) from {args.dataset}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Select: read a SWE-bench dataset once and write the selected rows as instances.jsonl.

Beside it goes instances.index.json, the byte offset of every row, so that per-instance
jobs read their own row without loading the selection. With --retrieval it also reads a
SWE-bench retrieval dataset (princeton-nlp/SWE-bench_bm25_13K and siblings, or a local
file of instance_id and text), one row group or line at a time, and writes each selected
instance's files to retrieval.jsonl with an index of its own.
"""
import argparse
import json
import os
import random
import re
import sys
from pathlib import Path

from scripts.common import known_to_harness, open_atomic, read_json, write_json_atomic
from scripts.settings import HUB_NAMES, instance_list, is_dataset_path

REQUIRED_FIELDS = ("instance_id", "repo", "base_commit", "problem_statement")


class SelectionError(Exception):
    pass


# The datasets builder of a hub dataset's data files, by their extension.
HUB_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow", ".csv": "csv"}


def load_rows(dataset, split):
    """All rows of a dataset file or Hugging Face dataset, as dicts."""
    if is_dataset_path(dataset):
        return load_file(Path(dataset))
    name = HUB_NAMES.get(dataset, dataset)
    try:
        return list(load_hub_split(name, split))
    except SelectionError:
        raise
    except Exception as e:
        raise SelectionError(
            f"could not load dataset {name!r} split {split!r}: {str(e).rstrip('.')}. "
            "Check the name and split, your network (or HF_HUB_OFFLINE=1 with a filled cache), "
            "or give a local .json, .jsonl or .parquet file."
        ) from e


def load_hub_split(name, split):
    """One split of a hub dataset, as a datasets.Dataset, downloading that split's files only:
    datasets.load_dataset(name, split=...) downloads and prepares every split of the dataset
    (a retrieval set's train split is gigabytes). Online, the hub's listing says which files hold
    the split; offline (HF_HUB_OFFLINE=1), the files of an earlier run in the hub cache do."""
    import datasets  # slow to import, and only this path needs it
    import huggingface_hub

    if os.path.isdir(name):  # a local folder of data files: nothing to download
        return datasets.load_dataset(name, split=split)
    if datasets.config.HF_HUB_OFFLINE:
        try:
            folder = huggingface_hub.snapshot_download(name, repo_type="dataset", local_files_only=True)
        except huggingface_hub.errors.LocalEntryNotFoundError:
            raise FileNotFoundError(f"HF_HUB_OFFLINE=1 and the hub cache ({huggingface_hub.constants.HF_HUB_CACHE}) "
                                    "holds no copy of it") from None
        splits = {key: sorted(path for pattern in patterns for path in datasets.data_files.resolve_pattern(pattern, folder))
                  for key, patterns in datasets.data_files.get_data_patterns(folder).items()}
    else:
        builder = datasets.load_dataset_builder(name)
        splits = {key: list(files) for key, files in (builder.config.data_files or {}).items()}
    if split not in splits or not splits[split]:
        if datasets.config.HF_HUB_OFFLINE:
            raise SelectionError(f"split {split!r} of dataset {name!r} is not in the hub cache (it holds: "
                                 f"{', '.join(sorted(splits)) or 'none'}) and HF_HUB_OFFLINE=1 forbids downloading it. "
                                 "Run once online, or set `split` to one the cache holds.")
        raise SelectionError(f"dataset {name!r} has no split {split!r}; it has: {', '.join(sorted(splits)) or 'none'}. "
                             "Set `split` to one of them.")
    files = splits[split]
    if not datasets.config.HF_HUB_OFFLINE:
        # hf://datasets/<name>@<commit>/<path>, downloaded into the hub cache
        revisions_paths = [url.split("@", 1)[1].split("/", 1) for url in files]
        files = [huggingface_hub.hf_hub_download(name, path, repo_type="dataset", revision=revision)
                 for revision, path in revisions_paths]
    builder = HUB_FILE_BUILDERS.get(os.path.splitext(files[0])[1])
    if builder is None:
        raise SelectionError(f"dataset {name!r} keeps split {split!r} in {os.path.basename(files[0])}, a file type "
                             f"this workflow does not read ({', '.join(HUB_FILE_BUILDERS)}); give a local file instead.")
    return datasets.load_dataset(builder, data_files={split: files}, split=split)


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


def select(rows, instances=None, id_filter=None, shuffle=False, seed=0, count=None, required=(),
           ids_from="`instances`", dataset="the dataset"):
    """The selected rows: by ids, then regex filter, then shuffle, then the first `count`.
    ids_from and dataset name where the ids and the rows come from, for the error messages."""
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("instance_id"), str):
            raise SelectionError(f"row {number} of the dataset has no instance_id.")
    by_id = {row["instance_id"]: row for row in rows}
    if instances:
        unknown = [i for i in instances if i not in by_id]
        if unknown:
            raise SelectionError(
                f"{len(unknown)} instance id(s) of {ids_from} not in {dataset}: {', '.join(unknown[:10])}"
                f"{' ...' if len(unknown) > 10 else ''}. Check {ids_from} and `dataset`."
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


def check_evaluable(rows):
    """Stop when the SWE-bench harness has no specifications (environment, test command) for some
    rows' repository and version: evaluation=docker or modal could not evaluate them."""
    import importlib.metadata

    unknown = [r for r in rows if not known_to_harness(r)]
    if unknown:
        names = ", ".join(f"{r['instance_id']} ({r['repo']} {r.get('version')})" for r in unknown[:10])
        raise SelectionError(
            f"the SWE-bench harness (swebench {importlib.metadata.version('swebench')}) has no specifications for "
            f"{len(unknown)} selected instance(s), so it cannot evaluate them: {names}{' ...' if len(unknown) > 10 else ''}. "
            "Narrow the selection (`instances`, `filter`) to repositories and versions the harness knows, "
            "or set evaluation=none."
        )


def write_indexed_jsonl(rows, rows_path, index_path):
    """Write rows as JSONL, one at a time, and the byte offset and length of each in the
    index that read_row() uses; the first row of an instance_id wins. Returns the index."""
    index, offset = {}, 0
    with open_atomic(rows_path) as out:
        for row in rows:
            if row["instance_id"] in index:
                continue
            line = json.dumps(row, ensure_ascii=False, default=str) + "\n"
            out.write(line)
            size = len(line.encode("utf-8"))
            index[row["instance_id"]] = [offset, size]
            offset += size
    write_json_atomic(index_path, index)
    return index


def write_selection(rows, rows_path, index_path):
    write_indexed_jsonl(rows, rows_path, index_path)


def retrieval_texts(source, split, ids):
    """(instance_id, text) for the rows of a retrieval dataset whose id is in ids, read so
    that the dataset is never in memory whole: a .parquet file one row group at a time, and
    only the groups that hold a wanted id (memory grows with the group size: about 70 MB per
    100 rows of 40K-token texts), a .jsonl file by line, a hub dataset memory-mapped from its cache."""
    wanted = set(ids)
    if source.endswith(".parquet"):
        import pyarrow.parquet

        parquet = pyarrow.parquet.ParquetFile(source)
        for group in range(parquet.num_row_groups):
            if wanted.isdisjoint(parquet.read_row_group(group, columns=["instance_id"]).column(0).to_pylist()):
                continue
            for batch in parquet.iter_batches(batch_size=64, row_groups=[group], columns=["instance_id", "text"]):
                for instance_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                    if instance_id in wanted:
                        yield instance_id, text
    elif source.endswith(".jsonl"):
        with open(source, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line) if line.strip() else {}
                if row.get("instance_id") in wanted:
                    yield row["instance_id"], row.get("text")
    elif is_dataset_path(source):  # .json: a list that has to be read whole
        for row in load_file(Path(source)):
            if row.get("instance_id") in wanted:
                yield row["instance_id"], row.get("text")
    else:
        try:
            rows = load_hub_split(source, split).select_columns(["instance_id", "text"])
        except SelectionError:
            raise
        except Exception as e:
            raise SelectionError(
                f"could not load retrieval dataset {source!r} split {split!r}: {e}. Check your network "
                "(or HF_HUB_OFFLINE=1 with a filled cache), or give retrieval_dataset as a local file."
            ) from e
        positions = [n for n, instance_id in enumerate(rows["instance_id"]) if instance_id in wanted]
        for row in rows.select(positions):
            yield row["instance_id"], row["text"]


def parse_retrieval_text(text):
    """The files of a SWE-bench text dataset's prompt, in the order it shows them:
    [{path, content}], the line numbers taken off. None if the text has no <code> part."""
    start, end = text.find("<code>\n"), text.rfind("\n</code>")
    if start < 0 or end < start:
        return None
    files, path, lines = [], None, []
    for line in text[start + len("<code>\n"):end].split("\n"):
        if path is None:
            if line.startswith("[start of ") and line.endswith("]"):
                path, lines = line[len("[start of "):-1], []
        elif line == f"[end of {path}]":
            files.append({"path": path, "content": "\n".join(lines)})
            path = None
        else:
            lines.append(line.partition(" ")[2])  # "12 code" -> "code"
    return files


def write_retrieval(source, split, ids, rows_path, index_path):
    """Write the files of each instance in ids, from the retrieval dataset, to rows_path
    (one JSON line each) and their byte offsets to index_path."""
    def records():
        for instance_id, text in retrieval_texts(source, split, ids):
            files = parse_retrieval_text(text or "")
            if files is None:
                raise SelectionError(f"retrieval dataset {source}: the text of {instance_id} has no <code> part.")
            yield {"instance_id": instance_id, "source": source, "files": files}

    index = write_indexed_jsonl(records(), rows_path, index_path)
    missing = [i for i in ids if i not in index]
    if missing:
        os.unlink(rows_path)
        os.unlink(index_path)
        raise SelectionError(
            f"{len(missing)} selected instance(s) are not in the retrieval dataset {source} (split {split}): "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. "
            "Narrow the selection, give another retrieval_dataset, or use context=bm25."
        )


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
    parser.add_argument("--retrieval", help="retrieval dataset (hub name or file) whose files to hand to each instance")
    parser.add_argument("--retrieval-out", help="where to write the selected instances' retrieval files")
    parser.add_argument("--retrieval-index", help="where to write their index")
    args = parser.parse_args(argv)
    if args.retrieval and not (args.retrieval_out and args.retrieval_index):
        parser.error("--retrieval needs --retrieval-out and --retrieval-index")
    try:
        instances = instance_list(args.instances)
        ids_from = "`instances`"
        if args.predictions and not instances:
            from scripts.predictions import load_predictions

            instances = sorted(load_predictions(args.predictions))
            ids_from = f"the predictions file {args.predictions}"
        rows = select(
            load_rows(args.dataset, args.split),
            instances=instances,
            id_filter=args.filter or None,
            shuffle=args.shuffle,
            seed=args.seed,
            count=args.count,
            required=[f for f in args.require.split(",") if f],
            ids_from=ids_from,
            dataset=f"the dataset {args.dataset}" + ("" if is_dataset_path(args.dataset) else f" (split {args.split})"),
        )
        if args.retrieval:
            write_retrieval(args.retrieval, args.split, [r["instance_id"] for r in rows],
                            args.retrieval_out, args.retrieval_index)
    except (SelectionError, ValueError) as e:
        sys.exit(f"select: {e}")
    write_selection(rows, args.out, args.index)
    print(f"select: {len(rows)} instance(s) from {args.dataset}", file=sys.stderr)


if __name__ == "__main__":
    main()

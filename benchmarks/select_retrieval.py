"""Time and peak memory of the select step with a retrieval dataset the size of SWE-bench's
bm25_40K test split: 2,294 rows whose `text` holds about 40K tokens (cl100k_base) of
line-numbered code, made from the source files of the installed Python packages.

Each select step runs as a child of a small wrapper process, which reads its peak resident
memory with resource.getrusage(RUSAGE_CHILDREN) (so one run's peak does not hide the next's).

    .venv/bin/python benchmarks/select_retrieval.py [--rows 2294] [--tokens 40000] [--row-group 100]
"""
import argparse
import json
import random
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pyarrow
import pyarrow.parquet

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # run as a plain script, scripts/ is not on the path otherwise

from scripts.tokens import count_tokens  # noqa: E402


def code_blocks(count=3000):
    """Line-numbered blocks of real source files, as the retrieval datasets show them."""
    site = Path(sysconfig.get_paths()["purelib"])
    blocks = []
    for path in sorted(site.rglob("*.py"))[:count]:
        text = path.read_text(encoding="utf-8", errors="replace")
        numbered = "\n".join(f"{n} {line}" for n, line in enumerate(text.split("\n"), 1))
        name = path.relative_to(site).as_posix()
        blocks.append(f"[start of {name}]\n{numbered}\n[end of {name}]")
    return blocks


def make_text(blocks, chars, rng):
    parts, size = [], 0
    while size < chars:
        block = rng.choice(blocks)
        parts.append(block)
        size += len(block) + 1
    return ("You will be provided with a partial code base and an issue statement explaining a problem to resolve.\n"
            "<issue>\nThe parser fails on empty input.\n</issue>\n\n<code>\n" + "\n".join(parts)[:chars]
            + "\n[end of x]\n</code>\n\nI need you to solve the provided issue by generating a single patch file.\n")


def write_datasets(folder, rows, tokens, row_group):
    rng = random.Random(0)
    blocks = code_blocks()
    sample = make_text(blocks, 200_000, rng)
    chars = int(200_000 * tokens / count_tokens(sample))  # characters for `tokens` tokens of this code
    ids = [f"owner{n % 18}__repo-{n}" for n in range(rows)]
    base = [{"instance_id": i, "repo": f"owner{n % 18}/repo", "base_commit": f"{n:040x}",
             "problem_statement": "The parser fails on empty input. " * 40, "patch": "diff --git a/x b/x\n" * 60,
             "test_patch": "diff --git a/t b/t\n" * 150, "hints_text": "", "created_at": "2023-01-01T00:00:00Z",
             "version": "1.0", "FAIL_TO_PASS": "[]", "PASS_TO_PASS": "[]", "environment_setup_commit": f"{n:040x}"}
            for n, i in enumerate(ids)]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(base), folder / "dataset.parquet")
    schema = pyarrow.schema([("instance_id", pyarrow.string()), ("text", pyarrow.string())])
    with pyarrow.parquet.ParquetWriter(folder / "bm25_40K.parquet", schema) as writer:
        for start in range(0, rows, row_group):
            batch = [{"instance_id": i, "text": make_text(blocks, chars, rng)} for i in ids[start:start + row_group]]
            writer.write_table(pyarrow.Table.from_pylist(batch, schema=schema), row_group_size=row_group)
    return ids, chars


# Runs a command and prints the peak resident memory of its process tree's largest process, in KiB.
PEAK_OF = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run_select(folder, extra):
    """(seconds, peak MiB) of one select step."""
    command = [sys.executable, "-c", PEAK_OF, sys.executable, "-m", "scripts.select", "--dataset", str(folder / "dataset.parquet"),
               "--retrieval", str(folder / "bm25_40K.parquet"), "--retrieval-out", str(folder / "retrieval.jsonl"),
               "--retrieval-index", str(folder / "retrieval.index.json"), "--out", str(folder / "instances.jsonl"),
               "--index", str(folder / "instances.index.json"), *extra]
    started = time.monotonic()
    result = subprocess.run(command, cwd=PROJECT, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    return time.monotonic() - started, int(result.stdout) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2294)
    parser.add_argument("--tokens", type=int, default=40_000)
    parser.add_argument("--row-group", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.monotonic()
        ids, chars = write_datasets(folder, args.rows, args.tokens, args.row_group)
        size = (folder / "bm25_40K.parquet").stat().st_size
        print(f"generated {args.rows} rows of about {args.tokens} tokens ({chars} characters) in "
              f"{time.monotonic() - started:.0f} s; parquet file {size / 1e6:.0f} MB, row groups of {args.row_group}")
        lite = ",".join(random.Random(1).sample(ids, min(300, len(ids))))
        for label, extra in (("all rows", []), ("300 random rows (a Lite-sized selection)", [f"--instances={lite}"])):
            seconds, peak = run_select(folder, extra)
            handed = len(json.loads((folder / "retrieval.index.json").read_text()))
            out = (folder / "retrieval.jsonl").stat().st_size
            print(f"select, {label}: {seconds:.1f} s, peak memory {peak:.0f} MiB; "
                  f"{handed} instances handed their files, retrieval.jsonl {out / 1e6:.0f} MB")


if __name__ == "__main__":
    main()

"""Run the patch stage's extractor over the real model answers in ../shared/data and print figures.

For each data file: how many answers yield a patch (a diff was extracted), how many of those
are valid, why the others are not, and how many needed each fix.

    .venv/bin/python benchmarks/patch_extraction.py [--data-dir DIR]
"""
import argparse
import sys
import time
from collections import Counter
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # run as a plain script, scripts/ is not on the path otherwise

from scripts.common import read_jsonl  # noqa: E402
from scripts.patch import make_patch  # noqa: E402

# (file name pattern, field holding the answer, what the rows are). Patterns rather than
# names, so that this project's files name no model or tool.
DATA_FILES = [
    ("preds_swe4cc_*_standard_api_39.jsonl", "full_output", "strong model, raw answers"),
    ("preds_oracle_*_litesubset.jsonl", "full_output", "weak 7B model, raw answers"),
    ("preds_20240617_*.jsonl", "model_patch", "submitted predictions, clean diffs"),
    ("swebench_lite_test.jsonl", "patch", "reference patches"),
]

# Kinds of validation problem, recognised by a phrase in the problem sentence.
PROBLEM_KINDS = [
    ("cut off", "answer cut off inside the diff"),
    ("cannot read the hunk header", "unreadable hunk header"),
    ("no hunk adds or removes", "no line added or removed"),
    ("lacks the", "path without a/ or b/ prefix"),
    ("is absolute", "absolute path"),
    ("contains '..'", "path with '..'"),
    ("belong to no file header or hunk", "lines outside any hunk"),
    ("followed by no hunk", "file header without hunks"),
    ("the header announces", "hunk counts do not match"),
    ("unidiff", "rejected by unidiff"),
    ("no file header", "no file header"),
]


def problem_kinds(problems):
    kinds = set()
    for problem in problems:
        kinds.add(next((kind for phrase, kind in PROBLEM_KINDS if phrase in problem), "other"))
    return kinds


def measure(rows, field):
    """Counters of what the patch stage makes of each row's answer."""
    figures = Counter()
    reasons, problems, fixes, sources = Counter(), Counter(), Counter(), Counter()
    started = time.perf_counter()
    for row in rows:
        answer = row.get(field)
        response = {"instance_id": row["instance_id"], "status": "ok", "failure_reason": None, "answer": answer}
        patch, record = make_patch(response)
        figures["answers"] += 1
        if record["source"] is not None:
            figures["extracted"] += 1
            sources[record["source"]] += 1
            fixes.update(record["fixes"])
        if record["status"] == "valid":
            figures["valid"] += 1
            figures["unchanged"] += patch == answer
        else:
            reasons[record["reason"]] += 1
            problems.update(problem_kinds(record["problems"]))
    figures["seconds"] = time.perf_counter() - started
    return figures, reasons, problems, fixes, sources


def print_counter(title, counter):
    print(f"  {title}:")
    if not counter:
        print("    (none)")
    for name, count in counter.most_common():
        print(f"    {count:5d}  {name}")


def report(file_name, description, figures, reasons, problems, fixes, sources):
    answers, extracted, valid = figures["answers"], figures["extracted"], figures["valid"]
    print(f"{file_name}  ({description})")
    print(f"  answers:                 {answers}")
    print(f"  yield a patch:           {extracted}  ({', '.join(f'{s} {n}' for s, n in sources.most_common())})")
    print(f"  valid:                   {valid} of {extracted}")
    print(f"  valid and byte-identical to the answer: {figures['unchanged']}")
    print_counter("no valid patch, by reason", reasons)
    print_counter("invalid diffs, by kind of problem (a diff may have several)", problems)
    print_counter("extracted diffs needing each fix", fixes)
    print(f"  time: {1000 * figures['seconds'] / max(answers, 1):.2f} ms per answer")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT.parent / "shared" / "data")
    args = parser.parse_args(argv)
    for pattern, field, description in DATA_FILES:
        for path in sorted(args.data_dir.glob(pattern)):
            report(path.name, description, *measure(read_jsonl(path), field))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

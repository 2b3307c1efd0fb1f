"""Give a run made with evaluation=none the evaluation.json (the harness's run report format) of verdicts
found elsewhere, so that scripts.compare reads the run as evaluated: the official verdicts of a
SWE-bench submission (its results.json, the experiments repository's schema: lists of instance ids
under "resolved", "applied", "no_generation", ...), or, for the reference patches, "resolved" for every
instance, as SWE-bench's validation of its rows found. No instance is evaluated here.

    .venv/bin/python benchmarks/official_verdicts.py results/moatless-gpt4o \\
        --results ../shared/data/results_20240617_moatless_gpt4o.json
    .venv/bin/python benchmarks/official_verdicts.py results/gold --all-resolved
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.common import read_json, read_jsonl, write_json_atomic  # noqa: E402
from scripts.evaluate import merge  # noqa: E402


def official_status(instance_id, patch, results):
    """The harness status of one instance from the lists of an official results.json."""
    if instance_id in results["resolved"]:
        return "resolved"
    if not patch or instance_id in results.get("no_generation", []):
        return "empty_patch"
    if instance_id in results.get("applied", []):
        return "unresolved"
    return "patch_failed" if instance_id in results.get("no_apply", []) else "error"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    verdicts = parser.add_mutually_exclusive_group(required=True)
    verdicts.add_argument("--results", help="the official results.json of the run's predictions")
    verdicts.add_argument("--all-resolved", action="store_true", help="the run holds the reference patches")
    args = parser.parse_args()
    run = Path(args.run_dir)
    rows, predictions = read_jsonl(run / "instances.jsonl"), read_jsonl(run / "predictions.jsonl")
    patch_of = {p["instance_id"]: p["model_patch"] for p in predictions}
    results = read_json(args.results) if args.results else None
    reports = {row["instance_id"]: {"status": "resolved" if args.all_resolved else
                                    official_status(row["instance_id"], patch_of.get(row["instance_id"]), results)}
               for row in rows}
    source = f"official verdicts of {Path(args.results).name}" if args.results else "reference patches: all resolved"
    evaluation = merge(rows, predictions, reports, f"not evaluated here: {source}")
    write_json_atomic(run / "evaluation.json", evaluation)
    print(f"{run / 'evaluation.json'}: {evaluation['resolved_instances']} of {len(rows)} resolved ({source})")


if __name__ == "__main__":
    main()

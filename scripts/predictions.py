"""Predictions: merge the instances' patches into one SWE-bench predictions JSONL, sorted by id.

With an existing predictions file (JSONL rows, or the {instance_id: row} dict of a
preds.json) the merge takes its patches instead, for the selected instances, as they are:
a model_patch that is not a unified diff is named, and sent to the evaluation unchanged.
"""
import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from scripts.common import instance_id_of, read_json, write_jsonl_atomic
from scripts.diffs import diff_lines, parse_diff, validate


class PredictionsError(ValueError):
    pass


def load_predictions(path):
    """{instance_id: prediction row} from a JSONL file or a JSON list or dict."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        try:
            data = json.loads(text)
        except ValueError:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
    except ValueError as e:
        raise PredictionsError(f"predictions file {path} is not valid JSON or JSONL: {e}") from e
    if isinstance(data, dict):  # one JSONL row, or a preds.json keyed by instance_id
        data = [data] if "instance_id" in data else list(data.values())
    rows = data if isinstance(data, list) else [data]
    ids = Counter(row.get("instance_id") for row in rows if isinstance(row, dict))
    repeated = sorted(i for i, n in ids.items() if n > 1 and isinstance(i, str))
    if repeated:
        raise PredictionsError(
            f"predictions file {path} has more than one prediction for {len(repeated)} instance(s): "
            f"{', '.join(repeated[:10])}{' ...' if len(repeated) > 10 else ''}. "
            "Keep one row per instance_id (the one to evaluate) and run again."
        )
    predictions = {}
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("instance_id"), str):
            raise PredictionsError(f"prediction {number} in {path} has no instance_id.")
        patch = row.get("model_patch")
        if patch is not None and not isinstance(patch, str):
            raise PredictionsError(f"prediction {row['instance_id']} in {path} has a model_patch that is not text.")
        predictions[row["instance_id"]] = row
    if not predictions:
        raise PredictionsError(f"predictions file {path} holds no predictions.")
    return predictions


def not_a_diff(patch):
    """Why a model_patch that is not empty is not a unified diff (prose, code without a diff),
    or None. A diff with prose or a fence around it, or whose hunks are off, is still a diff:
    the harness's `git apply` or `patch` may apply it."""
    if not (patch or "").strip():
        return None
    sections, _ = parse_diff(diff_lines(patch))
    # a file with hunks under its '---'/'+++' lines, or a git header (a rename or mode change has no hunk)
    if any((s["hunks"] and s["old_path"] and s["new_path"]) or s["git_path"] for s in sections):
        return None
    return validate(patch)[0]


def not_diffs(rows):
    """{instance_id: why its model_patch is not a diff} of the prediction rows whose patch is not one."""
    reasons = {row["instance_id"]: not_a_diff(row.get("model_patch")) for row in rows}
    return {i: reason for i, reason in reasons.items() if reason}


def prediction(instance_id, model, patch):
    return {"instance_id": instance_id, "model_name_or_path": model, "model_patch": patch}


def merge_generated(patch_paths, model):
    """Predictions from each instance's patch file (instances/<id>/[samples/<s>/]patch.diff or repair.diff), by id."""
    patches = {instance_id_of(path): Path(path) for path in patch_paths}
    return [prediction(i, model, patches[i].read_text(encoding="utf-8")) for i in sorted(patches)]


def write_generated(patch_paths, model, out_path):
    """The stage for generated patches: merge them into out_path."""
    write_jsonl_atomic(out_path, merge_generated(patch_paths, model))


def merge_given(selected_ids, given):
    """Predictions for the selected ids, taken from an existing predictions mapping."""
    missing = [i for i in selected_ids if i not in given]
    if missing:
        raise PredictionsError(
            f"{len(missing)} selected instance(s) have no prediction: {', '.join(sorted(missing)[:10])}. "
            "Select only instances the predictions file covers (leave `instances` unset to take its ids)."
        )
    return [
        prediction(i, given[i].get("model_name_or_path") or "unknown", given[i].get("model_patch") or "")
        for i in sorted(selected_ids)
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--index", required=True, help="instances.index.json of the selection")
    parser.add_argument("--out", required=True)
    parser.add_argument("--run-dir", help="merge the patch.diff files of this run")
    parser.add_argument("--model", help="model_name_or_path of the merged patches")
    parser.add_argument("--given", help="take the patches of this predictions file instead")
    args = parser.parse_args(argv)
    selected_ids = list(read_json(args.index))
    try:
        if args.given:
            given = load_predictions(args.given)
            rows = merge_given(selected_ids, given)
            if len(given) > len(rows):
                print(f"predictions: {len(given) - len(rows)} prediction(s) outside the selection left out", file=sys.stderr)
            for instance_id, reason in not_diffs(rows).items():
                print(f"predictions: {instance_id}: the model_patch of {args.given} is not a diff ({reason}); "
                      "it goes to the evaluation as it is", file=sys.stderr)
        else:
            write_generated(selected_ids, args.run_dir, args.model, args.out)
            return
    except PredictionsError as e:
        sys.exit(f"predictions: {e}")
    write_jsonl_atomic(args.out, rows)


if __name__ == "__main__":
    main()

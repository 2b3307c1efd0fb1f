"""Evaluation throughput on real SWE-bench instances: this workflow beside the harness's own command.

On the real psf/requests rows of SWE-bench Lite (their instance images are built from the git bundles in
../shared/data by tests/real_instances.py, or taken from the daemon when it has them), with the gold patch
each, it times, with W workers:
  harness:  python -m swebench.harness.run_evaluation --max_workers W, on the same rows and predictions;
  workflow: snakemake --cores W --resources docker=W --config predictions=... evaluation=docker, a whole run
            from an empty folder (select, the merged predictions, the evaluations, evaluation.json, the
            summary and its figures);
  workflow, longest first: the same again in a new folder, once the first run's evaluations are known (the
            evaluate jobs start in the order of their earlier durations);
and prints the wall times and the ratio workflow / harness. Both keep the images (they were there before).

    .venv/bin/python benchmarks/throughput.py [--workers 1 2] [--repeat 1]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))

from conftest import LITE_TEST, read_rows  # noqa: E402

REPO = "psf/requests"


def timed(command, cwd):
    started = time.monotonic()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def harness(tmp, dataset, predictions, workers, run_id):
    folder = tmp / f"harness-{run_id}"
    folder.mkdir()
    seconds = timed([sys.executable, "-m", "swebench.harness.run_evaluation", "--dataset_name", str(dataset),
                     "--predictions_path", str(predictions), "--run_id", run_id, "--max_workers", str(workers),
                     "--cache_level", "instance", "--timeout", "600"], folder)
    report = json.loads((folder / f"gold.{run_id}.json").read_text())
    return seconds, sorted(report["resolved_ids"])


def workflow(workdir, dataset, predictions, workers, cache):
    seconds = timed([sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
                     str(workdir), "--cores", str(workers), "--resources", f"docker={workers}", "--config",
                     f"dataset={dataset}", f"predictions={predictions}", "evaluation=docker", "eval_timeout=600",
                     "run_id=bench", "min_free_disk_gb=1", f"validation_cache={cache}"], PROJECT)
    evaluation = json.loads((workdir / "results" / "bench" / "evaluation.json").read_text())
    return seconds, sorted(evaluation["resolved_ids"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=1, help="measurements of each, the shortest is kept")
    args = parser.parse_args()

    import docker
    import real_instances

    rows = [r for r in read_rows(LITE_TEST) if r["repo"] == REPO]
    with tempfile.TemporaryDirectory() as mirrors:
        real_instances.ensure_instances(docker.from_env(timeout=3600), rows, mirrors)
    print(f"instances: {len(rows)} ({REPO}, SWE-bench Lite), gold patches, images on the daemon")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = tmp / "rows.jsonl"
        dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
        predictions = tmp / "gold.jsonl"
        predictions.write_text("".join(json.dumps({"instance_id": r["instance_id"], "model_name_or_path": "gold",
                                                   "model_patch": r["patch"]}) + "\n" for r in rows))
        for workers in args.workers:
            times = {"harness": [], "workflow": [], "longest first": []}
            for n in range(args.repeat):
                seconds, official = harness(tmp, dataset, predictions, workers, f"w{workers}n{n}")
                times["harness"].append(seconds)
                # a first run, which records each instance's duration; then a new folder, longest first
                history = tmp / f"history-w{workers}n{n}"
                seconds, ours = workflow(tmp / f"workflow-w{workers}n{n}", dataset, predictions, workers, history)
                times["workflow"].append(seconds)
                assert ours == official, (ours, official)
                seconds, ours = workflow(tmp / f"again-w{workers}n{n}", dataset, predictions, workers, history)
                times["longest first"].append(seconds)
                assert ours == official, (ours, official)
            best = {name: min(values) for name, values in times.items()}
            print(f"workers {workers}: resolved {len(official)} of {len(rows)} by both; harness {best['harness']:.1f} s, "
                  f"workflow {best['workflow']:.1f} s (ratio {best['workflow'] / best['harness']:.2f}), "
                  f"longest first {best['longest first']:.1f} s (ratio {best['longest first'] / best['harness']:.2f})")


if __name__ == "__main__":
    main()

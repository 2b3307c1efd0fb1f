"""Evaluation throughput on real SWE-bench instances: this workflow beside the harness's own command.

On the real psf/requests rows of SWE-bench Lite (their instance images are built from the git bundles in
../shared/data by tests/real_instances.py, or taken from the daemon when it has them), with the gold patch
each, it times, with W workers, in turns:
  harness:  python -m swebench.harness.run_evaluation --max_workers W, on the same rows and predictions;
  workflow: snakemake --cores W --resources docker=W --config predictions=... evaluation=docker, a whole run
            in a new run folder (select, the merged predictions, the evaluations, evaluation.json, the
            summary and its figures); from the second turn on, the evaluations start longest first, by the
            durations of the earlier turns' runs in the same working folder;
and prints each turn's wall times and the CPU seconds of each command's processes (the containers' are the
Docker daemon's, counted in neither), then the shortest wall time of each and their ratio, workflow / harness.
Both keep the images (they were there before).

    .venv/bin/python benchmarks/throughput.py [--workers 1 2] [--turns 3]
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))

from conftest import LITE_TEST, read_rows  # noqa: E402

REPO = "psf/requests"


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command, cwd):
    """(wall seconds, CPU seconds of the command's processes)."""
    started, cpu = time.monotonic(), cpu_seconds()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started, cpu_seconds() - cpu


def harness(tmp, dataset, predictions, workers, run_id):
    folder = tmp / f"harness-{run_id}"
    folder.mkdir()
    seconds, cpu = timed([sys.executable, "-m", "swebench.harness.run_evaluation", "--dataset_name", str(dataset),
                     "--predictions_path", str(predictions), "--run_id", run_id, "--max_workers", str(workers),
                     "--cache_level", "instance", "--timeout", "600"], folder)
    report = json.loads((folder / f"gold.{run_id}.json").read_text())
    return seconds, cpu, sorted(report["resolved_ids"])


def workflow(workdir, dataset, predictions, workers, run_id):
    seconds, cpu = timed([sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"),
                          "--directory", str(workdir), "--cores", str(workers), "--resources", f"docker={workers}",
                          "--config", f"dataset={dataset}", f"predictions={predictions}", "evaluation=docker",
                          "eval_timeout=600", f"run_id={run_id}", "min_free_disk_gb=1"], PROJECT)
    evaluation = json.loads((workdir / "results" / run_id / "evaluation.json").read_text())
    return seconds, cpu, sorted(evaluation["resolved_ids"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--turns", type=int, default=3, help="turns of the two commands; the shortest counts")
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
            walls = {"harness": [], "workflow": []}
            for turn in range(1, args.turns + 1):
                name = f"w{workers}t{turn}"
                harness_s, harness_cpu, official = harness(tmp, dataset, predictions, workers, name)
                workflow_s, workflow_cpu, ours = workflow(tmp / f"workflow-w{workers}", dataset, predictions, workers,
                                                          name)
                assert ours == official, (ours, official)
                walls["harness"].append(harness_s)
                walls["workflow"].append(workflow_s)
                print(f"workers {workers}, turn {turn}: harness {harness_s:.1f} s ({harness_cpu:.1f} s CPU), "
                      f"workflow {workflow_s:.1f} s ({workflow_cpu:.1f} s CPU)"
                      + (", longest first" if turn > 1 else ""), flush=True)
            best = {name: min(values) for name, values in walls.items()}
            print(f"workers {workers}: resolved {len(official)} of {len(rows)} by both; shortest: harness "
                  f"{best['harness']:.1f} s, workflow {best['workflow']:.1f} s; ratio {best['workflow'] / best['harness']:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()

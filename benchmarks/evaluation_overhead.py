"""What the workflow adds to each instance's evaluation, over the SWE-bench harness alone.

On N SWE-bench-shaped instances (tests/swebench_images.py builds their images, which needs
a Docker daemon and debootstrap), with the gold patch each, it times
  harness:  python -m swebench.harness.run_evaluation, the harness's own command, with
            --max_workers W, on the same rows and predictions;
  workflow: snakemake --cores W --resources docker=W with evaluation=docker on those
            predictions, after a run with evaluation=none made the selection and the merged
            predictions (so the timed run is what evaluation adds: the per-instance jobs, the
            merge into evaluation.json and the summary again);
and prints both and the difference per instance.

    .venv/bin/python benchmarks/evaluation_overhead.py [--instances 8] [--workers 1 2]
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

import swebench_images as images  # noqa: E402


def timed(command, cwd):
    started = time.monotonic()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    tag, base_commit = images.ensure_testbed_image()
    rows = [images.row(f"psf__requests-{91000 + n}", base_commit) for n in range(args.instances)]
    for row in rows:
        images.tag_instance(tag, row)
    predictions = [{"instance_id": r["instance_id"], "model_name_or_path": "gold", "model_patch": images.GOLD_PATCH}
                   for r in rows]
    print(f"instances: {len(rows)}, harness: swebench, workflow: snakemake with evaluation=docker")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            (tmp / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (tmp / "preds.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
            (tmp / "harness").mkdir()
            harness = timed([sys.executable, "-m", "swebench.harness.run_evaluation", "--dataset_name",
                             str(tmp / "rows.jsonl"), "--predictions_path", str(tmp / "preds.jsonl"),
                             "--run_id", "bench", "--max_workers", str(workers), "--cache_level", "instance"],
                            tmp / "harness")
            report = json.loads((tmp / "harness" / "gold.bench.json").read_text())
            assert report["resolved_instances"] == len(rows), report

            workflow = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
                        str(tmp / "workflow"), "--cores", str(workers), "--resources", f"docker={workers}",
                        "--config", f"dataset={tmp / 'rows.jsonl'}", f"predictions={tmp / 'preds.jsonl'}",
                        "run_id=bench", "min_free_disk_gb=1"]
            subprocess.run(workflow + ["evaluation=none"], check=True, capture_output=True)
            ours = timed(workflow + ["evaluation=docker", "keep_images=True"], PROJECT)
            evaluation = json.loads((tmp / "workflow" / "results" / "bench" / "evaluation.json").read_text())
            assert evaluation["resolved_instances"] == len(rows), evaluation
        print(f"workers {workers}: harness {harness:.1f} s, workflow {ours:.1f} s, "
              f"added {ours - harness:+.1f} s in all, {(ours - harness) / len(rows):+.2f} s per instance")


if __name__ == "__main__":
    main()

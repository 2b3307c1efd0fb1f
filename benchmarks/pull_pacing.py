"""The pull stage's pace against the rate a registry allows.

N SWE-bench-shaped instance images (tests/swebench_images.py builds the one they are tags of, which needs a Docker
daemon and debootstrap) are pushed to a loopback docker-registry, behind the tests' stand-in of Docker Hub's rate
limit (tests/registries.py: `ratelimit-limit: L;w=W`, a 429 for a pull beyond it). The real snakemake then runs the
pulls alone (each instance's image.json as the target, `--resources pulls=P`) and the stand-in records when each
pull reached it. Prints, for
each pull, its time from the first; the most pulls in any window of W seconds (at most L when the pace holds); the
429s; and the least time the limit allows (the first L at once, then L per window), against the time taken. With
--figure, draws the pulls over time against the allowed rate.

    .venv/bin/python benchmarks/pull_pacing.py [--instances 9] [--limit 3] [--window 20] [--pulls 3] [--figure F]
"""
import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))

import swebench_images as images  # noqa: E402
from registries import PacedRegistry, serve_registry  # noqa: E402

TEMPLATE = "epoch-research/swe-bench.eval.{arch}.{id}:latest"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=9)
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--pulls", type=int, default=3, help="--resources pulls=P")
    parser.add_argument("--figure", help="a PNG of the pulls over time")
    args = parser.parse_args()

    tag, base_commit = images.ensure_testbed_image()
    client = images.client()
    rows = [images.row(f"psf__requests-{91000 + n}", base_commit) for n in range(args.instances)]
    backend, port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with serve_registry(tmp / "registry", backend):
            for row in rows:  # an image of its own each (a label), whose manifest the daemon has not seen
                name = f"127.0.0.1:{backend}/" + TEMPLATE.format(arch="x86_64", id=row["instance_id"])
                container = client.containers.create(tag, command="true")
                own = container.commit(changes=f"LABEL instance={row['instance_id']}")
                container.remove()
                own.tag(*name.rsplit(":", 1))
                for _ in client.images.push(*name.rsplit(":", 1), stream=True, decode=True):
                    pass
                client.images.remove(own.id, force=True)
            (tmp / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            (tmp / "preds.jsonl").write_text("".join(json.dumps({"instance_id": r["instance_id"], "model_name_or_path": "m",
                                                                  "model_patch": images.GOLD_PATCH}) + "\n" for r in rows))
            with PacedRegistry(port, backend, args.limit, args.window) as paced:
                started = time.time()
                subprocess.run([sys.executable, "-m", "snakemake",
                                *[f"results/bench/instances/{row['instance_id']}/image.json" for row in rows],
                                "--snakefile", str(PROJECT / "Snakefile"), "--directory", str(tmp), "--cores", "2",
                                "--resources", f"pulls={args.pulls}", "--config", "run_id=bench", f"dataset={tmp / 'rows.jsonl'}",
                                f"predictions={tmp / 'preds.jsonl'}", "evaluation=docker", "min_free_disk_gb=0",
                                f"image_source=127.0.0.1:{port}/{TEMPLATE}"], check=True, capture_output=True)
                taken = time.time() - started
        for row in rows:  # the pulled images: no evaluation ran, so none was removed
            name = f"127.0.0.1:{port}/" + TEMPLATE.format(arch="x86_64", id=row["instance_id"])
            if images.image_exists(client, name):
                client.images.remove(name)
    times = sorted(t for t, _ in paced.pulls)
    offsets = [t - times[0] for t in times]
    least = -(-(args.instances - args.limit) // args.limit) * args.window if args.instances > args.limit else 0
    print(f"{args.instances} pulls, limit {args.limit} per {args.window} s, pulls={args.pulls}")
    print("pull times (s from the first): " + ", ".join(f"{t:.1f}" for t in offsets))
    print(f"most pulls in any {args.window} s window: {paced.most_in_a_window(args.window)} (allowed {args.limit})")
    print(f"429s: {len(paced.refused)}")
    print(f"first to last pull: {offsets[-1]:.1f} s; the least the limit allows: {least} s; the whole run: {taken:.1f} s")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.step(offsets, range(1, len(offsets) + 1), where="post", label="pulls (the registry's count)")
        edge = [0]
        while edge[-1] <= offsets[-1]:
            edge.append(edge[-1] + args.window)
        ax.step(edge, [min(args.limit * (i + 1), args.instances) for i in range(len(edge))], where="post",
                linestyle="--", label=f"allowed: {args.limit} per {args.window} s")
        ax.set_xlabel("seconds from the first pull")
        ax.set_ylabel("pulls")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=100)


if __name__ == "__main__":
    main()

"""Evaluation throughput on real SWE-bench instances: this workflow beside the harness's own command.

On the real psf/requests rows of SWE-bench Lite (their instance images are built from the git bundles in
../shared/data by tests/real_instances.py, or taken from the daemon when it has them), with the gold patch
each, it times, with W workers, in turns:
  harness:  python -m swebench.harness.run_evaluation --max_workers W, on the same rows and predictions;
  workflow: snakemake --cores W --resources docker=W pulls=W --config predictions=... evaluation=docker, a whole run
            in a new run folder (select, the merged predictions, the evaluations, evaluation.json, the
            summary and its figures); from the second turn on, the evaluations start longest first, by the
            durations of the earlier turns' runs in the same working folder;
and prints each turn's wall times and the CPU seconds of each command's processes (the containers' and the
pulls' are the Docker daemon's, counted in neither), then the shortest wall time of each and their ratio,
workflow / harness. It does so for each way of finding the images (--images, both by default, one after the
other):
  daemon:   the images are on the daemon, under the harness's names (swebench/sweb.eval.x86_64.<id>:latest,
            `__` as `_1776_`); both keep them;
  registry: as on a fresh machine, each command pulls them. They are pushed once to a loopback Debian
            docker-registry (tests/registries.py; its storage in the temporary folder), as
            127.0.0.1:<port>/swebench/sweb.eval.x86_64.<id>:latest, the name the harness gives them with
            --namespace 127.0.0.1:<port>/swebench and the workflow with image_namespace=127.0.0.1:<port>/swebench.
            Before each command's run every tag of the instance images is removed, and their own layers with
            them (the env images they are built on stay: a machine has the shared layers after its first
            pull); after it, each image must be back on the daemon, pulled: the harness pulls each in its
            worker before the evaluation (--cache_level instance keeps it), the workflow in its pull jobs,
            ahead of the evaluations (keep_images=true keeps them; each instance's image.json says pulled).
            The workflow's --resources pulls=W (in both modes) allows as many pulls at once as the harness's
            W workers make (the command line's --resources replaces the profile's list, pulls=2 with it,
            and a resource it does not name is not bounded). At the end, whatever happens (Ctrl-C too), the
            images are pulled back under their swebench/... names, the same image IDs as before.

    .venv/bin/python benchmarks/throughput.py [--workers 1 2] [--turns 3] [--images daemon registry]
"""
import argparse
import json
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "tests"))
sys.path.insert(0, str(PROJECT))

from scripts import images  # noqa: E402

from conftest import LITE_TEST, read_rows  # noqa: E402
from registries import serve_registry  # noqa: E402

REPO = "psf/requests"


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command, cwd):
    """(wall seconds, CPU seconds of the command's processes)."""
    started, cpu = time.monotonic(), cpu_seconds()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started, cpu_seconds() - cpu


def harness(folder, dataset, predictions, workers, run_id, namespace=None):
    folder = folder / f"harness-{run_id}"
    folder.mkdir(parents=True)
    seconds, cpu = timed([sys.executable, "-m", "swebench.harness.run_evaluation", "--dataset_name", str(dataset),
                     "--predictions_path", str(predictions), "--run_id", run_id, "--max_workers", str(workers),
                     "--cache_level", "instance", "--timeout", "600"]
                         + (["--namespace", namespace] if namespace else []), folder)
    report = json.loads((folder / f"gold.{run_id}.json").read_text())
    return seconds, cpu, sorted(report["resolved_ids"])


def workflow(workdir, dataset, predictions, workers, run_id, namespace=None):
    resources = [f"docker={workers}", f"pulls={workers}"]
    settings = [f"image_namespace={namespace}", "keep_images=true"] if namespace else []
    seconds, cpu = timed([sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"),
                          "--directory", str(workdir), "--cores", str(workers), "--resources", *resources,
                          "--config", f"dataset={dataset}", f"predictions={predictions}", "evaluation=docker",
                          "eval_timeout=600", f"run_id={run_id}", "min_free_disk_gb=1", *settings], PROJECT)
    evaluation = json.loads((workdir / "results" / run_id / "evaluation.json").read_text())
    return seconds, cpu, sorted(evaluation["resolved_ids"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_names(rows, namespace):
    """{instance_id: image name} as the harness names the images with --namespace namespace."""
    from swebench.harness.test_spec.test_spec import make_test_spec

    return {r["instance_id"]: make_test_spec(r, namespace=namespace).instance_image_key for r in rows}


def image_id(client, name):
    """The ID of the image of that name on the daemon (`docker image inspect`), None when it has none."""
    import docker

    try:
        return client.images.get(name).id
    except docker.errors.ImageNotFound:
        return None


def remove_images(client, names, ids):
    """Remove every name (tag) from the daemon, and check that the images (ids) went with their own layers."""
    import docker

    refused = []
    for name in names:
        try:
            client.images.remove(name)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as e:  # e.g. a container of it
            refused.append(f"{name}: {e.explanation}")
    left = [n for n in [*names, *ids] if image_id(client, n)]
    if left:
        sys.exit(f"still on the daemon after their tags were removed: {', '.join(left)} (another tag or a "
                 f"container holds them: `docker image inspect` / `docker ps -a`{'; ' if refused else ''}"
                 f"{'; '.join(refused)}); the pulls would not be real")


def remove_containers(client, ids):
    """Remove the containers of the images (ids) that this benchmark's commands left (named by its run ids, w1t1
    ...: the harness's sweb.eval.<id>.<run id>, the workflow's with a suffix), as a Ctrl-C can: a container
    keeps its image on the daemon."""
    for image in ids:
        for container in client.containers.list(all=True, filters={"ancestor": image}):
            if re.fullmatch(r"sweb\.eval\..+\.w\d+t\d+(\.[0-9a-f]{8})?", container.name):
                container.remove(force=True)


def push(client, name, target):
    """Tag the image name as target and push it to target's registry."""
    client.images.get(name).tag(*target.rsplit(":", 1))
    for line in client.images.push(*target.rsplit(":", 1), stream=True, decode=True):
        if "error" in line:
            raise RuntimeError(f"push of {target}: {line['error']}")


def restore(client, pushed, ids):
    """Put each original name (of pushed: {original: its name in the registry}) back on the daemon, pulled from
    the registry where it is gone, and remove the registry's names; check the image IDs are those before (ids)."""
    for original, target in pushed.items():
        if image_id(client, original) is None:
            client.images.pull(*target.rsplit(":", 1))
            client.images.get(target).tag(*original.rsplit(":", 1))
        if image_id(client, target):
            client.images.remove(target)
    wrong = [f"{o}: {image_id(client, o)}, was {ids[o]}" for o in pushed if image_id(client, o) != ids[o]]
    if wrong:
        sys.exit("not restored as before: " + "; ".join(wrong))
    print(f"restored the {len(pushed)} images under their names, the same image IDs", flush=True)


def turns(mode, folder, rows, dataset, predictions, workers_list, count, namespace=None, before=None, after=None):
    """Time the two commands in turns with each number of workers; before(): what precedes each command's run;
    after(run_id, workdir): the check after a workflow's run and (workdir None) a harness's."""
    before = before or (lambda: None)
    after = after or (lambda run_id, workdir: None)
    for workers in workers_list:
        walls = {"harness": [], "workflow": []}
        for turn in range(1, count + 1):
            name = f"w{workers}t{turn}"
            workdir = folder / f"workflow-w{workers}"
            before()
            harness_s, harness_cpu, official = harness(folder, dataset, predictions, workers, name, namespace)
            after(name, None)
            before()
            workflow_s, workflow_cpu, ours = workflow(workdir, dataset, predictions, workers, name, namespace)
            after(name, workdir)
            assert ours == official, (ours, official)
            walls["harness"].append(harness_s)
            walls["workflow"].append(workflow_s)
            print(f"{mode}: workers {workers}, turn {turn}: harness {harness_s:.1f} s ({harness_cpu:.1f} s CPU), "
                  f"workflow {workflow_s:.1f} s ({workflow_cpu:.1f} s CPU)"
                  + (", longest first" if turn > 1 else ""), flush=True)
        best = {name: min(values) for name, values in walls.items()}
        print(f"{mode}: workers {workers}: resolved {len(official)} of {len(rows)} by both; shortest: harness "
              f"{best['harness']:.1f} s, workflow {best['workflow']:.1f} s; ratio "
              f"{best['workflow'] / best['harness']:.2f}", flush=True)


def from_registry(client, tmp, rows, dataset, predictions, args):
    """The turns with the images pulled from a loopback registry; the images restored at the end, whatever happens."""
    port = free_port()
    namespace = f"127.0.0.1:{port}/swebench"
    originals = image_names(rows, "swebench")
    names = image_names(rows, namespace)
    ours = {r["instance_id"]: images.image_name(r, {"image_namespace": namespace}) for r in rows}
    assert ours == names, ("the workflow names the images otherwise", ours, names)
    ids = {originals[i]: image_id(client, originals[i]) for i in originals}
    storage = tmp / "registry"
    pushed = {}  # original name: its name in the registry

    def before():
        remove_images(client, [*originals.values(), *names.values()], list(ids.values()))

    def after(run_id, workdir):
        missing = [n for n in names.values() if image_id(client, n) is None]
        if missing:
            sys.exit(f"{'workflow' if workdir else 'harness'} {run_id}: not pulled: {', '.join(missing)}")
        records = {i: json.loads((workdir / "results" / run_id / "instances" / i / "image.json").read_text())
                   for i in names} if workdir else {}
        wrong = {i: r for i, r in records.items() if not (r["pulled"] and r["image"] == names[i])}
        if wrong:
            sys.exit(f"workflow {run_id}: not pulled from the registry, by their image.json: {wrong}")

    def stop(signum, frame):  # a `kill` as a Ctrl-C: the images are restored
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with serve_registry(storage, port):
        try:
            for i, original in originals.items():
                pushed[original] = names[i]
                push(client, original, names[i])
            size = sum(f.stat().st_size for f in storage.rglob("*") if f.is_file())
            print(f"registry: 127.0.0.1:{port}, {len(names)} images pushed, {size / 1e9:.2f} GB in its storage",
                  flush=True)
            turns("registry", tmp / "registry-runs", rows, dataset, predictions, args.workers, args.turns, namespace,
                  before, after)
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C would leave the images half restored
            print("restoring the images (Ctrl-C waits for it)", flush=True)
            remove_containers(client, ids.values())
            restore(client, pushed, ids)
            signal.signal(signal.SIGINT, signal.default_int_handler)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--turns", type=int, default=3, help="turns of the two commands; the shortest counts")
    parser.add_argument("--images", nargs="+", choices=["daemon", "registry"], default=["daemon", "registry"],
                        help="where the commands find the images: on the daemon, or pulled from a registry")
    args = parser.parse_args()

    import docker
    import real_instances

    client = docker.from_env(timeout=3600)
    rows = [r for r in read_rows(LITE_TEST) if r["repo"] == REPO]
    with tempfile.TemporaryDirectory() as mirrors:
        real_instances.ensure_instances(client, rows, mirrors)
    print(f"instances: {len(rows)} ({REPO}, SWE-bench Lite), gold patches", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = tmp / "rows.jsonl"
        dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
        predictions = tmp / "gold.jsonl"
        predictions.write_text("".join(json.dumps({"instance_id": r["instance_id"], "model_name_or_path": "gold",
                                                   "model_patch": r["patch"]}) + "\n" for r in rows))
        for mode in args.images:
            print(f"images: {mode}" + (", on the daemon" if mode == "daemon" else ", pulled from a loopback registry "
                                       "before each run"), flush=True)
            if mode == "daemon":
                turns(mode, tmp / "daemon-runs", rows, dataset, predictions, args.workers, args.turns)
            else:
                from_registry(client, tmp, rows, dataset, predictions, args)


if __name__ == "__main__":
    main()

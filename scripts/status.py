"""Where a run stands, from its files alone (no configuration, API key or Docker needed): per
stage, how many selected instances are done, failed for good (by reason) or still to do, and
which failed, with the file that says why.

    python -m scripts.status                      # every run under results/
    python -m scripts.status --run results/gold   # one run
    python -m scripts.status --watch              # the run's view, drawn again every few seconds
"""
import argparse
import sys
import time
from collections import Counter
from pathlib import Path

from scripts import costs
from scripts.common import read_jsonl, stage_fault, stage_log
from scripts.predictions import not_diffs
from scripts.records import (
    STAGE_FILES,
    RecordError,
    cause_lines,
    failure_causes,
    instance_status,
    read_record,
    run_samples,
    run_stages,
    sample_counts,
    sample_folders,
)


class StatusError(Exception):
    """A run folder that is none, or no run to show."""


def sample_lines(run_dir, ids):
    """Answers per sample, for a run of several samples; [] for a run of one."""
    samples = run_samples(run_dir)
    if samples < 2:
        return []
    counts = sample_counts(run_dir, ids, samples)
    answered = sum(c[0] for c in counts.values())
    lines = ["", f"{samples} samples: {answered}/{samples * len(ids)} answered (sample 1 is the table above; "
             "sample s is in instances/<id>/samples/<s>/)"]
    for sample, (done, evaluated, resolved) in counts.items():
        lines.append(f"  sample {sample:<3} answered {done}/{len(ids)}"
                     + (f", evaluated {evaluated}, resolved {resolved}" if evaluated else ""))
    return lines


def validation_lines(run_dir, ids):
    """With validate_gold: how many instances the gold patch validated, and those whose environment is broken
    here (their verdicts say nothing of the model), each with why."""
    records = {i: read_record(run_dir / "instances" / i / "validation.json") for i in ids
               if (run_dir / "instances" / i / "validation.json").is_file()}
    if not records:
        return []
    broken = [(i, r["reason"]) for i, r in sorted(records.items()) if not r["validated"]]
    lines = ["", f"gold validation: {len(records) - len(broken)} validated, {len(broken)} environment broken here"
             + (f", {len(ids) - len(records)} not validated yet" if len(records) < len(ids) else "")]
    if broken:
        lines += ["", f"Environment broken here ({len(broken)}): the gold patch does not resolve them on this machine, "
                  "or no patch does; apart from the model's results:"] + aligned(broken)
    return lines


def run_status(run_dir):
    """The run's status as plain text."""
    run_dir = Path(run_dir)
    index = run_dir / "instances.index.json"
    if not run_dir.is_dir():
        raise StatusError(f"no such run folder: {run_dir}")
    if not index.is_file():
        raise StatusError(f"{run_dir} is not a run folder: it has no instances.index.json (the select job writes it)")
    ids = list(read_record(index))
    stages, skipped = run_stages(run_dir)
    statuses = {i: instance_status(run_dir, i, stages) for i in ids}

    lines = [f"{run_dir}: {len(ids)} instances selected", "",
             f"{'stage':<10}{'done':>7}{'failed':>8}{'to do':>7}"]
    for stage in STAGE_FILES:
        if stage in skipped:
            lines.append(f"{stage:<10}{'-':>7}{'-':>8}{'-':>7}   {skipped[stage]}")
            continue
        if stage not in stages:  # the agent stage of a run without one
            continue
        outcomes = Counter(s[stage][0] for s in statuses.values())
        reasons = Counter(s[stage][1] for s in statuses.values() if s[stage][0] == "failed")
        by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
        lines.append(f"{stage:<10}{outcomes['done']:>7}{outcomes['failed']:>8}{outcomes['to do']:>7}"
                     + (f"   failed: {by_reason}" if by_reason else ""))
    lines += sample_lines(run_dir, ids)
    lines += validation_lines(run_dir, ids)
    lines += spend_lines(run_dir, ids)
    run_files = ["predictions.jsonl", "evaluation.json", "summary.md", "figures"]
    lines += ["", "run files: " + ", ".join(f"{name} {'yes' if (run_dir / name).exists() else 'no'}"
                                            for name in run_files)]

    # each instance at its first stage that failed, and at its first stage still to do
    failed, faults, to_do = [], [], []
    for instance_id, status in sorted(statuses.items()):
        # a patch that the repair stage mended is no failure of the instance
        mended = status.get("repair", ("",))[0] == "done"
        first_failed = next((stage for stage, s in status.items() if s[0] == "failed"
                             and not (stage == "patch" and mended)), None)
        if first_failed:
            _, reason, path = status[first_failed]
            failed.append((instance_id, first_failed, reason, str(path)))
        first_to_do = next((stage for stage, s in status.items() if s[0] == "to do"), None)
        if first_to_do:
            # the image's pull or the gold validation ahead of an evaluation, where it was the last to run
            log = stage_log(run_dir, instance_id, first_to_do) or run_dir / "logs" / instance_id / f"{first_to_do}.log"
            fault = stage_fault(run_dir, instance_id, first_to_do)
            if fault:
                faults.append((instance_id, first_to_do, fault[0], f"a rerun retries it; {log}: {fault[1][:200]}"))
            else:
                to_do.append((instance_id, first_to_do, f"last attempt's log: {log}" if log.is_file() else ""))
    predictions = run_dir / "predictions.jsonl"
    if "patch" in skipped and predictions.is_file():  # given predictions: those whose model_patch is not a diff
        not_diff = not_diffs([row for row in read_jsonl(predictions) if row["instance_id"] in statuses])
        if not_diff:
            lines += ["", f"Not a diff ({len(not_diff)}), in {predictions}: no patch, though the evaluation "
                      "gets them as they are:"] + aligned(sorted(not_diff.items()))
    if failed:
        lines += ["", f"Failed for good ({len(failed)}), each at its first failed stage with the file that says why; "
                  "a rerun keeps these, a rerun with --config retry_failed=true redoes them:"]
        lines += aligned(failed)
    causes = cause_lines(failure_causes(run_dir, ids))  # every sample's
    if causes:
        lines += [""] + causes
    if faults:
        lines += ["", f"Infrastructure faults ({len(faults)}): the last attempt failed on the machinery, not on the "
                  "model's work; nothing was recorded and a rerun retries it (the same command), once the cause "
                  "named is fixed:"] + aligned(faults)
    if to_do:
        lines += ["", f"Still to do ({len(to_do)}), each at its first stage without its file; run the same command "
                  "again to make them (`snakemake --cores N`, with the same --config):"] + aligned(to_do)
    return "\n".join(lines) + "\n"


def spend_lines(run_dir, ids):
    """The run's spend from its ledger, split as the answers, the self-repairs and the rest; [] without a ledger."""
    ledger = Path(run_dir) / "spend.jsonl"
    if not ledger.is_file():
        return []
    entries = costs.read_ledger(ledger)
    total = sum(costs.totals(entries))
    answers = repairs = 0.0
    for folder in sample_folders(run_dir, ids):
        if (folder / "response.json").is_file():
            answers += read_record(folder / "response.json").get("cost_usd") or 0.0
        if (folder / "repair.json").is_file():
            repairs += read_record(folder / "repair.json").get("cost_usd") or 0.0
    paid = [e for e in entries if e.get("state") != "refused"]
    lines = ["", f"spend: {total:.4f} USD in {len(paid)} requests ({ledger}): answers {answers:.4f}, self-repair "
                 f"{repairs:.4f}, requests of jobs that wrote nothing {max(0.0, total - answers - repairs):.4f}"]
    unknown = [e for e in paid if e.get("state") in ("worst_case", "open")]
    if unknown:
        lines.append(f"  {len(unknown)} of them count at their worst case ({sum(e['reserved_usd'] for e in unknown):.4f} "
                     "USD): no usage came back (a timeout, a 5xx) or the job ended mid-request")
    stopped = costs.stopped_instances(run_dir, entries)
    if stopped:
        lines.append(f"  {len(stopped)} instances not asked: the budget max_cost was reached; to go on, run again "
                     "with a higher --config max_cost")
    return lines


def aligned(rows):
    """Rows of text cells as indented lines, in columns."""
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() for row in rows]


def find_runs(results="results"):
    """The run folders under results/: those with a selection."""
    runs = sorted(path.parent for path in Path(results).glob("*/instances.index.json"))
    if not runs:
        raise StatusError(f"no run under {results}/ (a run folder holds instances.index.json); "
                          "run the workflow first, or name one with --run results/<run_id>")
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", help="a run folder, results/<run_id>; default: every run under results/")
    parser.add_argument("--results", default="results", help="where to look for runs when --run is not given")
    parser.add_argument("--watch", action="store_true", help="draw the runs' view again every --every seconds "
                        "(Ctrl-C ends it; it ends by itself when every stage of the runs is done)")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between two views of --watch")
    args = parser.parse_args(argv)
    try:
        runs = args.run or find_runs(args.results)
        if args.watch:
            return watch(runs, args.every)
        print("\n".join(run_status(run) for run in runs), end="")
    except (StatusError, RecordError) as e:
        print(f"status: {e}", file=sys.stderr)
        return 2
    return 0


def watch(runs, every):
    """The runs' view from their files, again every `every` seconds: live in a terminal, else a line each time."""
    from datetime import datetime

    from rich.console import Console, Group
    from rich.live import Live

    from scripts import live

    for run in runs:  # a clear error for a folder that is no run
        run_status(run)
    console, start = Console(), time.time()
    first = {run: live.cells_done(live.snapshot(run))[0] for run in runs}  # the rate is measured from here

    def views():
        shown, finished = [], True
        for run in runs:
            snap = live.snapshot(run)
            done, total = live.cells_done(snap)
            finished &= done >= total
            eta = live.eta_text(done - first[run], total - first[run], time.time() - start)
            if done >= total:
                eta = "done"
            elif not any((Path(run).parents[1] / ".snakemake" / "locks").glob("*")):  # no snakemake in the folder
                eta = "not running (run the same command again to go on)"
            # the requests in flight: the jobs running that the files show
            jobs = [("generate", e["instance_id"], datetime.fromisoformat(e["at"]).timestamp())
                    for e in costs.read_ledger(Path(run) / "spend.jsonl") if e.get("state") == "open"] \
                if (Path(run) / "spend.jsonl").is_file() else []
            shown.append((snap, eta, jobs))
        return shown, finished

    try:
        if not console.is_terminal:
            while True:
                shown, finished = views()
                for snap, eta, jobs in shown:
                    print(f"{snap['run']}: " + live.summary_line(snap, eta, running=len(jobs)), flush=True)
                if finished:
                    return 0
                time.sleep(every)
        with Live(console=console, auto_refresh=False) as screen:
            while True:
                shown, finished = views()
                screen.update(Group(*(live.view(snap, eta, time.time() - start, jobs) for snap, eta, jobs in shown)),
                              refresh=True)
                if finished:
                    return 0
                time.sleep(every)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

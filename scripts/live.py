"""The run's view, from its files: per stage, instances done of selected and their outcomes; the
spend against max_cost and the estimate; the requests in flight; the jobs running; an ETA. Drawn
live by the workflow's logger plugin (logger/) and by `python -m scripts.status --watch`."""
import re
import time
from collections import Counter
from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from scripts import costs, records
from scripts.common import FAULT_PREFIX, infrastructure_fault, read_json, sample_number, write_text_atomic

# what a stage's record says when it is done (not failed for good)
DONE = {"context": "built", "prompt": "built", "generate": "answered", "agent": "Submitted", "patch": "valid",
        "repair": "valid"}


def run_of(path):
    """The run folder of a job's output: of results/<run>/instances.index.json, of results/<run>/instances/<id>/...,
    or the folder above it that holds instances.index.json (summary.json, figures/, samples/<s>/...); else None."""
    path = Path(path).resolve()
    if path.name == "instances.index.json":
        return path.parent
    if "instances" in path.parts:  # instances/<id>/<file> or instances/<id>/samples/<s>/<file>
        return Path(*path.parts[: len(path.parts) - 1 - path.parts[::-1].index("instances")])
    return next((folder for folder in path.parents if (folder / "instances.index.json").is_file()), None)


def stage_of(rule):
    """A job's stage: its rule's name, without the model<k>_ of a model's module (models=[...])."""
    return re.sub(r"^model\d+_", "", rule)


def snapshot(run_dir, settled=None):
    """What the run's files say now: {run, selected, stages: {stage: Counter of outcomes}, spend,
    reserved, open: {instance: requests in flight}, requests: {instance: requests made}, settings, estimate}.
    settled: a dict kept by the caller from one snapshot of a running Snakemake to the next, of the instances
    with every stage's file made, which that run does not change again: their files are read only once
    (reading every instance's files at each look was work in the square of the run)."""
    run_dir = Path(run_dir)
    index = run_dir / "instances.index.json"
    settings = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    ids = list(read_json(index)) if index.is_file() else []
    stages = settings.get("stages") or records.run_stages(run_dir)[0]
    outcomes = {stage: Counter() for stage in stages}
    for instance_id in ids:
        labels = settled.get(instance_id) if settled is not None else None
        if labels is None:
            try:
                labels = instance_labels(run_dir, instance_id, stages)
            except records.RecordError:  # a file being replaced: counted at the next look
                continue
            if settled is not None and len(labels) == len(stages):
                settled[instance_id] = labels
        for stage, label in labels.items():
            outcomes[stage][label] += 1
    ledger = run_dir / "spend.jsonl"
    entries = costs.read_ledger(ledger) if ledger.is_file() else []
    spent, reserved = costs.totals(entries)
    estimate = run_dir / "estimate.json"
    samples = settings.get("samples", 1)
    return {"run": str(run_dir), "selected": len(ids), "stages": outcomes, "spend": spent, "reserved": reserved,
            "samples": records.sample_counts(run_dir, ids, samples) if samples > 1 else {},
            "open": Counter(e["instance_id"] for e in entries if e.get("state") == "open"),
            "requests": Counter(e["instance_id"] for e in entries if "request" in e),
            "settings": settings, "estimate": read_json(estimate) if estimate.is_file() else None}


def instance_labels(run_dir, instance_id, stages):
    """{stage: outcome label} of the instance's stages that have their file."""
    labels = {}
    for stage, (state, reason, path) in records.instance_status(run_dir, instance_id, stages).items():
        if state == "to do":
            continue
        labels[stage] = reason or DONE.get(stage)
        if stage == "evaluate" and not reason:
            labels[stage] = read_json(path)["status"]
    return labels


def cells_done(snap):
    """(instance stages done, instance stages in all) of a snapshot."""
    return sum(sum(c.values()) for c in snap["stages"].values()), snap["selected"] * len(snap["stages"])


def eta_text(done, total, elapsed):
    """The time left at the rate observed so far."""
    if total and done >= total:
        return "done"
    if not done or elapsed < 1:
        return "ETA measuring"
    return f"ETA {clock((total - done) * elapsed / done)}"


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def outcome_text(counter):
    return ", ".join(f"{label} {n}" for label, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def spend_text(snap, api=None):
    """Spend against max_cost and the estimate, and the requests in flight against api."""
    max_cost = snap["settings"].get("max_cost")
    text = f"spend {snap['spend']:.4f} USD"
    if snap["reserved"]:
        text += f" (+{snap['reserved']:.4f} reserved)"
    text += f" of max_cost {max_cost:g} USD" if max_cost is not None else " (no max_cost)"
    estimate = snap["estimate"]
    if estimate and estimate.get("low_usd") is not None:
        text += f"; estimate {estimate['low_usd']:.2f}-{estimate['high_usd']:.2f} USD"
    in_flight = sum(snap["open"].values())
    return text + f"; requests in flight {in_flight}" + (f" of api {api}" if api else "")


def samples_text(snap):
    """Answers over every sample, for a run of several: "3 samples: 847/900 answered"; '' for one."""
    samples = snap.get("samples")
    if not samples:
        return ""
    answered = sum(counts[0] for counts in samples.values())
    return f"{len(samples)} samples: {answered}/{len(samples) * snap['selected']} answered"


def summary_line(snap, eta, api=None, running=0, causes=None):
    """The view as one plain line (logs, CI, SLURM); causes: the jobs failed for each known cause."""
    stages = " ".join(f"{stage} {sum(c.values())}/{snap['selected']}" for stage, c in snap["stages"].items())
    samples = f"; {samples_text(snap)}" if snap.get("samples") else ""
    return (f"{time.strftime('%H:%M:%S')} progress: {stages}{samples}; {running} jobs running; "
            f"{spend_text(snap, api)}; {eta}" + (f"; {causes_text(causes)}" if causes else ""))


def causes_text(causes):
    """The jobs failed for each known cause (a Counter): "jobs failed: repository_unreachable 3, network 1"."""
    return "jobs failed: " + outcome_text(causes)


def view(snap, eta, elapsed, jobs=(), api=None, title=None, causes=None):
    """The view for a terminal: jobs are (stage, instance, started at) of the jobs running; causes: the jobs
    failed for each known cause, said on its closing line."""
    done, total = cells_done(snap)
    head = Text.assemble((title or snap["run"], "bold"), f"  {snap['selected']} instances  elapsed {clock(elapsed)}  ",
                         (eta, "bold cyan"))
    stages = Table(box=None, padding=(0, 1), show_edge=False)
    for column in ("stage", "done", "", "outcomes"):
        stages.add_column(column, no_wrap=column != "outcomes")
    width = 20
    for stage, counter in snap["stages"].items():
        n = sum(counter.values())
        filled = round(width * n / snap["selected"]) if snap["selected"] else 0
        stages.add_row(stage, f"{n}/{snap['selected']}", Text("━" * filled, "green") + Text("━" * (width - filled), "grey37"),
                       outcome_text(counter))
    parts = [head, stages, *([Text(samples_text(snap))] if snap.get("samples") else []), Text(spend_text(snap, api))]
    if jobs:
        running = Table(box=None, padding=(0, 1), show_edge=False, title_justify="left")
        for column in ("running", "instance", "for", "request"):
            running.add_column(column, no_wrap=True)
        now = time.time()
        for stage, instance_id, started in sorted(jobs, key=lambda job: job[2])[:12]:
            requests = snap["requests"].get(instance_id, 0) if stage in ("generate", "repair", "agent") else 0
            # an agent's requests are its steps (those of all its samples, retries included)
            word = "step" if stage == "agent" else "attempt"
            running.add_row(stage, instance_id or "", f"{now - started:.0f} s", f"{word} {requests}" if requests else "")
        parts.append(running)
        if len(jobs) > 12:
            parts.append(Text(f"... and {len(jobs) - 12} more jobs running"))
    parts.append(Text(f"{done} of {total} instance stages done" + (f"; {causes_text(causes)}" if causes else ""),
                      "dim"))
    return Group(*parts)


def stage_outcome(run_dir, stage, instance_id, sample=""):
    """One plain line of a finished job: the stage, the instance (and its sample, "" or samples/<s>/, after
    the first) and what its record says."""
    if not instance_id or stage not in records.STAGE_FILES:
        return f"{stage}: done"
    path = Path(run_dir) / "instances" / instance_id / sample / records.STAGE_FILES[stage]
    job = f"{stage} {instance_id}" + (f" sample {sample_number(sample)}" if sample else "")
    if stage in ("context", "prompt") or not path.is_file():
        return f"{job}: {DONE.get(stage, 'done')}"
    record = read_json(path)
    line = f"{job}: {records.failure_reason(stage, record) or DONE.get(stage) or record.get('status')}"
    if stage == "generate":
        line += f" in {record.get('latency_s') or 0:.1f} s, {record.get('cost_usd') or 0:.4f} USD"
    if stage == "agent":
        stats = record.get("info", {}).get("model_stats", {})
        line += f" after {stats.get('api_calls', 0)} steps, {stats.get('instance_cost') or 0:.4f} USD"
    return line


def error_text(stage, instance_id, logs, message=None):
    """A failed job in full: the stage and instance, the cause, the log file and what it holds."""
    cause = message or "the job failed"
    for log in logs:
        fault = infrastructure_fault(log)
        lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines() if Path(log).is_file() else []
        errors = [line.partition("error: ")[2] for line in lines if "error: " in line]
        if fault:
            cause = f"infrastructure fault: {fault[0]}: {fault[1]}"
        elif errors:
            cause = errors[-1]
    text = f"error: {stage}" + (f" {instance_id}" if instance_id else "") + f" failed: {cause}"
    for log in logs:
        text += f"\n  log: {log}"
        lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines() if Path(log).is_file() else []
        if len(lines) > 40:  # a log holds every attempt: the last ones
            text += f"\n    ({len(lines) - 40} earlier lines in the log)"
        text += "".join(f"\n    {line}" for line in lines[-40:])
    return text


def known_cause(logs):
    """(cause, log) of the first of a failed job's logs whose fault line names a cause with a known fix
    (records.FIXES); None when none does."""
    for log in logs:
        fault = infrastructure_fault(log)
        if fault and fault[0] in records.FIXES:
            return fault[0], log
    return None


def error_line(rule, instance_id, sample, cause, log):
    """A failed job of a known cause in one line: the rule, the instance (and its sample after the first, sample
    "" or samples/<s>/), the cause and the log that holds the rest."""
    job = rule + (f" {instance_id}" if instance_id else "") + (f" sample {sample_number(sample)}" if sample else "")
    return f"error: {job}: {cause} (log: {log})"


def keep_in_log(log, text):
    """Add to a failed job's log what the terminal leaves out (Snakemake's error block, the traceback), above the
    fault line that ends it: the status reads the last fault line of a log, and some readers its last line."""
    lines = Path(log).read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    at = len(lines) - 1 if lines and FAULT_PREFIX in lines[-1] else len(lines)
    write_text_atomic(log, "".join(lines[:at]) + text.rstrip("\n") + "\n" + "".join(lines[at:]))

"""A run's records, read from its files: each stage's record of an instance, whether it is a failure for good and
why, the stages and samples of the run, and the set aside of the records that a rerun makes again (retry_failed,
answers cut off by a smaller output limit). Read by the status command, the run's view and the start of a run."""
import functools
import glob
import time
from pathlib import Path

from scripts.common import read_json, sample_folder, set_aside, stage_fault
from scripts.evaluate import FIXES as EVALUATION_FIXES

# each stage's file in instances/<id>/
STAGE_FILES = {"context": "context.json", "prompt": "prompt.json", "generate": "response.json",
               "agent": "trajectory.json", "patch": "patch.json", "repair": "repair.json",
               "evaluate": "evaluation.json"}
VERDICTS = ("resolved", "unresolved")
# the fix of each cause of a fault line written by a stage other than evaluate (whose causes are scripts/evaluate.py's)
FIXES = {
    **EVALUATION_FIXES,
    "repository_unreachable": "a git repository could not be fetched (the server refused or did not answer). "
    "Check repo_url and the connection (`git ls-remote <url>`), and run again",
    "provider_unreachable": "the provider gave no answer in max_attempts tries (network, server errors, rate "
    "limits). Check the connection, base_url and the provider's status page, and run again",
    "provider_asks_to_wait": "the provider asked to wait longer than a job waits (a rate limit). Run again later",
}


class RecordError(Exception):
    """A record that cannot be read."""


def read_record(path):
    try:
        return read_json(path)
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise RecordError(f"cannot read {path}: {e}. Delete it and rerun the workflow to make it again.") from e


def failure_reason(stage, record):
    """Why the stage's record is a permanent failure; None when the stage is done."""
    if stage == "agent" and record.get("info", {}).get("exit_status") != "Submitted":
        return record.get("info", {}).get("exit_status") or "failed"
    if stage == "generate" and record.get("status") == "failed":
        return record.get("failure_reason") or "failed"
    if stage in ("patch", "repair") and record.get("status") != "valid":
        return record.get("reason") or record.get("status")
    if stage == "evaluate" and record.get("status") not in VERDICTS:
        return record.get("status")
    return None


def run_stages(run_dir):
    """The stages this run has, and a note for each it has not, from summary.json when there is
    one, else from the files present."""
    run_dir = Path(run_dir)
    summary = read_record(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    instances = run_dir / "instances"
    given = summary.get("mode") == "predictions" or any(instances.glob("*/given_patch.sha256"))
    evaluated = (summary.get("evaluation", "none") != "none" or (run_dir / "evaluation.json").is_file()
                 or any(instances.glob("*/evaluation.json")) or any((run_dir / "logs").glob("*/evaluate.log"))
                 or (run_dir / "images" / "plan.json").is_file()  # the pulls of the images ahead of it
                 or any((run_dir / "logs").glob("*/validate.log")))  # validate_gold: validated before evaluated
    skipped = {}
    info = read_record(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    agent = "agent" in info.get("stages", ())
    if agent:
        skipped.update(dict.fromkeys(["context", "prompt", "generate"], "an agent run: its trajectory instead"))
    if not any(instances.glob("*/repair.json")):
        skipped["repair"] = "no repair stage (provider gold or replay, or repair_attempts=0), or not reached"
    if given:
        skipped.update(dict.fromkeys(["context", "prompt", "generate", "patch"], "predictions given: not part of this run"))
    if not evaluated:
        skipped["evaluate"] = ("not part of this run (evaluation=none)" if summary
                               else "no report yet (evaluation=none, or not reached)")
    return [stage for stage in STAGE_FILES if stage not in skipped and (agent or stage != "agent")], skipped


def instance_status(run_dir, instance_id, stages, sample=1):
    """{stage: (outcome, reason, file)} of one instance (of one of its samples); outcome is done, failed or to do."""
    folder = Path(run_dir) / "instances" / instance_id / sample_folder(sample)
    status = {}
    for stage in stages:
        path = folder / STAGE_FILES[stage]
        if not path.is_file():
            status[stage] = ("to do", None, path)
        elif stage in ("context", "prompt"):  # no failure is recorded there; large files, left unread
            status[stage] = ("done", None, path)
        else:
            reason = failure_reason(stage, read_record(path))
            status[stage] = ("failed" if reason else "done", reason, path)
    return status


def run_samples(run_dir):
    """How many samples the run asks of each instance (run.json, which the run writes before any job)."""
    settings = Path(run_dir) / "run.json"
    return read_record(settings).get("samples", 1) if settings.is_file() else 1


def sample_folders(run_dir, ids):
    """The folder of every sample of every instance of ids."""
    samples = range(1, run_samples(run_dir) + 1)
    return (Path(run_dir) / "instances" / i / sample_folder(s) for i in ids for s in samples)


def sample_counts(run_dir, ids, samples):
    """{sample: (answered, evaluated, resolved)} over the instances, for samples 1..samples."""
    counts = {}
    for sample in range(1, samples + 1):
        folders = [Path(run_dir) / "instances" / i / sample_folder(sample) for i in ids]
        evaluations = [read_record(f / "evaluation.json") for f in folders if (f / "evaluation.json").is_file()]
        counts[sample] = (sum((f / "response.json").is_file() for f in folders), len(evaluations),
                          sum(e.get("status") == "resolved" for e in evaluations))
    return counts


def set_aside_failures(run_dir, instance_ids, repair=False, stamp=None):
    """For retry_failed: rename each recorded permanent failure to <name>.failed-<stamp>.json so that
    the rerun makes it again. An instance's patch is judged by the file the predictions take: the repair
    stage's (repair: the run has one), else the patch stage's. What is set aside is the file that must change:
    the answer (and the repair's files, whose paid requests would stop the rerun), when the generation failed
    or its patch is no good; the report, when the evaluation itself failed. Each sample's."""
    stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for folder in sample_folders(run_dir, instance_ids):
        for stage in ("generate", "repair" if repair else "patch", "evaluate"):
            path = folder / STAGE_FILES[stage]
            reason = failure_reason(stage, read_record(path)) if path.is_file() else None
            if not reason:
                continue
            paths = [path]
            if stage != "evaluate" or reason in ("patch_failed", "empty_patch"):
                paths = [folder / STAGE_FILES["generate"], folder / STAGE_FILES["agent"]]  # an agent run's too
                paths += [folder / name for name in ("repair.json", "repair.diff", "repair")] if repair else []
            for path in paths:
                if path.exists():
                    set_aside(path, "failed", stamp)
                    moved.append(path)
            break
    return moved


def set_aside_cut_off(run_dir, instance_ids, limit, stamp=None):
    """Rename each answer recorded as cut off (failure reason cut_off) by an output limit below limit to
    response.cut_off-<stamp>.json, with its batch answer (batch=true), so that the run asks it again with the
    larger limit; the paths set aside. The batch stage is made again when one of its answers is."""
    stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for folder in sample_folders(run_dir, instance_ids):
        path = folder / STAGE_FILES["generate"]
        record = read_record(path) if path.is_file() else {}
        if record.get("failure_reason") != "cut_off" or (record.get("max_output_tokens") or 0) >= limit:
            continue
        set_aside(path, "cut_off", stamp)
        moved.append(path)
        batch_answer = Path(run_dir) / "batch" / "answers" / f"{record['instance_id']}.json"
        if record.get("batch") and batch_answer.is_file():
            set_aside(batch_answer, "cut_off", stamp)
            (Path(run_dir) / "batch" / "done.json").unlink(missing_ok=True)
    return moved


def failure_causes(run_dir, instance_ids):
    """{cause: (count, one message, [(instance, sample)])} of the samples of the instances (samples=k: each of its
    k) whose first stage still to do failed on the machinery: the cause and message of the fault line that ends
    that stage's latest log. The samples after the first share the first's context and prompt."""
    run_dir = Path(run_dir)
    stages, _ = run_stages(run_dir)
    causes = {}
    for sample in range(1, run_samples(run_dir) + 1):
        own = [stage for stage in stages if sample == 1 or stage not in ("context", "prompt")]
        for instance_id in instance_ids:
            status = instance_status(run_dir, instance_id, own, sample)
            stage = next((stage for stage, s in status.items() if s[0] == "to do"), None)
            fault = stage and stage_fault(run_dir, instance_id, stage, sample_folder(sample))
            if fault:
                count, message, failed = causes.get(fault[0], (0, fault[1], []))
                causes[fault[0]] = (count + 1, message, failed + [(instance_id, sample)])
    return causes


def cause_lines(causes):
    """One line per cause of failure_causes: how many instances (and samples), an example, the fix."""
    lines = []
    for cause, (count, message, failed) in sorted(causes.items(), key=lambda item: -item[1][0]):
        fix = FIXES.get(cause)
        if fix and message.startswith(fix):  # an evaluation's message starts with the fix
            message = message[len(fix):].strip(" ()")
        message = message.removesuffix("; a rerun retries it")
        instances = len({instance_id for instance_id, _ in failed})
        what = f"{instances} instance{'s' * (instances != 1)}"
        if any(sample > 1 for _, sample in failed):
            what = f"{count} sample{'s' * (count != 1)} of {what}"
        lines.append(f"{what} failed for one cause: {cause} ({message[:200]}). "
                     + (f"Fix: {fix}. " if fix else "") + f"A rerun retries {'it' if count == 1 else 'them'}.")
    return lines


@functools.cache
def validation_durations(cache):
    """{instance_id: seconds} of the gold evaluations in the validation cache (scripts/validate.py), read once."""
    durations = {}
    for path in Path(cache).glob("*/*.json"):
        try:
            gold = read_json(path).get("gold") or {}
        except (OSError, ValueError):  # being written, or not a record
            continue
        durations[path.stem] = max(durations.get(path.stem, 0), gold.get("duration_s") or 0)
    return durations


@functools.cache  # asked by each of an instance's pull, validate, given_patch and evaluate jobs: read once
def earlier_duration(results, validation_cache, instance_id):
    """Whole seconds of the longest earlier evaluation of the instance known here: the evaluation.json of every run
    under results (every sample) and the gold evaluation in the validation cache; 0 when there is none. The
    evaluations start longest first (rules/evaluate.smk), so that a long one does not start last."""
    seconds = [validation_durations(str(validation_cache)).get(instance_id, 0)]
    folder = glob.escape(str(Path(results)))
    for path in glob.glob(f"{folder}/*/instances/{glob.escape(instance_id)}/**/evaluation.json", recursive=True):
        try:
            seconds.append(read_json(path).get("duration_s") or 0)
        except (OSError, ValueError):
            continue
    return int(max(seconds))

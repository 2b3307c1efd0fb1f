# The input functions of the rules: the files a job takes, known once the selection is made.
import functools
import os
import sys

from scripts.common import read_json, read_jsonl, stage_fault


def selected_ids():
    """The instance ids of the selection, known once the select checkpoint has run."""
    output = checkpoints.select.get().output
    if config["evaluation"] in ("docker", "modal"):
        check_evaluable(output.rows)
    return list(read_json(output.index))


@functools.cache
def check_evaluable(rows_path):
    """Stop before any instance's job when the harness has no specifications for some selected rows.
    Here rather than in the select job, so that a change of `evaluation` does not select again."""
    from scripts.select import SelectionError
    from scripts.select import check_evaluable as check_rows

    try:
        check_rows(read_jsonl(rows_path))
    except SelectionError as e:
        raise WorkflowError(f"Cannot evaluate: {e}")


def merged_ids(sample=""):
    """The instances the merged files of a sample (predictions, evaluation, summary) hold: all selected
    ones, or with allow_partial those whose patch is made, leaving out the ones that failed transiently."""
    if not config["allow_partial"] or config["predictions"]:
        return selected_ids()
    return [i for i in selected_ids() if os.path.exists(f"{RUN}/instances/{i}/{sample}patch.json")]


def per_instance(filename, ids=selected_ids):
    def inputs(wildcards):
        return [f"{RUN}/instances/{i}/{filename}" for i in ids()]

    return inputs


def merged(filename, sample=None):
    """The file of each instance that the merged files of a sample hold (by default the {sample} of the job)."""

    def inputs(wildcards):
        folder = wildcards.get("sample", "") if sample is None else sample
        return [f"{RUN}/instances/{i}/{folder}{filename}" for i in merged_ids(folder)]

    return inputs


def merged_reports(wildcards, sample=None):
    """Every merged instance's evaluation of a sample. With allow_partial, not those of instances whose last
    evaluation failed on a fault of the machinery (its log ends with the cause): they are left
    out, like an instance whose generation failed, until a plain run retries them."""
    folder = wildcards.get("sample", "") if sample is None else sample
    ids = [
        i
        for i in merged_ids(folder)
        if not config["allow_partial"]
        or os.path.exists(f"{RUN}/instances/{i}/{folder}evaluation.json")
        or not stage_fault(RUN, i, "evaluate", folder)
    ]
    return [f"{RUN}/instances/{i}/{folder}evaluation.json" for i in ids]


def validations(wildcards):
    """Every merged instance's gold validation, with validate_gold (rules/validate.smk). With allow_partial, not
    those whose last validation (or their image's pull ahead of it) failed on a fault of the machinery."""
    if not config["validate_gold"]:
        return []
    return [
        f"{RUN}/instances/{i}/validation.json"
        for i in merged_ids()
        if not config["allow_partial"]
        or os.path.exists(f"{RUN}/instances/{i}/validation.json")
        or not stage_fault(RUN, i, "validate")
    ]


def run_targets(wildcards):
    """Every file of the run. The per-instance files are requested by name because
    Snakemake does not remake a deleted intermediate file whose downstream files are
    up to date; requested, a deleted one is remade and what follows it is redone."""
    targets = [f"{RUN}/summary.json", f"{RUN}/summary.md"]
    targets += FIGURES  # rules/figures.smk
    if not config["predictions"]:
        targets += [path for name in INSTANCE_FILES for path in merged(name)(wildcards)]
    if config["evaluation"] != "none":
        targets += merged_reports(wildcards) + [f"{RUN}/evaluation.json"]  # rules/evaluate.smk
        targets += validations(wildcards)  # rules/validate.smk
        if config["predictions"]:
            targets += merged("given_patch.sha256")(wildcards)
    for sample in (f"samples/{s}/" for s in range(2, SAMPLES + 1)):  # each sample's own files and merges
        targets += [path for name in SAMPLE_FILES for path in merged(name, sample)(wildcards)]
        targets.append(f"{RUN}/{sample}predictions.jsonl")
        if config["evaluation"] != "none":
            targets += merged_reports(wildcards, sample) + [f"{RUN}/{sample}evaluation.json"]
    return targets


def failure_advice():
    """What the user reads when jobs failed: each cause of the faults of the machinery once, with its count and
    fix; the errors above name the rule, the instance and its log."""
    from scripts.costs import budget_advice, quota_advice
    from scripts.records import RecordError, cause_lines, failure_causes

    try:
        ids = list(read_json(INDEX)) if os.path.exists(INDEX) else []
        causes = "".join(line + "\n" for line in cause_lines(failure_causes(RUN, ids)))
    except RecordError:  # a record that cannot be read: the status command names it
        causes = ""
    return (
        causes
        + quota_advice(RUN)
        + budget_advice(RUN, config.get("max_cost"))
        + (
            f"Some jobs of run {RUN} failed; the errors above name each one's instance and log file, and all finished "
            "work is kept. To retry just what failed, run the same command again. To merge and evaluate what is done "
            "now, add --config allow_partial=true. To see the state of every instance: "
            f"{sys.executable} -m scripts.status --run {RUN}"
        )
    )


def selection_inputs():
    """The selection as the per-instance jobs read it. ancient(): selecting more instances
    rewrites these files, which must not redo the instances that are already done."""
    return {"instances": ancient(INSTANCES), "index": ancient(INDEX)}


def evaluation_priority(wildcards):
    """The priority of an instance's evaluate job and of the jobs before it (pull, validate, given_patch): the
    seconds of its longest earlier evaluation, so that the longest start first."""
    from scripts.records import earlier_duration

    return earlier_duration(os.path.dirname(RUN), config["validation_cache"], wildcards.id)

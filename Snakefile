# swebench-runner: select SWE-bench instances, prompt a model, extract its patches,
# merge the predictions and summarise the run. README.md tells how to run it. Every
# stage of every instance is a file target under results/<run_id>/.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


report: "report/workflow.rst"


if config.get("models"):  # several models: each a module of this same workflow, with its own config

    include: "rules/models.smk"

else:

    include: "rules/common.smk"
    include: "rules/select.smk"
    include: "rules/context.smk"
    include: "rules/prompt.smk"
    include: "rules/estimate.smk"
    include: "rules/batch.smk"
    include: "rules/generate.smk"
    include: "rules/patch.smk"
    include: "rules/repair.smk"
    include: "rules/predictions.smk"
    include: "rules/evaluate.smk"
    include: "rules/summary.smk"
    include: "rules/figures.smk"


rule all:
    input:
        run_targets,


onstart:
    widen_thread_pool()


onerror:
    print(failure_advice(), file=sys.stderr)


# Before a job runs, Snakemake 9 looks for each of its inputs among the outputs of each job it depends
# on, to find pipe() and service() files: for the merge, the summary and `all`, which take files of
# every instance, that is work in the square of the run (half a minute at 2,294 instances). No rule
# here declares such outputs, so the answer is always no; the check stays for a rule that would.
from snakemake.io import is_flagged

if not any(is_flagged(f, "pipe") or is_flagged(f, "service") for r in workflow.rules for f in r.output):
    from snakemake.jobs import Job

    Job.is_pipe_or_service_input = lambda job, path: False

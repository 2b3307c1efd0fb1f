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

    include: "rules/paths.smk"
    include: "rules/common.smk"
    include: "rules/start.smk"
    include: "rules/select.smk"

    if AGENT:  # an agent in each instance's container, in place of context, prompt and generate

        include: "rules/agent.smk"

    else:

        include: "rules/context.smk"
        include: "rules/prompt.smk"
        include: "rules/estimate.smk"
        include: "rules/batch.smk"
        include: "rules/generate.smk"
    include: "rules/patch.smk"
    include: "rules/repair.smk"
    include: "rules/predictions.smk"
    include: "rules/images.smk"
    include: "rules/validate.smk"
    include: "rules/evaluate.smk"
    include: "rules/summary.smk"
    include: "rules/figures.smk"


rule all:
    input:
        run_targets,


onstart:
    from scripts import forked

    snakemake_patches.start(workflow, SNAKEMAKE_PATCHES)
    # the jobs' fork server imports the summary's modules, and the harness where evaluations run here, while the first jobs run
    forked.start(harness=workflow.local_exec and config.get("evaluation") in ("docker", "modal", "sb-cli"))


onerror:
    print(failure_advice(), file=sys.stderr)


if SNAKEMAKE_PATCHES:  # once every rule is defined (scripts/snakemake_patches.py)
    snakemake_patches.patch(workflow)

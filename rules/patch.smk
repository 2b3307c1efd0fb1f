# Extract and judge each answer's patch. With apply_check the patch must apply at the base
# commit (scripts/apply.py mends what it safely can). The patch stage asks no model: a patch
# that fails goes to the repair stage (rules/repair.smk). It runs in Snakemake's own process
# when threads are used (the default profile sets force-use-threads), so it writes its log itself.
rule patch:
    input:
        **(selection_inputs() if config["apply_check"] else {}),
        # the files that search/replace edits are applied to without the apply check (an agent run has none)
        **({} if AGENT else {"context": f"{RUN}/instances/{{id}}/context.json"}),
        response=f"{RUN}/instances/{{id}}/{{sample}}response.json",
    output:
        diff=f"{RUN}/instances/{{id}}/{{sample}}patch.diff",
        record=f"{RUN}/instances/{{id}}/{{sample}}patch.json",
    log:
        f"{RUN}/logs/{{id}}/{{sample}}patch.log",
    priority: 1  # rules/prompt.smk
    group:
        "check"  # on a cluster, one job with the repair (profiles/slurm)
    params:
        # The settings that change a verdict: a change reruns the patch stage and what follows.
        apply_check=config["apply_check"],
    run:
        from scripts import patch

        patch.run_stage(wildcards.id, input, output, log[0], DERIVED["repos"])

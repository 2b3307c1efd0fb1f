# The rules of a run of several models (rules/models.smk) that work across them: one estimate of every
# model's cost before any request, and the comparison of their runs.
if PRICED:

    rule estimate:
        input:
            MODELS[0].per_instance("prompt.json"),
        output:
            [model.ESTIMATE for model in PRICED],
        log:
            f"{MODELS[0].RUN}/logs/estimate.log",  # with the selection and the prompts, in the first model's folder
        localrule: True
        run:
            from scripts import estimate

            runs = [(model.RUN, model.MODEL, model.estimate_settings()) for model in PRICED]
            estimate.run_models(runs, MODELS[0].instance_ids(input), MODELS[0].RUN, output, log[0])


rule compare:
    input:
        # every file of every model's run: the evaluation of each sample, the summary
        [model.run_targets for model in MODELS],
    output:
        md=f"{COMPARE}/compare.md",
        json=f"{COMPARE}/compare.json",
        figures=[f"{COMPARE}/compare.png", f"{COMPARE}/compare_repositories.png"],
    log:
        f"{COMPARE}/compare.log",
    localrule: True
    params:
        runs=[model.RUN for model in MODELS],
        out=lambda wildcards, output: os.path.dirname(output.md),
    shell:
        "python -m scripts.compare {params.runs:q} --out {params.out:q} 2> >(tee {log:q} >&2)"

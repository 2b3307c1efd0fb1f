# The rules of a run of several models (rules/models.smk) that work across them: one estimate of every
# model's cost before any request (the comparison of their runs is rules/compare.smk).
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

# The cost estimate, from the prompts of every instance still to ask: the generate jobs wait
# for it, and it stops the run above cost_warn unless confirm_cost=true. Only for the paid
# providers (gold and replay cost nothing) and a model with a price (ESTIMATE, rules/paths.smk).
# Of several models, one estimate of all (rules/models.smk). What the run does with the estimate before any job
# (the new samples', a dry run's) is in scripts/start.py.
if ESTIMATE and not SHARED:

    rule estimate:
        input:
            per_instance("prompt.json"),
        output:
            ESTIMATE,
        log:
            f"{RUN}/logs/estimate.log",
        localrule: True
        run:
            from scripts import estimate

            estimate.run(RUN, instance_ids(input), MODEL, estimate_settings(), output[0], log[0])

# The cost estimate, from the prompts of every instance still to ask: the generate jobs wait
# for it, and it stops the run above cost_warn unless confirm_cost=true. Only for the paid
# providers (gold and replay cost nothing) and a model with a price (rules/common.smk).
if ESTIMATE:
    if STARTS_RUN and os.path.exists(ESTIMATE) and read_json(ESTIMATE).get("samples", 1) != SAMPLES:
        # More samples: the estimate of the new ones, made here before any job. Made by its rule, it would be
        # an input updated by another job for every answer already in, which would be asked again.
        from scripts import estimate

        try:
            estimate.run(RUN, list(read_json(INDEX)), MODEL, estimate_settings(), ESTIMATE)
        except estimate.CostAboveWarning as e:
            sys.exit(str(e))

    if not SHARED:  # of several models, one estimate of all (rules/models.smk)

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

    if workflow.output_settings.dryrun:  # the estimate as far as the prompts are built
        from scripts import estimate

        if os.path.exists(INDEX):
            record, missing = estimate.for_run(RUN, list(read_json(INDEX)), MODEL, estimate_settings())
            print(
                estimate.describe(record)
                + (f" {len(missing)} instances have no prompt yet and are not counted." if missing else ""),
                file=sys.stderr,
            )
        else:
            print(
                "Cost estimate: made once the prompts are built, before any request (nothing is selected yet).",
                file=sys.stderr,
            )


# A model without a price: no estimate, and requests start while other prompts are being built.
if not ESTIMATE and config["provider"] in MODEL_PROVIDERS and not config["predictions"] and workflow.is_main_process:
    print(
        f"No cost estimate: no price is known for model {MODEL}, so requests start as soon as their prompt is "
        "built and their cost is unknown; to have one, give the price with "
        f"--config 'prices={{{MODEL}: {{input: X, output: Y}}}}' (USD per million tokens).",
        file=sys.stderr,
    )

# The cost estimate, from the prompts of every instance still to ask: the generate jobs wait
# for it, and it stops the run above cost_warn unless confirm_cost=true. Only for the paid
# providers (gold and replay cost nothing).
if ESTIMATE:

    rule estimate:
        input:
            per_instance("prompt.json"),
        output:
            ESTIMATE,
        localrule: True
        run:
            from scripts import estimate

            ids = [os.path.basename(os.path.dirname(path)) for path in input]
            estimate.run(RUN, ids, MODEL, estimate_settings(), output[0])

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

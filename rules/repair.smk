# With a model provider and repair_attempts > 0: a patch that does not parse, apply or compile
# goes back to the model, up to repair_attempts times; repair.diff is the patch the predictions
# take. Like generate it runs in Snakemake's own process and takes an `api` slot.
if REPAIR_ATTEMPTS:

    rule repair:
        input:
            **(selection_inputs() if config["apply_check"] else {}),
            patch=f"{RUN}/instances/{{id}}/{{sample}}patch.json",
            diff=f"{RUN}/instances/{{id}}/{{sample}}patch.diff",
            # the answer and the conversation that the repair request continues
            response=f"{RUN}/instances/{{id}}/{{sample}}response.json",
            prompt=f"{RUN}/instances/{{id}}/prompt.json",
            context=f"{RUN}/instances/{{id}}/context.json",
        output:
            # update(): like paid answers (rules/generate.smk), kept by the job or set aside with overwrite=true
            diff=update(f"{RUN}/instances/{{id}}/{{sample}}repair.diff"),
            record=update(f"{RUN}/instances/{{id}}/{{sample}}repair.json"),
            requests=update(directory(f"{RUN}/instances/{{id}}/{{sample}}repair")),
        log:
            f"{RUN}/logs/{{id}}/{{sample}}repair.log",
        group:
            "check"  # on a cluster, one job with the patch stage, which it follows (profiles/slurm)
        threads: 0
        resources:
            api=1,
        params:
            # The settings that change a repair: a change reruns the repair stage and what follows.
            attempts=REPAIR_ATTEMPTS,
            model=MODEL,
        run:
            from scripts import repair

            repair.run_stage(wildcards.id, input, output, log[0], repair_settings(wildcards.sample))

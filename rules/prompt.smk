if PREP != RUN:

    # A model of several after the first: the first model's context and prompt (rules/models.smk).
    rule prompt:
        input:
            context=f"{PREP}/instances/{{id}}/context.json",
            prompt=f"{PREP}/instances/{{id}}/prompt.json",
        output:
            context=f"{RUN}/instances/{{id}}/context.json",
            prompt=f"{RUN}/instances/{{id}}/prompt.json",
        log:
            f"{RUN}/logs/{{id}}/prompt.log",
        priority: 2
        localrule: True
        run:
            from scripts.common import append_log, copy_atomic

            copy_atomic(input.context, output.context)
            copy_atomic(input.prompt, output.prompt)
            append_log(log[0], f"the context and prompt of {PREP}")

else:

    rule prompt:
        input:
            context=f"{RUN}/instances/{{id}}/context.json",
            # A new template (or prompt_style) is a new input: it reruns the prompts and what follows.
            template=TEMPLATE,
        output:
            f"{RUN}/instances/{{id}}/prompt.json",
        log:
            f"{RUN}/logs/{{id}}/prompt.log",
        # The run as a pipeline: of the jobs ready, Snakemake starts first those of the highest priority
        # (among the ones it looks at: profiles/default), then those with the largest inputs, which would
        # be every context (the selection is their input) before any prompt. So: generate, then prompt,
        # then patch, then context: requests start while contexts are still being built, and answers are
        # judged while others are being asked.
        priority: 2
        group:
            "prepare"  # on a cluster, one job with the context (profiles/slurm)
        run:
            from scripts import prompt

            prompt.run_stage(wildcards.id, input, output, log[0])

rule prompt:
    input:
        context=f"{RUN}/instances/{{id}}/context.json",
        # A new template (or prompt_style) is a new input: it reruns the prompts and what follows.
        template=config["prompt_template"] or f"{workflow.basedir}/scripts/templates/{config['prompt_style']}.yaml",
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
    run:
        from scripts import prompt

        prompt.run(input.context, input.template, output[0], log[0])

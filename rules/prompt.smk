rule prompt:
    input:
        context=f"{RUN}/instances/{{id}}/context.json",
        # A new template (or prompt_style) is a new input: it reruns the prompts and what follows.
        template=config["prompt_template"] or f"{workflow.basedir}/scripts/templates/{config['prompt_style']}.yaml",
    output:
        f"{RUN}/instances/{{id}}/prompt.json",
    log:
        f"{RUN}/logs/{{id}}/prompt.log",
    run:
        from scripts import prompt

        prompt.run(input.context, input.template, output[0], log[0])

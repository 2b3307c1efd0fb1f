rule prompt:
    input:
        context=f"{RUN}/instances/{{id}}/context.json",
        template=config["prompt_template"] or f"{workflow.basedir}/scripts/templates/style3.yaml",
    output:
        f"{RUN}/instances/{{id}}/prompt.json",
    log:
        f"{RUN}/logs/{{id}}/prompt.log",
    shell:
        PYTHON + ".prompt --context {input.context:q} --template {input.template:q} --out {output:q} 2> {log:q}"

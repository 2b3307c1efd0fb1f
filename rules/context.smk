rule context:
    input:
        **selection_inputs(),
    output:
        f"{RUN}/instances/{{id}}/context.json",
    params:
        strategy=config["context"],
    log:
        f"{RUN}/logs/{{id}}/context.log",
    shell:
        PYTHON + ".context --instances {input.instances:q} --index {input.index:q} --id {wildcards.id:q}"
        " --strategy {params.strategy} --out {output:q} 2> {log:q}"

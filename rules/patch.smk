rule patch:
    input:
        response=f"{RUN}/instances/{{id}}/response.json",
        # the files that search/replace edits are applied to
        context=f"{RUN}/instances/{{id}}/context.json",
    output:
        diff=f"{RUN}/instances/{{id}}/patch.diff",
        record=f"{RUN}/instances/{{id}}/patch.json",
    log:
        f"{RUN}/logs/{{id}}/patch.log",
    shell:
        PYTHON + ".patch --response {input.response:q} --context {input.context:q}"
        " --diff {output.diff:q} --record {output.record:q} 2> {log:q}"

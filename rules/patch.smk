rule patch:
    input:
        f"{RUN}/instances/{{id}}/response.json",
    output:
        diff=f"{RUN}/instances/{{id}}/patch.diff",
        record=f"{RUN}/instances/{{id}}/patch.json",
    log:
        f"{RUN}/logs/{{id}}/patch.log",
    shell:
        PYTHON + ".patch --response {input:q} --diff {output.diff:q} --record {output.record:q} 2> {log:q}"

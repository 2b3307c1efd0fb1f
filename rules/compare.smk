# A run of several models (rules/models.smk): the comparison of their runs, when every file of each is made
# (scripts/compare.py; compare.json is described by schemas/compare.schema.json).


rule compare:
    input:
        # every file of every model's run: the evaluation of each sample, the summary
        [model.run_targets for model in MODELS],
    output:
        md=f"{COMPARE}/compare.md",
        json=f"{COMPARE}/compare.json",
        figures=[f"{COMPARE}/compare.png", f"{COMPARE}/compare_repositories.png"],
    log:
        f"{COMPARE}/compare.log",
    localrule: True
    params:
        runs=[model.RUN for model in MODELS],
        out=lambda wildcards, output: os.path.dirname(output.md),
        # with validate_gold for every model: over the instances whose environment the gold patch validated
        validated="--validated" if all(c["validate_gold"] for c in MODEL_CONFIGS) else "",
    shell:
        "python -m scripts.compare {params.runs:q} {params.validated} --out {params.out:q} 2> >(tee {log:q} >&2)"

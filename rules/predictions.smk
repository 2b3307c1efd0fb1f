if config["predictions"]:

    rule predictions:
        input:
            given=config["predictions"],
            index=INDEX,
        output:
            f"{RUN}/predictions.jsonl",
        log:
            f"{RUN}/logs/predictions.log",
        localrule: True
        shell:
            "python -m scripts.predictions --index {input.index:q} --given {input.given:q} --out {output:q} 2> >(tee {log:q} >&2)"

else:

    rule predictions:
        input:
            # every instance's patch of the sample (the repaired one, with a repair stage), or with
            # allow_partial those made
            patches=merged(PATCH),
        output:
            f"{RUN}/{{sample}}predictions.jsonl",
        log:
            f"{RUN}/logs/{{sample}}predictions.log",
        localrule: True
        params:
            model=MODEL,
        run:
            from scripts import predictions

            predictions.write_generated(input.patches, params.model, output[0])

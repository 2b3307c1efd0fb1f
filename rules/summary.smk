import json

from snakemake.utils import format as snakemake_format

from scripts import forked


rule summary:
    input:
        instances=INSTANCES,
        predictions=f"{RUN}/predictions.jsonl",
        # Read by the summary from the run folder; listed so that they are made first.
        responses=[] if config["predictions"] else merged("response.json"),
        patches=[] if config["predictions"] else merged("patch.json"),
        evaluation=[f"{RUN}/evaluation.json"] if config["evaluation"] != "none" else [],
        validations=validations,
    output:
        json=f"{RUN}/summary.json",
        md=f"{RUN}/summary.md",
    log:
        f"{RUN}/logs/summary.log",
    # Once per run, like select, estimate, predictions, evaluation and figures: a local rule, run
    # where Snakemake runs, never as a cluster job.
    localrule: True
    params:
        run_dir=lambda wildcards, output: os.path.dirname(output.json),
        run_info=json.dumps(
            {
                "run_id": DERIVED["run_id"],
                "mode": "predictions" if config["predictions"] else "generate",
                **{k: config[k] for k in ("dataset", "split", "provider", "context", "evaluation")},
                # given predictions: their file, and the model their rows name (the summary reads it)
                **({"provider": f"predictions file {config['predictions']}"} if config["predictions"] else {}),
                "model": MODEL,
                "samples": SAMPLES,
                "context_why": CONTEXT_WHY,
            }
        ),
    run:
        # `shell: "python -m ... > {log} 2>&1"`, forked from a process that imported it once (scripts/forked.py)
        forked.run_command(
            snakemake_format(
                "python -m scripts.summary --instances {input.instances:q} --predictions {input.predictions:q}"
                " --run-dir {params.run_dir:q} --run-info {params.run_info:q}"
                + (" --evaluation {input.evaluation:q}" if config["evaluation"] != "none" else "")
                + " --out-json {output.json:q} --out-md {output.md:q}"
            ),
            log[0],
        )

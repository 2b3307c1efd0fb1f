# The instance images, pulled ahead of their evaluations (evaluation=docker with prebuilt images): first the
# plan of the pulls, said once per run (scripts/images.py), then one pull job per instance (scripts/evaluate.py),
# at the registry's pace and while the disk keeps min_free_disk_gb. `--resources pulls=N` bounds the pulls at once.
# On a cluster a pull is the first stage of the group job that runs in its image (PULL_GROUP, rules/paths.smk).
if PULLS:

    rule pull_plan:
        input:
            instances=INSTANCES,
            index=INDEX,
        output:
            f"{RUN}/images/plan.json",
        log:
            f"{RUN}/logs/images.log",
        localrule: True
        params:
            run_dir=lambda wildcards, output: Path(output[0]).parents[1],
            settings=lambda wildcards: IMAGE_ARGUMENTS,
        shell:
            "python -m scripts.images plan --instances {input.instances:q} --index {input.index:q}"
            " --run-dir {params.run_dir:q} --out {output:q} {params.settings} 2> >(tee {log:q} >&2)"

    rule pull:
        input:
            **selection_inputs(),
            # said before the first pull; ancient(): a new plan (more instances) pulls nothing again
            plan=ancient(f"{RUN}/images/plan.json"),
        output:
            f"{RUN}/instances/{{id}}/image.json",
        log:
            f"{RUN}/logs/{{id}}/pull.log",
        # its evaluation's priority (rules/evaluate.smk): the evaluations become ready in the order they start in
        priority: evaluation_priority
        group:
            PULL_GROUP  # on a cluster, one job with what runs in the image (rules/paths.smk)
        # a pull waits on the network and the registry's pace, not on a core
        threads: 0
        resources:
            pulls=1,
        params:
            run_dir=lambda wildcards, output: Path(output[0]).parents[2],
            # the image's name is made from these: another source is another image, evaluated again
            source=lambda wildcards: IMAGE_SOURCE,  # a function: the template's braces are no wildcards
            settings=snakemake_patches.untracked(
                f"--min-free-disk-gb {config['min_free_disk_gb']} --pull-wait {config['pull_wait']}", SNAKEMAKE_PATCHES
            ),
        shell:
            "python -m scripts.evaluate pull --instances {input.instances:q} --index {input.index:q} --id {wildcards.id:q}"
            " --run-dir {params.run_dir:q} {params.source} {params.settings} --out {output:q} > {log:q} 2>&1"

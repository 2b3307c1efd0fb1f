# agent=<config>: one mini-swe-agent trajectory per instance and sample in the instance's own container, in place
# of context, prompt and generate (scripts/agent.py). Its trajectory.json is mini-swe-agent's; its response.json
# holds the diff the agent left, which the patch stage takes as it takes a model's answer. Runs in Snakemake's
# process when threads are used, like generate: a step waits on the model or the container, not on a core.
rule agent:
    input:
        **selection_inputs(),
        # the instance's image, pulled ahead at the registry's pace (rules/images.smk); else the job pulls it
        **({"image": f"{RUN}/instances/{{id}}/image.json"} if PULLS else {}),
    output:
        # A paid trajectory is not deleted before its job runs again (rules/generate.smk)
        trajectory=update(f"{RUN}/instances/{{id}}/{{sample}}trajectory.json"),
        response=update(f"{RUN}/instances/{{id}}/{{sample}}response.json"),
    log:
        f"{RUN}/logs/{{id}}/{{sample}}agent.log",
    priority: 3
    group:
        PULL_GROUP  # on a cluster, one job with the image's pull, which it follows (rules/paths.smk)
    threads: 0
    # docker: the agent's container counts as an evaluation's does (--resources docker=N); api: its requests
    resources:
        api=1,
        docker=1,
    params:
        # The settings that change an answer: a change makes the trajectories again (the limits do not: a trajectory
        # in progress takes the new ones, a finished one stays).
        **settings.agent_params(config, GIVEN),
        agent=config["agent"],
    run:
        from scripts import agent

        agent.run_stage(wildcards.id, input, output, log[0], agent_settings(wildcards.sample))

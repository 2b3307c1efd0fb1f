# What a run does before any job (scripts/start.py): the checks of what its jobs will need (Docker) and what it
# does to its folder (set failures aside, record its settings) happen once, in the process the user started: a
# job on a cluster node reads this file again.
if workflow.is_main_process:
    from scripts import start

    try:
        start.before_jobs(
            # an agent's answers are made with the temperature its steps send (none unless given)
            dict(config, temperature=settings.agent_temperature(config, GIVEN)) if AGENT else config,
            os.environ,
            DERIVED,
            runs_jobs=settings.runs_jobs(sys.argv[1:]),
            dry_run=workflow.output_settings.dryrun,
            context_why=CONTEXT_WHY,
            estimate_path=ESTIMATE,
            estimate_settings=estimate_settings() if ESTIMATE else None,
            batch_done=BATCH_DONE,
        )
    except start.StartError as e:
        sys.exit(str(e))

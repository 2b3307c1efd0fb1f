"""Every use this workflow makes of Snakemake's internals, in one place. They are written for one
Snakemake version (WRITTEN_FOR, the pin of requirements.txt); on any other, or with the setting
snakemake_patches: false, none is used and the workflow runs on plain Snakemake: the same results,
slower at thousands of instances (docs/scale.md), and a change of an evaluation setting
(eval_timeout, keep_images, dataset, split) evaluates again.

- remaining_jobs: the list of every job still to run, made lazily (JobScheduler.remaining_jobs).
- no pipe/service lookup: Job.is_pipe_or_service_input answers no when no rule has such outputs.
- thread pool: the local executor's pool widened by the api and docker resources
  (workflow.scheduler._executor, its pool and workers).
- untracked params: a rule parameter that is no rerun trigger (Untracked), because Snakemake's
  record of a job's params leaves out the values it cannot represent.
- jobs of no core: selected while every core is taken (JobScheduler.job_selector), as a pull or a model
  request (threads: 0) waits on the network, not on a core.
- daemon timer: the scheduler's re-evaluation timer (JobScheduler._schedule_reevalutation) as a daemon
  thread, so that the process ends with its last job rather than up to a second later.
"""

import collections.abc
import concurrent.futures
import importlib.metadata
import sys

WRITTEN_FOR = "9.27.1"
_warned = False


def installed_version():
    return importlib.metadata.version("snakemake")


def usable(setting, warn=True):
    """Whether the patches are used: the setting is on and Snakemake is the version they were
    written for. On another version, says so once (warn: in the process the user started)."""
    global _warned
    if not setting:
        return False
    version = installed_version()
    if version == WRITTEN_FOR:
        return True
    if warn and not _warned:
        _warned = True
        print(
            f"Warning: Snakemake {version} is installed; this workflow's speed-ups over Snakemake's internals "
            f"are written for {WRITTEN_FOR} (requirements.txt) and are left out. The results are the same; "
            f"large runs are slower. To have them: pip install snakemake=={WRITTEN_FOR}",
            file=sys.stderr,
        )
    return False


class LazyJobs(collections.abc.Sequence):
    """A list of jobs made when first read."""

    def __init__(self, make):
        self.make, self.jobs = make, None

    def list(self):
        if self.jobs is None:
            self.jobs = self.make()
        return self.jobs

    def __getitem__(self, index):
        return self.list()[index]

    def __len__(self):
        return len(self.list())


def lazy_remaining_jobs(scheduler):
    return LazyJobs(lambda: EAGER["remaining_jobs"].fget(scheduler))


def no_pipe_or_service_input(job, path):
    return False


def job_selector(scheduler, jobs):
    """Snakemake's JobScheduler.job_selector, which selects nothing while every core is taken: then it selects
    among the jobs that take no core. Without it the image pulls of a run whose cores all evaluate (`--cores N
    --resources docker=N`) start only when an evaluation ends, one pull ahead at most, rather than each as a
    pull ends; and a model request waits for a core as well."""
    select = EAGER["job_selector"]
    if scheduler.resources["_cores"] > 0:
        return select(scheduler, jobs)
    coreless = [job for job in jobs if not job.scheduler_resources.get("_cores")]
    if not coreless:
        return []
    scheduler.resources["_cores"] = 1  # what the selector needs to look at all; none of these jobs takes it
    try:
        return select(scheduler, coreless)
    finally:
        scheduler.resources["_cores"] = 0


def schedule_reevaluation(scheduler, delay):
    """Snakemake's JobScheduler._schedule_reevalutation, its timer a daemon thread: after each job selection
    the scheduler starts a timer of max-jobs-per-timespan's span, and Python waits for the last one at exit."""
    import threading

    timer = threading.Timer(delay, scheduler._open_jobs.release)
    timer.daemon = True
    timer.start()


EAGER = {}  # Snakemake's own attributes, as they were before the patches


def patch(workflow):
    """Patch Snakemake's scheduler and jobs; called once every rule is defined (again for each model's
    module, which reads the Snakefile anew: the last call, with every rule, decides)."""
    from snakemake.io import is_flagged
    from snakemake.jobs import Job
    from snakemake.scheduling.job_scheduler import JobScheduler

    if not EAGER:
        EAGER.update(remaining_jobs=JobScheduler.remaining_jobs, is_pipe=Job.is_pipe_or_service_input,
                     reevaluation=JobScheduler._schedule_reevalutation, job_selector=JobScheduler.job_selector)
    JobScheduler._schedule_reevalutation = schedule_reevaluation
    JobScheduler.job_selector = job_selector
    # Before each job selection Snakemake lists every job still to run, for a scheduler that reads
    # it; the greedy scheduler of the profiles never does (16% of the main process's CPU at 2,294
    # instances). Made when read.
    JobScheduler.remaining_jobs = property(lazy_remaining_jobs)
    # Before a job runs, Snakemake looks for each of its inputs among the outputs of each job it
    # depends on, to find pipe() and service() files: for the merge, the summary and `all`, which
    # take files of every instance, work in the square of the run (half a minute at 2,294
    # instances). The check stays for a rule that declares such outputs.
    pipes = any(is_flagged(f, "pipe") or is_flagged(f, "service") for r in workflow.rules for f in r.output)
    Job.is_pipe_or_service_input = EAGER["is_pipe"] if pipes else no_pipe_or_service_input


def widen_thread_pool(workflow):
    """With force-use-threads every local job runs on a thread of one pool of cores + 5 threads, and a
    model request (generate, repair) holds its thread while it waits on the network: with few cores
    that pool, not `--resources api=N`, would bound the requests in flight. Called before the first
    job (onstart), it gives the pool a thread for each api, docker and pulls unit on top."""
    executor = getattr(workflow.scheduler, "_executor", None)
    if not workflow.execution_settings.use_threads or not hasattr(executor, "pool"):
        return  # subprocess jobs, or a cluster executor
    # a resource not given is unbounded (sys.maxsize): no thread for it
    limits = [workflow.scheduler.global_resources.get(name, 0) for name in ("api", "docker", "pulls")]
    waiting = sum(n for n in limits if n < sys.maxsize)
    if waiting:
        executor.workers += waiting
        executor.pool = concurrent.futures.ThreadPoolExecutor(max_workers=executor.workers)


def in_use(workflow, used):
    """The patches in place in this process, read from Snakemake's own objects."""
    from snakemake.jobs import Job
    from snakemake.persistence import UNREPRESENTABLE
    from snakemake.scheduling.job_scheduler import JobScheduler

    remaining = JobScheduler.__dict__.get("remaining_jobs")
    executor = getattr(getattr(workflow, "scheduler", None), "_executor", None)
    return [
        name
        for name, used in [
            ("remaining_jobs", isinstance(remaining, property) and remaining.fget is lazy_remaining_jobs),
            ("no pipe/service lookup", Job.is_pipe_or_service_input is no_pipe_or_service_input),
            ("jobs of no core", JobScheduler.job_selector is job_selector),
            ("daemon timer", JobScheduler._schedule_reevalutation is schedule_reevaluation),
            ("thread pool", getattr(executor, "workers", 0) > workflow.resource_settings.cores + 5),
            ("untracked params", used and workflow.persistence._serialize_param(Untracked("")) is UNREPRESENTABLE),
        ]
        if used
    ]


class Untracked:
    """A rule parameter that is no rerun trigger. Snakemake reruns a job whose params differ
    from the last run's, comparing the values it can represent (strings, numbers, lists...);
    it leaves out other objects, like this one, which a shell command shows as its text. Not
    being a string, it is not filled with wildcards either."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


def untracked(text, used):
    """A parameter that is no rerun trigger with the patches; the plain text (a trigger) without them."""
    return Untracked(text) if used else text


def start(workflow, used):
    """Before the first job (onstart): widen the thread pool; with --verbose, say which patches are in place."""
    if used:
        widen_thread_pool(workflow)
    if workflow.output_settings.verbose:
        print(f"Snakemake patches in use: {', '.join(in_use(workflow, used)) or 'none'}", file=sys.stderr)

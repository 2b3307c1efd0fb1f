# Two steps of Snakemake's main loop whose work grows with the square of the run, skipped where this
# workflow does not need them (docs/scale.md).
import collections.abc

from snakemake.io import is_flagged
from snakemake.jobs import Job
from snakemake.scheduling.job_scheduler import JobScheduler


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


# Before each job selection Snakemake lists every job still to run, for a scheduler that reads it; the
# greedy scheduler of the profiles never does (the list took a sixth of the main process's CPU at 2,294
# instances). Made when read.
if not hasattr(JobScheduler, "eager_remaining_jobs"):  # the Snakefile is read again by each model's module
    JobScheduler.eager_remaining_jobs = JobScheduler.remaining_jobs
    JobScheduler.remaining_jobs = property(lambda scheduler: LazyJobs(lambda: scheduler.eager_remaining_jobs))

# Before a job runs, Snakemake 9 looks for each of its inputs among the outputs of each job it depends
# on, to find pipe() and service() files: for the merge, the summary and `all`, which take files of
# every instance, that is work in the square of the run (half a minute at 2,294 instances). No rule
# here declares such outputs, so the answer is always no; the check stays for a rule that would.
if not any(is_flagged(f, "pipe") or is_flagged(f, "service") for r in workflow.rules for f in r.output):
    Job.is_pipe_or_service_input = lambda job, path: False

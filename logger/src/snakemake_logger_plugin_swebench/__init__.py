"""The workflow's terminal view, a Snakemake logger plugin (`--logger swebench`).

In a terminal: a live view of the run (scripts/live.py) and, above it, errors. Not in a
terminal (CI, SLURM logs, a pipe): one plain line per finished instance stage and a one-line
summary every `--logger-swebench-every` seconds. A failed job whose log ends with a fault of a known cause
(scripts/records.py FIXES) is one line, its traceback and Snakemake's error block go into its log; any other
failed job is shown in full. Several runs in one invocation (models=[...], whose rules
are model<k>_<rule>): a view per run folder, and lines that name their run. With `--verbose`, a dry run
or `--logger-swebench-jobs`, Snakemake's own output (its job blocks) instead.
"""
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

# the project whose scripts draw the view: this package is installed in editable mode from it
PROJECT = Path(__file__).resolve().parents[3]
# the jobs that have no instance and are no stage of one (by their stage, scripts.live.stage_of)
NO_LINE = {"all", "compare"}


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    jobs: bool = field(default=False, metadata={
        "help": "Show Snakemake's own output (a block per job) instead of the run's view.",
        "env_var": False, "required": False})
    every: Optional[int] = field(default=30, metadata={
        "help": "Not in a terminal: seconds between two summary lines.", "env_var": False, "required": False})


class LogHandler(LogHandlerBase):
    def __post_init__(self):
        from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

        common = self.common_settings
        self.stream = sys.stdout if common.stdout else sys.stderr
        self.formatter_ = DefaultFormatter(common.quiet, True)
        self.block_formatter = DefaultFormatter(common.quiet, False)  # Snakemake's error block, without the log
        self.passthrough = None
        if (self.settings and self.settings.jobs) or common.verbose or common.dryrun or common.debug_dag:
            self.passthrough = ColorizingTextHandler(nocolor=common.nocolor, stream=self.stream)
            self.passthrough.addFilter(DefaultFilter(common.quiet, common.debug_dag, common.verbose, common.dryrun,
                                                     common.printshellcmds))
            self.passthrough.setFormatter(DefaultFormatter(common.quiet, common.show_failed_logs))
            return
        if str(PROJECT) not in sys.path:
            sys.path.insert(0, str(PROJECT))
        from rich.console import Console

        self.console = Console(file=self.stream, highlight=False)
        self.terminal = self.console.is_terminal
        self.view_lock = threading.RLock()  # not self.lock: logging.Handler holds that one in emit()
        # jobid -> (rule, instance, log files); jobid -> (run folder, rule, instance, start); jobid -> start
        self.info, self.running, self.started, self.samples = {}, {}, {}, {}
        # run folder -> live.snapshot's settled instances (those whose files this run does not change again);
        # run folder -> (its snapshot, when it was read)
        self.runs, self.snaps = {}, {}
        self.api = self.live = None
        self.first_start = 0.0
        # thread -> the traceback Snakemake logs just before the error of a job that thread ran;
        # run folder -> Counter of the jobs failed for a known cause
        self.held, self.causes = {}, defaultdict(Counter)
        self.progress = (0, 0)
        self.closed = threading.Event()
        if not self.terminal:
            every = (self.settings.every if self.settings else None) or 30
            threading.Thread(target=self.summaries, args=(every,), daemon=True).start()

    def emit(self, record):
        if self.passthrough:
            self.passthrough.handle(record)
            return
        try:
            self.handle_record(record)
        except Exception:  # noqa: BLE001 - a broken view must not stop the run
            self.handleError(record)

    def handle_record(self, record):
        event = getattr(record, "event", None)
        held = self.held.pop(record.thread, None)
        if event == LogEvent.JOB_ERROR:
            self.write_job_error(record, held)
            return
        if held:
            self.write(self.formatter_.format(held))
        if event == LogEvent.ERROR and getattr(record, "exception", None):
            # a job's exception: Snakemake logs the job's error next, from the same thread
            self.held[record.thread] = record
        elif event == LogEvent.RESOURCES_INFO and getattr(record, "provided_resources", None):
            api = record.provided_resources.get("api")
            self.api = getattr(api, "value", api)
        elif event == LogEvent.JOB_STARTED:  # before the JOB_INFO of each of its jobs
            self.first_start = self.first_start or time.time()
            self.started.update(dict.fromkeys(record.jobs, time.time()))
        elif event == LogEvent.JOB_INFO:
            instance = (record.wildcards or {}).get("id")
            # a path is shown as "<path> (update)" and the like
            run = self.find_run([path.split(" (")[0] for path in record.output or []])
            self.info[record.jobid] = (record.rule_name, instance, list(record.log or []))
            self.samples[record.jobid] = (record.wildcards or {}).get("sample") or ""  # "" or samples/<s>/
            self.running[record.jobid] = (run, record.rule_name, instance, self.started.pop(record.jobid, time.time()))
        elif event == LogEvent.JOB_FINISHED:
            from scripts.live import stage_of

            job = self.running.pop(record.job_id, None)
            if job and not self.terminal and stage_of(job[1]) not in NO_LINE:
                self.write(self.stage_line(*job[:3], self.samples.pop(record.job_id, "")))
        elif event == LogEvent.PROGRESS:
            self.progress = (record.done, record.total)
        elif str(record.msg or "").startswith("Cannot restore") and str(record.msg).endswith("no backup found."):
            pass  # an update() output (a paid answer) that did not exist before its job failed: nothing to put back
        elif getattr(record, "swebench", None) == "notice" or (
                record.levelno >= 30 and event not in (LogEvent.RUN_INFO, LogEvent.PROGRESS)):
            self.write(self.formatter_.format(record))
        elif event is None and str(record.msg or "").startswith("Nothing to be done"):
            self.write(record.msg)

    def find_run(self, outputs):
        """A job's run folder, from its outputs (None for one with none); the view starts at the first."""
        from scripts.live import run_of  # fails here, not mid-run, when rich is missing

        run = next(filter(None, map(run_of, outputs)), None)
        if run and run not in self.runs:
            self.runs[run] = {}
            if self.terminal and not self.live:
                from rich.live import Live

                self.live = Live(get_renderable=self.render, console=self.console, refresh_per_second=1,
                                 redirect_stdout=True, redirect_stderr=True)
                self.live.start()
        return run

    def look(self, run, force=False):
        """The run's snapshot, read again at most every 2 s."""
        from scripts import live

        with self.view_lock:
            snap, at = self.snaps.get(run, (None, 0.0))
            if force or snap is None or time.time() - at > 2:
                snap = live.snapshot(run, self.runs[run])
                self.snaps[run] = (snap, time.time())
            return snap

    def eta(self):
        from scripts.live import eta_text

        done, total = self.progress
        if self.closed.is_set():
            return "ended" + (f" with {total - done} jobs not done" if done < total else "")
        return eta_text(done, total, time.time() - self.first_start if self.first_start else 0)

    def render(self):
        """A view per run folder, each with its jobs running."""
        from rich.console import Group

        from scripts import live

        jobs, eta = list(self.running.values()), self.eta()
        elapsed = time.time() - self.first_start if self.first_start else 0
        views = []
        for run in list(self.runs):
            own = [(live.stage_of(rule), instance, start) for folder, rule, instance, start in jobs if folder == run]
            views.append(live.view(self.look(run), eta, elapsed, own, self.api, causes=self.causes.get(run)))
        return Group(*views)

    def stage_line(self, run, rule, instance, sample=""):
        """A finished job's line; a model's job (models=[...]) names its run folder."""
        from scripts import live

        stage = live.stage_of(rule)
        name = f"{run.name}: " if run and stage != rule else ""
        return f"{name}{time.strftime('%H:%M:%S')} {live.stage_outcome(run, stage, instance, sample)}"

    def write_job_error(self, record, traceback=None):
        """A failed job of a known cause in one line, the rest kept in its log; any other in full, with the
        traceback logged before it."""
        from scripts import live

        rule, instance, logs = self.info.get(record.jobid, (record.rule_name, None, []))
        logs = logs or list(record.log or [])
        run = self.running.pop(record.jobid, (None,))[0]
        known = live.known_cause(logs)
        if known:
            cause, log = known
            kept = [self.formatter_.format(traceback)] if traceback else []
            try:
                live.keep_in_log(log, "\n".join([*kept, self.block_formatter.format(record).strip("\n")]))
            except OSError:  # a log that cannot be written: all of it here instead
                known = None
        if not known:
            if traceback:
                self.write(self.formatter_.format(traceback))
            self.write(live.error_text(live.stage_of(rule), instance, logs, record.rule_msg))
            return
        self.causes[run][cause] += 1
        self.write(live.error_line(rule, instance, self.samples.pop(record.jobid, ""), cause, log))

    def summaries(self, every):
        while not self.closed.wait(every):
            self.write_summaries([run for run in list(self.runs) if (run / "instances.index.json").is_file()],
                                 list(self.running.values()))  # the runs whose selection is made

    def write_summaries(self, runs, jobs):
        """A summary line per run, with its jobs running among jobs; each names its run when there are several."""
        from scripts import live

        for run in runs:
            name = f"{run.name}: " if len(self.runs) > 1 else ""
            running = sum(job[0] == run for job in jobs)
            self.write(name + live.summary_line(self.look(run, force=True), self.eta(), self.api, running,
                                                self.causes.get(run)))

    def write(self, text):
        """Whole lines, one message at a time."""
        if self.terminal:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
            return
        with self.view_lock:
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()

    def close(self):
        if not self.passthrough and not self.closed.is_set():
            self.closed.set()
            for held in self.held.values():
                self.write(self.formatter_.format(held))
            if self.live:
                for run in list(self.runs):
                    self.look(run, force=True)
                self.live.refresh()
                self.live.stop()
            else:
                self.write_summaries(list(self.runs), ())
        super().close()

    @property
    def writes_to_stream(self):
        return True

    @property
    def writes_to_file(self):
        return False

    @property
    def has_filter(self):
        return True

    @property
    def has_formatter(self):
        return True

    @property
    def needs_rulegraph(self):
        return False

"""The workflow's terminal view, a Snakemake logger plugin (`--logger swebench`).

In a terminal: a live view of the run (scripts/live.py) and, above it, errors in full. Not in a
terminal (CI, SLURM logs, a pipe): one plain line per finished instance stage and a one-line
summary every `--logger-swebench-every` seconds. With `--verbose`, a dry run or
`--logger-swebench-jobs`, Snakemake's own output (its job blocks) instead.
"""
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

# the project whose scripts draw the view: this package is installed in editable mode from it
PROJECT = Path(__file__).resolve().parents[3]
# the jobs of a run that have no instance and are no stage of one
NO_LINE = {"all"}


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
        # jobid -> (stage, instance, log files); jobid -> (stage, instance, start); jobid -> start
        self.info, self.running, self.started, self.samples = {}, {}, {}, {}
        self.run_dir = self.api = self.live = self.snap = None
        self.settled = {}  # live.snapshot: the instances whose files this run does not change again
        self.snap_at = self.first_start = 0.0
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
        if event == LogEvent.RESOURCES_INFO and getattr(record, "provided_resources", None):
            api = record.provided_resources.get("api")
            self.api = getattr(api, "value", api)
        elif event == LogEvent.JOB_STARTED:  # before the JOB_INFO of each of its jobs
            self.first_start = self.first_start or time.time()
            self.started.update(dict.fromkeys(record.jobs, time.time()))
        elif event == LogEvent.JOB_INFO:
            instance = (record.wildcards or {}).get("id")
            self.info[record.jobid] = (record.rule_name, instance, list(record.log or []))
            self.samples[record.jobid] = (record.wildcards or {}).get("sample") or ""  # "" or samples/<s>/
            self.running[record.jobid] = (record.rule_name, instance, self.started.pop(record.jobid, time.time()))
            if self.run_dir is None:  # a path is shown as "<path> (update)" and the like
                self.find_run([path.split(" (")[0] for path in record.output or []])
        elif event == LogEvent.JOB_FINISHED:
            job = self.running.pop(record.job_id, None)
            if job and not self.terminal and job[0] not in NO_LINE:
                self.write(self.stage_line(job[0], job[1], self.samples.pop(record.job_id, "")))
        elif event == LogEvent.PROGRESS:
            self.progress = (record.done, record.total)
        elif event == LogEvent.JOB_ERROR:
            self.running.pop(record.jobid, None)
            self.write(self.job_error(record))
        elif str(record.msg or "").startswith("Cannot restore") and str(record.msg).endswith("no backup found."):
            pass  # an update() output (a paid answer) that did not exist before its job failed: nothing to put back
        elif getattr(record, "swebench", None) == "notice" or (
                record.levelno >= 30 and event not in (LogEvent.RUN_INFO, LogEvent.PROGRESS)):
            self.write(self.formatter_.format(record))
        elif event is None and str(record.msg or "").startswith("Nothing to be done"):
            self.write(record.msg)

    def find_run(self, outputs):
        """The run folder, from a job's output: results/<run_id>/instances/... or .../instances.index.json."""
        from scripts.live import view  # noqa: F401 - fails here, not mid-run, when rich is missing

        for path in map(Path, outputs):
            if path.name == "instances.index.json":
                self.run_dir = path.resolve().parent
            elif "instances" in path.parts:  # instances/<id>/<file> or instances/<id>/samples/<s>/<file>
                parts = path.resolve().parts
                self.run_dir = Path(*parts[: len(parts) - 1 - parts[::-1].index("instances")])
            else:
                continue
            if self.terminal:
                from rich.live import Live

                self.live = Live(get_renderable=self.render, console=self.console, refresh_per_second=1,
                                 redirect_stdout=True, redirect_stderr=True)
                self.live.start()
            return

    def look(self, force=False):
        """The run's snapshot, read again at most every 2 s."""
        from scripts import live

        with self.view_lock:
            if force or self.snap is None or time.time() - self.snap_at > 2:
                self.snap, self.snap_at = live.snapshot(self.run_dir, self.settled), time.time()
            return self.snap

    def eta(self):
        from scripts.live import eta_text

        done, total = self.progress
        if self.closed.is_set():
            return "ended" + (f" with {total - done} jobs not done" if done < total else "")
        return eta_text(done, total, time.time() - self.first_start if self.first_start else 0)

    def render(self):
        from scripts import live

        jobs = [job for job in self.running.values() if job[0] not in NO_LINE]
        elapsed = time.time() - self.first_start if self.first_start else 0
        return live.view(self.look(), self.eta(), elapsed, jobs, self.api)

    def stage_line(self, stage, instance, sample=""):
        from scripts import live

        return f"{time.strftime('%H:%M:%S')} {live.stage_outcome(self.run_dir, stage, instance, sample)}"

    def job_error(self, record):
        from scripts import live

        stage, instance, logs = self.info.get(record.jobid, (record.rule_name, None, list(record.log or [])))
        return live.error_text(stage, instance, logs or list(record.log or []), record.rule_msg)

    def summaries(self, every):
        from scripts import live

        while not self.closed.wait(every):
            if self.run_dir and (self.run_dir / "instances.index.json").is_file():  # the selection is made
                self.write(live.summary_line(self.look(force=True), self.eta(), self.api, len(self.running)))

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
            if self.live:
                self.look(force=True)
                self.live.refresh()
                self.live.stop()
            elif self.run_dir:
                from scripts import live

                self.write(live.summary_line(self.look(force=True), self.eta(), self.api, 0))
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

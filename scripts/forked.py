"""A job's command line run in a process forked from one that has already imported it.

The evaluate and validate jobs import the SWE-bench harness, about 2 s of CPU each (mostly its imports of
`datasets` and `modal`), which a new interpreter per job (`python -m scripts.evaluate ...`) would spend again
for every instance; the summary and figures jobs import matplotlib and the price tables, most of a
second at the end of every run. Here one process (multiprocessing's fork server) imports them once, and
each job is a fork of it that runs the module's `main(argv)` with its output in the job's log, as the command line would. Each
job keeps a process of its own: the harness works in the current folder (scripts/evaluate.py's
scratch_directory), and a job is stopped by a signal.
"""
import importlib
import multiprocessing
import os
import shlex
import threading

# what the fork server imports once, before the first fork: the summary and its figures (matplotlib), and the
# harness for the evaluate and validate jobs
SUMMARY = ["scripts.summary", "scripts.figures"]
HARNESS = ["scripts.evaluate", "scripts.validate", "swebench.harness.run_evaluation", "docker"]
_lock = threading.Lock()
_context = None


class JobFailed(Exception):
    pass


def context(preload=SUMMARY + HARNESS):
    global _context
    with _lock:  # jobs start on several threads of Snakemake's process
        if _context is None:
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(preload)
        return _context


def start(harness):
    """Start the fork server now (before the first job), so that it imports what the jobs need while the first
    jobs (the selection, the predictions) run; the harness only when this process runs evaluations (harness)."""
    from multiprocessing import forkserver

    context(SUMMARY + (HARNESS if harness else []))
    forkserver.ensure_running()


def _main(module, argv, log, cwd):
    """In the forked process: `python -m module argv > log 2>&1` from cwd."""
    os.chdir(cwd)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    importlib.import_module(module).main(argv)


def run(module, argv, log):
    """Run module's main(argv) in a forked process, its output and errors in the file log; JobFailed when it
    exits with an error (its message is the log's last line)."""
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    # daemon: stopped when Snakemake's process ends, as the jobs of a shell command are
    process = context().Process(target=_main, args=(module, [str(a) for a in argv], os.path.abspath(log),
                                                    os.getcwd()), daemon=True)
    process.start()
    process.join()
    if process.exitcode:
        raise JobFailed(f"python -m {module} exited with {process.exitcode}; its log: {log}")


def run_command(command, log):
    """Run a job's command line, `python -m <module> ARGS` (a rule's shell command without its redirection to the
    log), as run() does."""
    python, option, module, *argv = shlex.split(command)
    if (python, option) != ("python", "-m"):
        raise ValueError(f"not a command line `python -m <module> ...`: {command}")
    run(module, argv, log)

"""File helpers shared by the stages: atomic writes and JSON/JSONL reading."""
import contextlib
import functools
import json
import os
import shutil
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path


def write_text_atomic(path, text):
    """Write text so that readers see either the old file or the whole new one."""
    with open_atomic(path) as f:
        f.write(text)


@contextlib.contextmanager
def open_atomic(path, mode="w"):
    """A file to write bit by bit (text, or bytes with mode "wb"); it appears under path, whole,
    only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp, whose files are 0600: this one gets what the umask gives any new file.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with os.fdopen(fd, mode, **text) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def copy_atomic(source, path):
    with open(source, "rb") as f, open_atomic(path, "wb") as out:
        shutil.copyfileobj(f, out)


def write_json_atomic(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path, rows):
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_log(log_path, message):
    """Add a line to a job's log (the stages run inside Snakemake's process, whose stderr is
    not the job's). No log path: the line goes to stderr."""
    if not log_path:
        print(message, file=sys.stderr)
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(message + "\n")


def now():
    """The time in UTC, as ISO 8601 with milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def instance_log(log_path, instance_id):
    """A function that adds a time-stamped line about the instance to its job's log (the stages
    run inside Snakemake's process, whose stderr is not the job's)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log_file:
        def log(message):
            log_file.write(f"{now()} {instance_id}: {message}\n")
            log_file.flush()

        yield log


def set_aside(path, label, stamp):
    """Rename a file or folder to <stem>.<label>-<stamp><suffix> beside it, so that its stage is made again
    and the earlier one is kept; return the new path."""
    path = Path(path)
    aside = path.with_name(f"{path.stem}.{label}-{stamp}{path.suffix}")
    os.replace(path, aside)
    return aside


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def find_jsonl_row(path, instance_id):
    """The row of a JSONL file with this instance_id (None if there is none), parsing only
    the lines that mention it."""
    needle = json.dumps(instance_id)
    with open(path, encoding="utf-8") as f:
        for line in f:
            if needle in line:
                row = json.loads(line)
                if row.get("instance_id") == instance_id:
                    return row
    return None


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@functools.lru_cache(maxsize=4)
def _index(path, mtime_ns, size):
    return read_json(path)


def read_row(rows_path, index_path, instance_id):
    """One row of instances.jsonl, found through its index. The jobs of a run share Snakemake's process
    (force-use-threads): the index is parsed once per version of the file, not once per job, which
    would be work in the square of the run."""
    stat = os.stat(index_path)
    offset, size = _index(os.fspath(index_path), stat.st_mtime_ns, stat.st_size)[instance_id]
    with open(rows_path, "rb") as f:
        f.seek(offset)
        return json.loads(f.read(size))


# A job that fails on the machinery (network, registry, daemon, disk), not on the model's work, ends its log
# with this line; status and the summary show such instances apart, and a plain rerun retries them.
FAULT_PREFIX = "infrastructure fault: "


def fault_line(cause, message):
    return f"{FAULT_PREFIX}{cause}: {' '.join(str(message).split())}"


def infrastructure_fault(log):
    """(cause, message) of the last fault line of a job's log; None when it has none."""
    if not Path(log).is_file():
        return None
    text = Path(log).read_text(encoding="utf-8", errors="replace")
    lines = [line.split(FAULT_PREFIX, 1)[1] for line in text.splitlines() if FAULT_PREFIX in line]
    if not lines:
        return None
    cause, _, message = lines[-1].partition(": ")
    return cause, message


# The stages of their own that run ahead of a stage of an instance, whose faults stop it: the pull of its image
# (rules/images.smk) and, with validate_gold, its gold validation (rules/validate.smk).
AHEAD = {"evaluate": ("pull", "validate"), "validate": ("pull",)}


def stage_log(run_dir, instance_id, stage, sample=""):
    """The instance's latest log of the stage or of a stage ahead of it (AHEAD), whichever was written last;
    None when there is none."""
    folder = Path(run_dir) / "logs" / instance_id
    logs = [folder / f"{sample}{stage}.log"] + [folder / f"{ahead}.log" for ahead in AHEAD.get(stage, ())]
    logs = sorted((log for log in logs if log.is_file()), key=lambda log: log.stat().st_mtime_ns)
    return logs[-1] if logs else None


def stage_fault(run_dir, instance_id, stage, sample=""):
    """infrastructure_fault of stage_log: the stage's own, or the image's pull's or the gold validation's ahead of
    it."""
    log = stage_log(run_dir, instance_id, stage, sample)
    return infrastructure_fault(log) if log else None


def sample_folder(sample):
    """Where sample s of an instance (or of the merged files) lives, relative to its folder: sample 1
    where a run with one sample keeps it, sample s in samples/<s>/."""
    return "" if int(sample) == 1 else f"samples/{int(sample)}/"


def sample_number(folder):
    """The sample of a sample_folder ("" or samples/<s>/): 1 or s."""
    return int(folder.split("/")[1]) if folder else 1


def instance_id_of(path):
    """The instance id of a per-instance file: instances/<id>/<file> or instances/<id>/samples/<s>/<file>."""
    folder = Path(path).parent
    return folder.parent.parent.name if folder.parent.name == "samples" else folder.name


def harness_specs():
    """The harness's MAP_REPO_VERSION_TO_SPECS, without importing the harness: `swebench/__init__.py` imports all
    of it (datasets, docker, modal), a second of CPU in Snakemake's process, where the selection is checked before
    the first evaluation can start. Its constants are plain modules: they are imported under stand-ins of their
    two parent packages, which are then taken away, so that a later `import swebench` imports the real ones."""
    import importlib.util
    import types

    if "swebench" in sys.modules:
        return sys.modules["swebench"].harness.constants.MAP_REPO_VERSION_TO_SPECS
    root = importlib.util.find_spec("swebench").submodule_search_locations[0]
    for name, folder in [("swebench", root), ("swebench.harness", os.path.join(root, "harness"))]:
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__path__ = [folder]
    try:
        return importlib.import_module("swebench.harness.constants").MAP_REPO_VERSION_TO_SPECS
    finally:
        for name in [n for n in sys.modules if n == "swebench" or n.startswith("swebench.")]:
            del sys.modules[name]


def known_to_harness(row):
    """Whether the harness has specifications (environment, test command) for the row's repository and version."""
    return row.get("version") in harness_specs().get(row["repo"], {})

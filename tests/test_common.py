import json
import os
import signal
import subprocess
import sys

import pytest

from scripts import common

from conftest import PROJECT

pytestmark = pytest.mark.unit


def test_round_trips(tmp_path):
    common.write_json_atomic(tmp_path / "a" / "x.json", {"k": "é"})
    assert common.read_json(tmp_path / "a" / "x.json") == {"k": "é"}
    common.write_jsonl_atomic(tmp_path / "rows.jsonl", [{"a": 1}, {"b": 2}])
    assert common.read_jsonl(tmp_path / "rows.jsonl") == [{"a": 1}, {"b": 2}]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "x.txt"
    common.write_text_atomic(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        common.write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_killed_writer_leaves_old_or_whole_file(tmp_path):
    """A writer killed while it writes, or before its rename, leaves the old file whole."""
    target = tmp_path / "big.json"
    old = {"n": 0, "pad": "x" * 100}
    new = {"n": 1, "pad": "x" * 2_000_000}
    writer = (
        "import os, signal, sys; sys.path.insert(0, sys.argv[1]); from scripts import common\n"
        "die = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
        "class HalfThenDie:  # writes half of what it is given to the file, then the process is killed\n"
        "    def __init__(self, f): self.f = f\n"
        "    def __enter__(self): return self\n"
        "    def __exit__(self, *exc): self.f.close()\n"
        "    def write(self, text): self.f.write(text[:len(text) // 2]); self.f.flush(); die()\n"
        "fdopen = os.fdopen\n"
        "if sys.argv[3] == 'while writing': os.fdopen = lambda *a, **k: HalfThenDie(fdopen(*a, **k))\n"
        "if sys.argv[3] == 'before the rename': os.replace = die\n"
        "common.write_json_atomic(sys.argv[2], {'n': 1, 'pad': 'x' * 2_000_000})\n"
    )
    for moment in ("while writing", "before the rename"):
        common.write_json_atomic(target, old)
        process = subprocess.run([sys.executable, "-c", writer, str(PROJECT), str(target), moment])
        assert process.returncode == -signal.SIGKILL
        assert json.loads(target.read_text()) == old
        # the new text was (partly) written to a temporary file of its own, left by the killed writer
        (temporary,) = [path for path in tmp_path.iterdir() if path != target]
        written = temporary.read_text()
        assert 0 < len(written) < len(json.dumps(new, indent=2)) if moment == "while writing" else json.loads(written) == new
        temporary.unlink()
    # not killed: the new file, whole
    subprocess.run([sys.executable, "-c", writer, str(PROJECT), str(target), "to the end"], check=True)
    assert json.loads(target.read_text()) == new

import json
import os
import signal
import subprocess
import sys
import time

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
    # A writer killed at any moment leaves no half-written target.
    target = tmp_path / "big.json"
    writer = (
        "import sys; sys.path.insert(0, sys.argv[1]); from scripts.common import write_json_atomic\n"
        "for n in range(1000): write_json_atomic(sys.argv[2], {'n': n, 'pad': 'x' * 2_000_000})\n"
    )
    for delay in (0.05, 0.15, 0.3):
        process = subprocess.Popen([sys.executable, "-c", writer, str(PROJECT), str(target)])
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if target.exists():
            assert len(json.loads(target.read_text())["pad"]) == 2_000_000
    assert target.exists()

"""The run's figures, and the HTML report of a finished run made by the real `snakemake --report`."""
import base64
import json
import os
import subprocess
import sys

import pytest

from scripts import figures, summary

from conftest import LITE_TEST, PROJECT, read_rows, snakemake, write_rows
from test_summary import RUN_INFO, patch, response, write_instance

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_figures(paths, out_dir):
    assert sorted(p.name for p in paths) == ["cost.png", "funnel.png", "repositories.png"]
    for path in paths:
        assert path.parent == out_dir
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert not list(out_dir.glob(".*"))  # no temporary file left


@pytest.mark.unit
def test_figures_of_an_evaluated_run_of_300_instances(tmp_path):
    rows = [{"instance_id": f"o__r{n % 12}-{n}", "repo": f"o/r{n % 12}"} for n in range(300)]
    for n, row in enumerate(rows):
        i = row["instance_id"]
        write_instance(tmp_path, i, response(i, cost=0.001 * (n % 17), tokens=(1000 + 37 * n, 50 + n)),
                       patch(i) if n % 5 else patch(i, "empty", "no_diff"))
    predictions = [{"instance_id": r["instance_id"], "model_name_or_path": "m", "model_patch": "d"} for r in rows]
    resolved = [r["instance_id"] for n, r in enumerate(rows) if n % 3 == 0]
    evaluation = {"resolved_ids": resolved, "completed_instances": 200, "error_ids": [], "patch_failed_ids": [],
                  "build_failed_ids": [], "timeout_ids": [],
                  "status_counts": {"resolved": 100, "unresolved": 100, "empty_patch": 60, "patch_failed": 40,
                                    "build_failed": 0, "timeout": 0, "error": 0}}
    record = summary.summarise(rows, predictions, str(tmp_path), {**RUN_INFO, "evaluation": "docker"}, evaluation)
    (tmp_path / "summary.json").write_text(json.dumps(record))
    out_dir = tmp_path / "figures"
    assert_figures(figures.make_figures(tmp_path / "summary.json", out_dir), out_dir)


@pytest.mark.unit
def test_figures_of_a_run_without_answers_or_evaluation(tmp_path):
    rows = [{"instance_id": "a-1", "repo": "o/a"}]
    predictions = [{"instance_id": "a-1", "model_name_or_path": "m", "model_patch": "diff"}]
    record = summary.summarise(rows, predictions, str(tmp_path), {**RUN_INFO, "mode": "predictions"})
    (tmp_path / "summary.json").write_text(json.dumps(record))
    out_dir = tmp_path / "figures"
    assert_figures(figures.make_figures(tmp_path / "summary.json", out_dir), out_dir)


@pytest.mark.workflow
def test_report_of_a_finished_run_holds_its_figures(tmp_path):
    dataset = write_rows(tmp_path / "sample.jsonl", read_rows(LITE_TEST, 3))
    snakemake(tmp_path, "--config", f"dataset={dataset}")  # figures are part of the default run
    run = tmp_path / "results" / "gold"
    snakemake(tmp_path, "--config", f"dataset={dataset}", "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "swebench-runner: a run of SWE-bench" in html  # report/workflow.rst
    for name in ("funnel", "repositories", "cost"):
        png = (run / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert base64.b64encode(png).decode() in html  # the report embeds the figure itself

    # the status command reads the finished run with no configuration, from results/ under the current folder
    result = subprocess.run([sys.executable, "-m", "scripts.status"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(PROJECT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("results/gold: 3 instances selected")
    assert "patch           3       0      0" in result.stdout
    assert "figures yes" in result.stdout

"""The patch stage's apply check and self-repair in the real snakemake workflow."""
import json
import subprocess
import sys

import pytest

from scripts import costs

import fixture_repos
from conftest import PROJECT, assert_valid, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

TINY = PROJECT / "examples" / "tiny.jsonl"
BUNDLES = f"{PROJECT / 'examples' / 'repos'}/{{repo}}.bundle"


@pytest.mark.unit
def test_example_bundles_hold_the_commits_of_tiny_jsonl(tmp_path):
    subprocess.run([sys.executable, str(PROJECT / "examples" / "make_repos.py"), "--dest", str(tmp_path)], check=True)
    rebuilt = {}
    for bundle in tmp_path.rglob("*.bundle"):
        heads = subprocess.run(["git", "bundle", "list-heads", str(bundle)], capture_output=True, text=True, check=True)
        rebuilt[bundle.relative_to(tmp_path).as_posix()] = heads.stdout.split()[0]
    shipped = {}
    for bundle in (PROJECT / "examples" / "repos").rglob("*.bundle"):
        heads = subprocess.run(["git", "bundle", "list-heads", str(bundle)], capture_output=True, text=True, check=True)
        shipped[bundle.relative_to(PROJECT / "examples" / "repos").as_posix()] = heads.stdout.split()[0]
    assert rebuilt == shipped == {"example/calc.bundle": read_rows(TINY)[1]["base_commit"],
                                  "example/greet.bundle": read_rows(TINY)[2]["base_commit"]}


@pytest.mark.workflow
def test_readme_example_is_apply_checked(tmp_path):
    snakemake(tmp_path, "--config", f"dataset={TINY}", "apply_check=true", f"repo_url={BUNDLES}",
              f"repo_cache={tmp_path / 'cache'}")
    run = tmp_path / "results" / "gold"
    predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
    for row in read_rows(TINY):
        folder = run / "instances" / row["instance_id"]
        record = json.loads((folder / "patch.json").read_text())
        assert_valid(record, "patch")
        assert (record["applies"], record["apply_attempt"]) == (True, "git apply --verbose")
        # the normal form: git's own diff of the patched file, with the reference's changes
        patch = predictions[row["instance_id"]]
        assert patch == (folder / "patch.diff").read_text() and "\nindex " in patch
        def changed(text):
            return [line for line in text.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]

        assert changed(patch) == changed(row["patch"])
        assert not (folder / "repair.json").exists()  # the gold provider has no repair stage


@pytest.mark.workflow
def test_unreachable_repository_fails_the_patch_job_with_how_to_fix_it(tmp_path):
    result = snakemake(tmp_path, "--config", f"dataset={TINY}", "apply_check=true", f"repo_url={tmp_path}/none/{{repo}}",
                       f"repo_cache={tmp_path / 'cache'}", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "example__greet-1: cannot check the patch at example/greet@" in output
    assert "set repo_url (and repo_cache) to where the repository can be fetched, or apply_check=false" in output
    assert not list((tmp_path / "results" / "gold" / "instances").glob("*/patch.json"))


@pytest.mark.workflow
def test_self_repair_in_the_workflow_keeps_its_files_and_pays_from_the_budget(tmp_path):
    rows, url = fixture_repos.build(tmp_path / "repos")
    rows = rows[:3]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    broken = rows[0]["instance_id"]
    with FakeModelServer(rows) as server:
        server.answers[broken] = [rows[0]["patch"].replace("-        return math.pi * self.radius\n",
                                                           "-        return math.tau * self.radius\n")]
        snakemake(tmp_path, "--config", f"dataset={dataset}", "provider=openai", "model=gpt-4o",
                  f"base_url={server.url}/v1", "apply_check=true", f"repo_url={url}", f"repo_cache={tmp_path / 'cache'}",
                  "run_id=repair", "max_cost=5", "context=none", env={"OPENAI_API_KEY": "sk-test-key"})
        run = tmp_path / "results" / "repair"
        folder = run / "instances" / broken
        assert json.loads((folder / "patch.json").read_text())["reason"] == "does_not_apply"
        record = json.loads((folder / "repair.json").read_text())
        assert_valid(record, "repair")
        assert (record["status"], record["answer"], record["applies"]) == ("valid", "repair-1", True)
        assert record["attempts"][0]["status"] == "valid"
        assert_valid(json.loads((folder / "repair" / "1.prompt.json").read_text()), "prompt")
        repair_response = json.loads((folder / "repair" / "1.response.json").read_text())
        assert_valid(repair_response, "response")
        spent = costs.read_ledger(run / "spend.jsonl")
        assert sorted(s["instance_id"] for s in spent) == sorted([r["instance_id"] for r in rows] + [broken])
        assert repair_response["cost_usd"] in [s["cost_usd"] for s in spent if s["instance_id"] == broken]
        assert "repair 1: valid" in (run / "logs" / broken / "repair.log").read_text()
        assert record["cost_usd"] == repair_response["cost_usd"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["counts"]["patch"]["mended_by_model"] == 1 and summary["cost"]["repairs_usd"] == record["cost_usd"]
        predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
        assert all(predictions.values()) and predictions[broken] == (folder / "repair.diff").read_text()
        for other in rows[1:]:  # nothing to mend: no request, the patch stage's patch
            other_folder = run / "instances" / other["instance_id"]
            assert json.loads((other_folder / "repair.json").read_text())["attempts"] == []
            assert [p.name for p in (other_folder / "repair").iterdir() if not p.name.startswith(".")] == []
            assert (other_folder / "repair.diff").read_text() == (other_folder / "patch.diff").read_text()

        # The patch stage made again (here: its record deleted) would repair again: the paid repair is kept.
        before = {path: path.read_bytes() for path in [folder / "repair.json", *(folder / "repair").iterdir()]}
        (folder / "patch.json").unlink()
        server.answers[broken] = [rows[0]["patch"]]
        asked = len(server.requests)
        config = ["--config", f"dataset={dataset}", "provider=openai", "model=gpt-4o", f"base_url={server.url}/v1",
                  "apply_check=true", f"repo_url={url}", f"repo_cache={tmp_path / 'cache'}", "run_id=repair",
                  "max_cost=5", "context=none"]
        kept = snakemake(tmp_path, *config, env={"OPENAI_API_KEY": "sk-test-key"}, check=False)
        assert kept.returncode != 0 and "holds a paid answer" in kept.stderr + kept.stdout
        assert len(server.requests) == asked
        assert {path: path.read_bytes() for path in before} == before
        snakemake(tmp_path, *config, env={"OPENAI_API_KEY": "sk-test-key"})  # goes on with the kept repair
        assert len(server.requests) == asked and {path: path.read_bytes() for path in before} == before

        (folder / "patch.json").unlink()
        snakemake(tmp_path, *config, "overwrite=true", env={"OPENAI_API_KEY": "sk-test-key"})
        assert len(server.requests) == asked + 1
    (aside,) = folder.glob("repair.overwritten-*.json")
    assert aside.read_bytes() == before[folder / "repair.json"]
    (aside_folder,) = [p for p in folder.glob("repair.overwritten-*") if p.is_dir()]
    assert {p.name: p.read_bytes() for p in aside_folder.iterdir()} == {
        p.name: data for p, data in before.items() if p.parent == folder / "repair"}


def not_applying(row):
    """The reference patch with a removed line that is not in the file."""
    removed = next(line for line in row["patch"].splitlines(keepends=True) if line.startswith("-    "))
    return row["patch"].replace(removed, removed.replace("return", "return 0 +"), 1)


@pytest.mark.workflow
def test_retry_failed_judges_the_patch_the_predictions_take(tmp_path):
    """A patch the repair stage mended is no failure: retry_failed leaves it and its paid answers alone. One the
    repair did not mend is asked again, with the repair's files set aside too, and the run finishes."""
    rows, url = fixture_repos.build(tmp_path / "repos")
    rows = rows[:2]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    mended, unmended = (r["instance_id"] for r in rows)
    run = tmp_path / "results" / "retry"
    config = ["--config", f"dataset={dataset}", "provider=openai", "model=gpt-4o", "apply_check=true",
              f"repo_url={url}", f"repo_cache={tmp_path / 'cache'}", "run_id=retry", "retry_backoff=0.01",
              "context=none"]
    with FakeModelServer(rows) as server:
        config.append(f"base_url={server.url}/v1")
        server.answers[mended] = [not_applying(rows[0])]  # then the repair request gets the reference patch
        server.answers[unmended] = [not_applying(rows[1]), not_applying(rows[1])]  # the repair does no better
        snakemake(tmp_path, *config, env={"OPENAI_API_KEY": "sk-test-key"})
        for instance_id, status in ((mended, "valid"), (unmended, "invalid")):
            folder = run / "instances" / instance_id
            assert json.loads((folder / "patch.json").read_text())["reason"] == "does_not_apply"
            assert json.loads((folder / "repair.json").read_text())["status"] == status
        asked = len(server.requests_for(mended))
        before = {p: p.read_bytes() for p in (run / "instances" / mended).rglob("*") if p.is_file()}

        retried = snakemake(tmp_path, *config, "retry_failed=true", env={"OPENAI_API_KEY": "sk-test-key"})
        assert len(server.requests_for(mended)) == asked
        assert {p: p.read_bytes() for p in (run / "instances" / mended).rglob("*") if p.is_file()} == before
        set_aside = [line for line in retried.stderr.splitlines() if "set aside" in line]
        assert len(set_aside) == 4 and not any(mended in line for line in set_aside)
        # the unmended one: its answer and its repair set aside, asked again (the reference patch), no repair needed
        assert jobs_run(retried).count("generate") == 1 and jobs_run(retried).count("repair") == 1
    folder = run / "instances" / unmended
    assert json.loads((folder / "repair.json").read_text())["status"] == "valid"
    assert json.loads((folder / "repair.json").read_text())["attempts"] == []
    (aside,) = folder.glob("response.failed-*.json")
    assert json.loads(aside.read_text())["answer"] == not_applying(rows[1])
    (record_aside,) = folder.glob("repair.failed-*.json")
    assert json.loads(record_aside.read_text())["status"] == "invalid"
    (requests_aside,) = [p for p in folder.glob("repair.failed-*") if p.is_dir()]
    assert sorted(p.name for p in requests_aside.glob("*.json")) == ["1.prompt.json", "1.response.json"]
    predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
    assert all(predictions.values())


@pytest.mark.workflow
def test_a_repair_job_that_fails_after_a_paid_reply_keeps_it_for_the_rerun(tmp_path):
    """The second repair request fails after the first was answered and paid: Snakemake deletes the job's
    outputs, but the rerun takes that paid reply instead of asking again, and ends as an uninterrupted run."""
    rows, url = fixture_repos.build(tmp_path / "repos")
    rows = rows[:1]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    broken = rows[0]["instance_id"]

    def config(server, run_id):
        return ["--config", f"dataset={dataset}", "provider=openai", "model=gpt-4o", f"base_url={server.url}/v1",
                "apply_check=true", f"repo_url={url}", f"repo_cache={tmp_path / 'cache'}", f"run_id={run_id}",
                "repair_attempts=2", "max_attempts=2", "retry_backoff=0.01", "context=none"]

    def first_repairs(server):  # the requests that carry the first repair request (system, user, answer, repair)
        return [r for r in server.requests_for(broken) if len(r["body"]["messages"]) == 4]

    env = {"OPENAI_API_KEY": "sk-test-key"}
    with FakeModelServer(rows) as server:
        # the answer and the first repair do not apply; the second repair request fails on the server twice
        server.answers[broken] = [not_applying(rows[0]), not_applying(rows[0])]
        server.faults[broken] = [None, None, "500", "500"]
        failed = snakemake(tmp_path, *config(server, "stopped"), env=env, check=False)
        assert failed.returncode != 0 and "self-repair could not ask the model" in failed.stdout + failed.stderr
        folder = tmp_path / "results" / "stopped" / "instances" / broken
        assert not (folder / "repair.json").exists() and not (folder / "repair" / "1.response.json").exists()
        assert len(first_repairs(server)) == 1

        snakemake(tmp_path, *config(server, "stopped"), env=env)  # the second repair request gets the reference patch
        assert len(first_repairs(server)) == 1  # the paid reply was not asked for again
        assert len(server.requests_for(broken)) == 5
    with FakeModelServer(rows) as server:  # the same answers, without the fault
        server.answers[broken] = [not_applying(rows[0]), not_applying(rows[0])]
        snakemake(tmp_path, *config(server, "whole"), env=env)
    whole = tmp_path / "results" / "whole" / "instances" / broken
    record = json.loads((folder / "repair.json").read_text())
    assert (record["status"], record["answer"]) == ("valid", "repair-2")
    assert record == json.loads((whole / "repair.json").read_text())
    for name in ("repair.diff", "repair/1.prompt.json", "repair/2.prompt.json"):
        assert (folder / name).read_bytes() == (whole / name).read_bytes()
    for number in (1, 2):
        stopped_reply = json.loads((folder / "repair" / f"{number}.response.json").read_text())
        whole_reply = json.loads((whole / "repair" / f"{number}.response.json").read_text())
        assert (stopped_reply["answer"], stopped_reply["usage"], stopped_reply["cost_usd"]) == (
            whole_reply["answer"], whole_reply["usage"], whole_reply["cost_usd"])
    # each paid reply is in the ledger once: the answer, the two repairs (and the failed attempts' worst cases)
    spent = [e for e in costs.read_ledger(tmp_path / "results" / "stopped" / "spend.jsonl") if e["state"] == "settled"]
    assert len(spent) == 3
    assert not [p for p in folder.iterdir() if p.name not in ("context.json", "prompt.json", "response.json",
                                                                  "patch.json", "patch.diff", "repair.json",
                                                                  "repair.diff", "repair")]

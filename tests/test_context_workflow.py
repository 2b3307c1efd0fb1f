"""The real snakemake with code context from repositories the tests build and serve by path."""
import json

import pyarrow
import pyarrow.parquet
import pytest
from unidiff import PatchSet

from scripts import repos

import fixture_repos
from conftest import assert_valid, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

pytestmark = pytest.mark.workflow

CHOSEN = ["acme__geometry-2", "acme__geometry-3", "acme__ledger-2", "acme__ledger-3"]


def chosen_rows(tmp_path):
    rows, url = fixture_repos.build(tmp_path / "repos")
    rows = [r for r in rows if r["instance_id"] in CHOSEN]
    return write_rows(tmp_path / "acme.jsonl", rows), rows, url


def patch_files(row):
    return [f.path for f in PatchSet(row["patch"])]


def test_bm25_and_oracle_contexts_in_a_real_run(tmp_path):
    dataset, rows, url = chosen_rows(tmp_path)
    cache = tmp_path / "cache"
    common = [f"dataset={dataset}", f"repo_url={url}", "run_id=acme"]
    first = snakemake(tmp_path, "--config", *common, "context=bm25", f"repo_cache={cache}")
    assert jobs_run(first).count("context") == 4
    run = tmp_path / "results" / "acme"
    for row in rows:
        folder = run / "instances" / row["instance_id"]
        record = json.loads((folder / "context.json").read_text())
        assert_valid(record, "context")
        assert record["strategy"] == "bm25" and record["files"][0]["path"] in patch_files(row)
        prompt = json.loads((folder / "prompt.json").read_text())
        assert f"[start of {record['files'][0]['path']}]\n1 " in prompt["messages"][-1]["content"]
        assert prompt["tokens"] <= 13000
    # The four jobs, two per repository, ran two at a time and shared one mirror per repository.
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [
        "acme__geometry.git", "acme__ledger.git"]
    predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
    assert predictions == {r["instance_id"]: r["patch"] for r in rows}

    # Where the mirrors live changes no context: nothing is redone.
    moved = snakemake(tmp_path, "--config", *common, "context=bm25", f"repo_cache={tmp_path / 'elsewhere'}")
    assert jobs_run(moved) == []

    oracle = snakemake(tmp_path, "--config", *common, "context=oracle", f"repo_cache={cache}")
    ran = jobs_run(oracle)
    assert ran.count("context") == 4 and ran.count("prompt") == 4 and "select" not in ran
    for row in rows:
        record = json.loads((run / "instances" / row["instance_id"] / "context.json").read_text())
        assert sorted(f["path"] for f in record["files"]) == sorted(patch_files(row))

    tight = snakemake(tmp_path, "--config", *common, "context=oracle", f"repo_cache={cache}", "context_tokens=700")
    assert jobs_run(tight).count("context") == 4
    for row in rows:
        record = json.loads((run / "instances" / row["instance_id"] / "context.json").read_text())
        prompt = json.loads((run / "instances" / row["instance_id"] / "prompt.json").read_text())
        assert record["tokens"]["total"] <= 700 - record["budget"]["template_reserve"] and prompt["tokens"] <= 700


def test_a_model_run_on_a_dataset_no_retrieval_set_holds_gets_bm25_by_default(tmp_path):
    dataset, rows, url = chosen_rows(tmp_path)
    with FakeModelServer(rows) as server:
        snakemake(tmp_path, "--config", f"dataset={dataset}", f"repo_url={url}", f"repo_cache={tmp_path / 'cache'}",
                  "provider=openai", "model=gpt-4o", f"base_url={server.url}/v1", "run_id=acme",
                  env={"OPENAI_API_KEY": "sk-test"})
        asked = {request["body"]["messages"][-1]["content"] for request in server.requests}
    run = tmp_path / "results" / "acme"
    for row in rows:
        record = json.loads((run / "instances" / row["instance_id"] / "context.json").read_text())
        assert record["strategy"] == "bm25" and record["budget"]["context_tokens"] == 13000
        assert record["files"][0]["path"] in patch_files(row)
        assert any(f"[start of {record['files'][0]['path']}]" in prompt for prompt in asked)
    assert json.loads((run / "run.json").read_text())["context"] == {"strategy": "bm25", "why": (
        f"context=auto: princeton-nlp/SWE-bench_bm25_13K does not hold dataset {dataset} split test; BM25 over the "
        "repository at base_commit, within 13,000 tokens")}


def test_retrieval_dataset_and_search_replace_answers(tmp_path):
    dataset, rows, url = chosen_rows(tmp_path)
    mirrors = tmp_path / "cache"
    # A stand-in for princeton-nlp/SWE-bench_bm25_13K: the README and the patch's files of each instance.
    records = []
    for row in rows:
        mirror, _ = repos.ensure_commit(mirrors, row["repo"], row["base_commit"], url)
        readme = next(p for p in repos.list_files(mirror, row["base_commit"]) if p.startswith("README"))
        files = repos.read_files(mirror, row["base_commit"], [readme, *patch_files(row)])
        records.append({"instance_id": row["instance_id"], "text": fixture_repos.retrieval_text(files)})
    retrieval = tmp_path / "bm25_13K.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(records), retrieval, row_group_size=2)
    answers = write_rows(tmp_path / "answers.jsonl", [
        {"instance_id": r["instance_id"], "full_output": "Here are the edits.\n\n" + fixture_repos.edit_blocks(r["patch"])}
        for r in rows])
    snakemake(tmp_path, "--config", f"dataset={dataset}", "context=bm25_13K", f"retrieval_dataset={retrieval}",
              "prompt_style=search_replace", "provider=replay", f"replay_file={answers}", "run_id=edits")
    run = tmp_path / "results" / "edits"
    assert sorted(json.loads((run / "retrieval.index.json").read_text())) == sorted(CHOSEN)
    predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
    for row in rows:
        folder = run / "instances" / row["instance_id"]
        record = json.loads((folder / "context.json").read_text())
        assert [f["path"] for f in record["files"]][0].startswith("README")
        assert json.loads((folder / "prompt.json").read_text())["template"] == "search_replace"
        verdict = json.loads((folder / "patch.json").read_text())
        assert (verdict["status"], verdict["source"]) == ("valid", "search_replace"), verdict["problems"]
        # The diff made from the edits changes the repository as the reference patch does.
        mirror, _ = repos.ensure_commit(mirrors, row["repo"], row["base_commit"], url)
        results = []
        for name, diff in (("gold", row["patch"]), ("edits", predictions[row["instance_id"]])):
            checkout = repos.checkout(mirror, row["base_commit"], tmp_path / "checkouts" / row["instance_id"] / name)
            (checkout.parent / f"{name}.diff").write_text(diff)
            fixture_repos.git(checkout, "init", "-q")
            fixture_repos.git(checkout, "apply", str(checkout.parent / f"{name}.diff"))
            results.append({p: (checkout / p).read_text() for p in patch_files(row)})
        assert results[0] == results[1]

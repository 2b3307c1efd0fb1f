"""The hub path through the real snakemake and the real datasets.load_dataset, against the loopback hub
(tests/fake_hub.py) serving the SWE-bench datasets as the hub publishes them."""
import json

import pyarrow
import pyarrow.parquet
import pytest
from fake_hub import DATA, FakeHub, parquet_repo, swe_bench_repos

from conftest import assert_valid, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

EXTRA_COLUMNS = ("image", "eval_script", "log_parser", "eval_type")


def hub_env(hub_url, cache, offline=False):
    """The environment of a run against the hub at hub_url with its own caches under cache."""
    env = {"HF_ENDPOINT": hub_url, "HF_HOME": str(cache / "hf"), "HF_DATASETS_CACHE": str(cache / "datasets"),
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    return {**env, "HF_HUB_OFFLINE": "1"} if offline else env


def hub_rows(folder, split):
    return pyarrow.parquet.read_table(DATA / folder / f"{split}.parquet").to_pylist()


def assert_gold_run(run, rows):
    """Every stage ran for rows and the predictions are their reference patches."""
    predictions = read_rows(run / "predictions.jsonl")
    assert sorted(p["instance_id"] for p in predictions) == sorted(r["instance_id"] for r in rows)
    reference = {r["instance_id"]: r["patch"] for r in rows}
    assert all(p["model_patch"] == reference[p["instance_id"]] for p in predictions)
    summary = json.loads((run / "summary.json").read_text())
    assert_valid(summary, "summary")
    assert summary["counts"]["patch"]["valid"] == len(rows)
    for row in rows:
        folder = run / "instances" / row["instance_id"]
        for name in ("context", "prompt", "response"):
            assert_valid(json.loads((folder / f"{name}.json").read_text()), name)


@pytest.mark.workflow
def test_lite_from_the_hub_then_offline_from_the_cache(tmp_path):
    rows = hub_rows("SWE-bench_Lite", "dev")[:3]
    config = ["--config", "dataset=lite", "split=dev", "count=3"]
    with FakeHub() as hub:
        snakemake(tmp_path / "online", *config, env=hub_env(hub.url, tmp_path))
        # Only the dev split's file, not the test split's.
        assert sorted(hub.downloads) == [("SWE-bench/SWE-bench_Lite", "README.md"),
                                         ("SWE-bench/SWE-bench_Lite", "data/dev-00000-of-00001.parquet")]
        url = hub.url
    assert_gold_run(tmp_path / "online" / "results" / "gold", rows)
    selected = read_rows(tmp_path / "online" / "results" / "gold" / "instances.jsonl")
    assert selected == rows  # the extra columns of the hub's rows kept as they are
    # The hub is gone: offline, the run reads the cache; a split it never downloaded is named.
    snakemake(tmp_path / "offline", *config, env=hub_env(url, tmp_path, offline=True))
    assert_gold_run(tmp_path / "offline" / "results" / "gold", rows)
    result = snakemake(tmp_path / "offline2", "--config", "dataset=lite", "split=test", "count=1",
                       env=hub_env(url, tmp_path, offline=True), check=False)
    assert result.returncode != 0
    assert "split 'test' of dataset 'SWE-bench/SWE-bench_Lite' is not in the hub cache (it holds: dev)" in result.stderr
    assert jobs_run(result) == []


@pytest.mark.workflow
@pytest.mark.parametrize("dataset, folder, split, extra", [
    ("verified", "SWE-bench_Verified", "test", ("difficulty",)),
    ("multilingual", "SWE-bench_Multilingual", "test", ()),
    ("multimodal", "SWE-bench_Multimodal", "dev", ("image_assets",)),
])
def test_rows_with_the_hubs_extra_columns_go_through_every_stage(tmp_path, dataset, folder, split, extra):
    rows = hub_rows(folder, split)
    # Rows of two repositories (two languages for Multilingual)
    chosen = [rows[0], next(r for r in rows if r["repo"] != rows[0]["repo"])]
    ids = ",".join(r["instance_id"] for r in chosen)
    with FakeHub() as hub:
        snakemake(tmp_path, "--config", f"dataset={dataset}", f"split={split}", f"instances={ids}",
                  env=hub_env(hub.url, tmp_path))
        assert [path for _, path in hub.downloads] == ["README.md", f"data/{split}-00000-of-00001.parquet"]
    run = tmp_path / "results" / "gold"
    assert_gold_run(run, chosen)
    selected = {r["instance_id"]: r for r in read_rows(run / "instances.jsonl")}
    for row in chosen:
        assert all(selected[row["instance_id"]][column] == row[column] for column in EXTRA_COLUMNS + extra)


@pytest.mark.workflow
def test_unknown_dataset_revision_and_split_are_named(tmp_path):
    with FakeHub() as hub:
        env = hub_env(hub.url, tmp_path)
        result = snakemake(tmp_path, "--config", "dataset=SWE-bench/SWE-bench_Nope", env=env, check=False)
        assert result.returncode != 0
        assert "could not load dataset 'SWE-bench/SWE-bench_Nope' split 'test'" in result.stderr
        assert "doesn't exist on the Hub" in result.stderr
        result = snakemake(tmp_path, "--config", "dataset=lite", "split=train", env=env, check=False)
        assert "dataset 'SWE-bench/SWE-bench_Lite' has no split 'train'; it has: dev, test" in result.stderr
        assert jobs_run(result) == []
        assert not hub.downloads or all(path == "README.md" for _, path in hub.downloads)


@pytest.mark.unit
def test_the_hub_rejects_what_it_does_not_hold(tmp_path, monkeypatch):
    """The loopback hub answers as the hub does, so the client raises its own errors."""
    import huggingface_hub

    with FakeHub() as hub:
        api = huggingface_hub.HfApi(endpoint=hub.url)
        assert api.dataset_info("SWE-bench/SWE-bench_Lite").sha == hub.sha("SWE-bench/SWE-bench_Lite")
        with pytest.raises(huggingface_hub.errors.RepositoryNotFoundError):
            api.dataset_info("SWE-bench/none")
        with pytest.raises(huggingface_hub.errors.RevisionNotFoundError):
            api.dataset_info("SWE-bench/SWE-bench_Lite", revision="v9")
        with pytest.raises(huggingface_hub.errors.EntryNotFoundError):
            huggingface_hub.hf_hub_download("SWE-bench/SWE-bench_Lite", "data/none.parquet", repo_type="dataset",
                                            endpoint=hub.url, cache_dir=tmp_path)
        path = huggingface_hub.hf_hub_download("SWE-bench/SWE-bench_Lite", "data/dev-00000-of-00001.parquet",
                                               repo_type="dataset", endpoint=hub.url, cache_dir=tmp_path)
        assert open(path, "rb").read() == (DATA / "SWE-bench_Lite" / "dev.parquet").read_bytes()


def retrieval_split(path, ids, files):
    """A retrieval set's split as princeton-nlp/SWE-bench_bm25_13K has it: instance_id and text."""
    code = "".join(f"[start of {name}]\n1 {content}\n[end of {name}]\n" for name, content in files.items())
    texts = [f"<issue>\n...\n</issue>\n<code>\n{code}</code>\n" for _ in ids]
    pyarrow.parquet.write_table(pyarrow.table({"instance_id": ids, "text": texts}), path)
    return path


@pytest.mark.workflow
def test_retrieval_set_downloads_only_the_split_the_run_needs(tmp_path):
    rows = hub_rows("SWE-bench_Lite", "dev")[:2]
    ids = [r["instance_id"] for r in rows]
    splits = {"train": ["a__a-1", "b__b-2"], "dev": ids, "test": ["c__c-3"], "validation": ["d__d-4"]}
    files = {split: retrieval_split(tmp_path / f"{split}.parquet", names, {"src/app.py": f"# {split}"})
             for split, names in splits.items()}
    repos = {**swe_bench_repos(), "princeton-nlp/SWE-bench_bm25_13K": parquet_repo(files, "bm25")}
    with FakeHub(repos) as hub:
        snakemake(tmp_path / "work", "--config", "dataset=lite", "split=dev", f"instances={','.join(ids)}",
                  "context=bm25_13K", env=hub_env(hub.url, tmp_path))
        retrieval = sorted(path for repo, path in hub.downloads if repo == "princeton-nlp/SWE-bench_bm25_13K")
        assert retrieval == ["README.md", "data/dev-00000-of-00001.parquet"]
    run = tmp_path / "work" / "results" / "gold"
    for instance_id in ids:
        context = json.loads((run / "instances" / instance_id / "context.json").read_text())
        assert [(f["path"], f["content"]) for f in context["files"]] == [("src/app.py", "# dev")]


@pytest.mark.workflow
def test_a_model_run_s_default_context_is_swe_bench_s_bm25_13K_and_gold_s_is_none(tmp_path):
    rows = hub_rows("SWE-bench_Lite", "dev")[:2]
    ids = [r["instance_id"] for r in rows]
    files = {"dev": retrieval_split(tmp_path / "dev.parquet", ids, {"src/app.py": "def app(): pass"})}
    repos = {**swe_bench_repos(), "princeton-nlp/SWE-bench_bm25_13K": parquet_repo(files, "bm25")}
    config = ["--config", "dataset=lite", "split=dev", f"instances={','.join(ids)}"]
    with FakeHub(repos) as hub, FakeModelServer(rows) as server:
        env = {**hub_env(hub.url, tmp_path), "OPENAI_API_KEY": "sk-test"}
        # no context setting: the model is shown the retrieval set's files
        result = snakemake(tmp_path, *config, "provider=openai", "model=gpt-4o", f"base_url={server.url}/v1", env=env)
        assert ("princeton-nlp/SWE-bench_bm25_13K", "data/dev-00000-of-00001.parquet") in hub.downloads
        asked = [request["body"]["messages"][-1]["content"] for request in server.requests]
        snakemake(tmp_path, *config, env=env)  # gold
    assert len(asked) == 2 and all("[start of src/app.py]\n1 def app(): pass" in prompt for prompt in asked)
    why = ("context=auto: SWE-bench's own baseline, princeton-nlp/SWE-bench_bm25_13K, holds split dev of "
           "SWE-bench/SWE-bench_Lite")
    run = tmp_path / "results" / "openai-gpt-4o"
    for instance_id in ids:
        context = json.loads((run / "instances" / instance_id / "context.json").read_text())
        assert context["strategy"] == "bm25_13K" and [f["path"] for f in context["files"]] == ["src/app.py"]
    # the choice and its reason are recorded: run.json, the summary, the answers' settings
    info = json.loads((run / "run.json").read_text())
    assert_valid(info, "run")
    assert info["context"] == {"strategy": "bm25_13K", "why": why}
    summary = json.loads((run / "summary.json").read_text())
    assert_valid(summary, "summary")
    assert (summary["context"], summary["context_why"]) == ("bm25_13K", why)
    assert f"- context bm25_13K: {why}\n" in (run / "summary.md").read_text()
    assert json.loads((run / "answer_settings.json").read_text())["context"] == "bm25_13K"
    # the estimate says what the code costs: its tokens in each prompt and their share of the input's cost
    estimate = json.loads((run / "estimate.json").read_text())
    code = sum(json.loads((run / "instances" / i / "context.json").read_text())["tokens"]["files"] for i in ids)
    assert estimate["context_tokens"] == code > 0 and 0 < estimate["context_usd"] < estimate["input_usd"]
    assert (f"The code context: {round(code / 2):,} of {round(estimate['prompt_tokens'] / 2):,} input tokens per "
            f"answer, {estimate['context_usd']:.2f} of {estimate['input_usd']:.2f} USD.") in result.stdout + result.stderr
    # gold shows no code: its answer is the reference patch
    gold = tmp_path / "results" / "gold"
    assert json.loads((gold / "run.json").read_text())["context"] == {
        "strategy": "none", "why": "context=auto: provider gold asks no model"}
    assert all(json.loads((gold / "instances" / i / "context.json").read_text())["strategy"] == "none" for i in ids)


@pytest.mark.workflow
@pytest.mark.docker
def test_docker_evaluation_of_rows_the_harness_has_no_specifications_for_stops_after_select(tmp_path):
    rows = hub_rows("SWE-bench_Lite", "dev")[:3]
    rows[1] = {**rows[1], "repo": "example/unknown"}
    rows[2] = {**rows[2], "version": "99.9"}
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    result = snakemake(tmp_path, "--config", f"dataset={dataset}", "evaluation=docker", "min_free_disk_gb=0",
                       check=False)
    assert result.returncode != 0
    assert (f"the SWE-bench harness (swebench 4.1.0) has no specifications for 2 selected instance(s), so it cannot "
            f"evaluate them: {rows[1]['instance_id']} (example/unknown {rows[1]['version']}), "
            f"{rows[2]['instance_id']} ({rows[2]['repo']} 99.9)") in result.stderr
    assert jobs_run(result) == ["select"]  # no instance's job ran
    assert not (tmp_path / "results" / "gold" / "instances").exists()
    # The same rows with evaluation=none go on.
    snakemake(tmp_path, "--config", f"dataset={dataset}", "count=1")

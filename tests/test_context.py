"""Context strategies, token budgets and prompt styles, on repositories the tests build."""
import json
import os
import subprocess
import sys

import pyarrow
import pyarrow.parquet
import pytest
from unidiff import PatchSet

from scripts import common, context, prompt, repos, select
from scripts.tokens import count_tokens, describe, tokenizer_of

import fixture_repos
from conftest import PROJECT, assert_valid
from fixture_repos import commit_files, git, retrieval_text

pytestmark = pytest.mark.unit

SEARCH_REPLACE = PROJECT / "scripts" / "templates" / "search_replace.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("repos")
    rows, url = fixture_repos.build(root)
    return {r["instance_id"]: r for r in rows}, {"repo_cache": str(root / "cache"), "repo_url": url}


def patch_files(row):
    return [f.path for f in PatchSet(row["patch"])]


def block_tokens(entry):
    return count_tokens(prompt.render_file(entry) + "\n")


# ---------------------------------------------------------------- tokens

def test_token_counters():
    assert count_tokens("hello world") == 2  # cl100k_base: "hello", " world"
    assert count_tokens("hello world", "estimate") == 3
    assert count_tokens("", "estimate") == 0
    assert count_tokens("<|endoftext|>") > 1  # special tokens in code are plain text
    assert tokenizer_of(describe("cl100k_base")) == "cl100k_base"
    assert tokenizer_of("estimate: 1 token per 4 characters") == "estimate"
    assert tokenizer_of("something else") == "estimate"


def test_code_terms_split_identifiers():
    terms = context.code_terms("The HTTPServer calls get_scores() on a Vector2 in 2 ways")
    assert terms == ["httpserver", "http", "server", "calls", "get_scores", "get", "scores", "vector2", "vector",
                     "ways"]


# ---------------------------------------------------------------- strategies

def test_bm25_ranks_the_file_of_the_reference_patch_first(built):
    rows, repo_settings = built
    for row in rows.values():
        record = context.build_context(row, "bm25", repo_settings)
        assert_valid(record, "context")
        assert record["files"][0]["path"] in patch_files(row), row["instance_id"]
        assert [f["rank"] for f in record["files"]] == list(range(1, len(record["files"]) + 1))
        scores = [f["score"] for f in record["files"]]
        assert scores == sorted(scores, reverse=True) and scores[-1] > 0
        assert not any(context.is_test_path(f["path"]) for f in record["files"])
        assert record["token_counter"] == "tiktoken cl100k_base"
        assert record["budget"] == {"context_tokens": 13000, "template_reserve": context.TEMPLATE_RESERVE,
                                    "files": 13000 - record["tokens"]["problem_statement"] - context.TEMPLATE_RESERVE}
        assert "bm25 rank 1 of" in record["files"][0]["reason"]


def test_oracle_shows_the_files_the_patch_edits(built):
    rows, repo_settings = built
    row = rows["acme__ledger-3"]
    record = context.build_context(row, "oracle", repo_settings)
    assert_valid(record, "context")
    assert sorted(f["path"] for f in record["files"]) == sorted(patch_files(row)) == ["ledger/accounts.py",
                                                                                     "ledger/money.py"]
    assert "upper bound" in record["source"] and all("upper bound" in f["reason"] for f in record["files"])
    assert record["budget"]["context_tokens"] is None  # SWE-bench's oracle files are whole
    money = next(f for f in record["files"] if f["path"] == "ledger/money.py")
    assert money["content"] == (fixture_repos.LEDGER["ledger/money.py"]) and not money["truncated"]
    assert money["tokens"] == block_tokens(money)


def test_oracle_needs_the_reference_patch(built):
    rows, repo_settings = built
    row = dict(rows["acme__ledger-3"], patch="")
    with pytest.raises(context.ContextError, match="context=oracle needs the reference patch"):
        context.build_context(row, "oracle", repo_settings)


@pytest.mark.parametrize("strategy", ["bm25", "oracle"])
@pytest.mark.parametrize("context_tokens", [700, 900, 1200, 3000])
def test_budgets_are_never_exceeded(built, strategy, context_tokens):
    rows, repo_settings = built
    for row in rows.values():
        record = context.build_context(row, strategy, {**repo_settings, "context_tokens": context_tokens})
        budget = record["budget"]["files"]
        assert record["tokens"]["files"] <= budget
        assert record["tokens"]["total"] <= context_tokens - context.TEMPLATE_RESERVE
        for entry in record["files"]:
            assert entry["tokens"] == block_tokens(entry)
        for template in (prompt.DEFAULT_TEMPLATE, SEARCH_REPLACE):
            built_prompt = prompt.build_prompt(record, prompt.load_template(template))
            assert built_prompt["tokens"] <= context_tokens
            assert "dropped_files" not in built_prompt  # the reserve is enough for the built-in templates


def test_whole_files_first_then_the_part_nearest_the_best_match(built):
    rows, repo_settings = built
    row = rows["acme__geometry-2"]
    whole = context.build_context(row, "bm25", repo_settings)
    first = whole["files"][0]
    # Room for the first file and a part of the second.
    limit = whole["tokens"]["problem_statement"] + context.TEMPLATE_RESERVE + first["tokens"] + 40
    record = context.build_context(row, "bm25", {**repo_settings, "context_tokens": limit})
    assert [f["path"] for f in record["files"]] == [f["path"] for f in whole["files"][:2]]
    assert not record["files"][0]["truncated"] and record["files"][1]["truncated"]
    assert "lines " in record["files"][1]["reason"]


@pytest.fixture(scope="module")
def big_file_repo(tmp_path_factory):
    """A repository with one long module (1,205 lines) whose bug sits in the middle, and two short ones."""
    root = tmp_path_factory.mktemp("big")
    functions = [f"def helper_{n}(value):\n    \"\"\"Helper number {n}.\"\"\"\n    return value + {n}\n\n\n"
                 for n in range(240)]
    bug = "def parse_duration(text):\n    hours, minutes = text.split(':')\n    return int(hours) * 60 - int(minutes)\n\n\n"
    module = "".join(functions[:120]) + bug + "".join(functions[120:])
    path = root / "src" / "acme" / "clock"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    base = commit_files(path, {"clock/durations.py": module, "clock/__init__.py": "",
                               "clock/format.py": "def fmt(minutes):\n    return f'{minutes // 60}:{minutes % 60:02d}'\n"},
                        "clock")
    bug_line = module.split("\n").index("    return int(hours) * 60 - int(minutes)") + 1
    patch = fixture_repos.reference_patch(path, {"clock/durations.py": ("int(hours) * 60 - int(minutes)",
                                                                        "int(hours) * 60 + int(minutes)")})
    row = {"instance_id": "acme__clock-1", "repo": "acme/clock", "base_commit": base, "patch": patch,
           "problem_statement": "parse_duration('1:30') returns 30 minutes instead of 90: the minutes are "
                                "subtracted from the hours."}
    return row, bug_line, {"repo_cache": str(root / "cache"), "repo_url": f"{root}/src/{{repo}}"}


@pytest.mark.parametrize("strategy", ["bm25", "oracle"])
def test_truncation_keeps_the_relevant_lines(big_file_repo, strategy):
    row, bug_line, repo_settings = big_file_repo
    limit = count_tokens(row["problem_statement"].strip()) + context.TEMPLATE_RESERVE + 600
    record = context.build_context(row, strategy, {**repo_settings, "context_tokens": limit})
    assert_valid(record, "context")
    [entry] = record["files"]
    assert entry["path"] == "clock/durations.py" and entry["truncated"]
    assert 1 < entry["first_line"] < bug_line < entry["first_line"] + len(entry["content"].splitlines())
    assert entry["file_lines"] == 1205
    assert entry["tokens"] <= record["budget"]["files"] and entry["tokens"] > record["budget"]["files"] - 30
    # The prompt numbers the lines as the file does.
    user = prompt.build_prompt(record, prompt.load_template(prompt.DEFAULT_TEMPLATE))["messages"][-1]["content"]
    assert f"\n{bug_line} {'    return int(hours) * 60 - int(minutes)'}\n" in user
    assert prompt.build_prompt(record, prompt.load_template(prompt.DEFAULT_TEMPLATE))["tokens"] <= limit


def test_a_file_too_big_for_any_line_is_left_out(big_file_repo):
    row, _, repo_settings = big_file_repo
    limit = count_tokens(row["problem_statement"].strip()) + context.TEMPLATE_RESERVE + 5
    record = context.build_context(row, "bm25", {**repo_settings, "context_tokens": limit})
    assert record["files"] == [] and record["candidates"] >= 1


def test_fetch_errors_stop_the_context_job(tmp_path, built):
    rows, repo_settings = built
    row = dict(rows["acme__geometry-1"], base_commit="0" * 40)
    rows_path, index_path = tmp_path / "instances.jsonl", tmp_path / "index.json"
    select.write_selection([row], rows_path, index_path)
    out = tmp_path / "context.json"
    settings = {"context_tokens": None, "tokenizer": "cl100k_base", **repo_settings}
    with pytest.raises(repos.RepoError, match=r"commit 0{40} of acme/geometry is not in"):
        context.run(row["instance_id"], {"instances": rows_path, "index": index_path}, "bm25", settings, out)
    assert not out.exists()


# ---------------------------------------------------------------- retrieval datasets

def test_retrieval_text_parses_back_to_the_files():
    files = {"README.md": "# tool\n\nA tool.\n", "pkg/a.py": "def a():\n    return 1\n", "pkg/b.py": "x = 1"}
    parsed = select.parse_retrieval_text(retrieval_text(files))
    assert parsed == [{"path": p, "content": c} for p, c in files.items()]
    assert select.parse_retrieval_text("no code here") is None


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_select_hands_each_instance_its_retrieval_files(tmp_path, built, suffix):
    rows, _ = built
    texts = {i: retrieval_text({"README.md": f"readme of {i}\n", f"{i}.py": f"ID = {i!r}\n"}) for i in rows}
    texts["other__repo-1"] = retrieval_text({"o.py": "o = 1\n"})
    source = tmp_path / f"bm25_13K{suffix}"
    records = [{"instance_id": i, "text": t} for i, t in texts.items()]
    if suffix == ".parquet":
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(records), source, row_group_size=3)
    else:
        source.write_text("".join(json.dumps(r) + "\n" for r in records))
    chosen = ["acme__ledger-2", "acme__geometry-1"]
    out, index = tmp_path / "retrieval.jsonl", tmp_path / "retrieval.index.json"
    select.write_retrieval(str(source), "test", chosen, out, index)
    assert sorted(json.loads(index.read_text())) == sorted(chosen)
    row = rows["acme__ledger-2"]
    handed = common.read_row(out, index, row["instance_id"])
    assert handed["source"] == str(source)
    record = context.build_context(row, "bm25_13K", {"retrieval": handed})
    assert_valid(record, "context")
    assert [(f["path"], f["content"], f["rank"]) for f in record["files"]] == [
        ("README.md", "readme of acme__ledger-2\n", 1), ("acme__ledger-2.py", "ID = 'acme__ledger-2'\n", 2)]
    assert record["budget"]["context_tokens"] == 13000
    with pytest.raises(select.SelectionError, match=r"1 selected instance\(s\) are not in the retrieval dataset .*: nope-1"):
        select.write_retrieval(str(source), "test", ["acme__ledger-2", "nope-1"], tmp_path / "r2.jsonl",
                               tmp_path / "r2.index.json")
    assert not (tmp_path / "r2.jsonl").exists()


def test_retrieval_text_without_code_is_an_error(tmp_path):
    source = tmp_path / "broken.jsonl"
    source.write_text(json.dumps({"instance_id": "a-1", "text": "just a question"}) + "\n")
    with pytest.raises(select.SelectionError, match="the text of a-1 has no <code> part"):
        select.write_retrieval(str(source), "test", ["a-1"], tmp_path / "r.jsonl", tmp_path / "r.index.json")


# ---------------------------------------------------------------- prompt styles

def test_search_replace_style_shows_plain_code(built):
    rows, repo_settings = built
    record = context.build_context(rows["acme__textkit-2"], "oracle", repo_settings)
    built_prompt = prompt.build_prompt(record, prompt.load_template(SEARCH_REPLACE))
    assert_valid(built_prompt, "prompt")
    user = built_prompt["messages"][-1]["content"]
    assert built_prompt["template"] == "search_replace"
    assert "[start of textkit/wrap.py]\n\"\"\"Wrap paragraphs to a given width.\"\"\"\n" in user
    assert "<<<<<<< SEARCH" in user and ">>>>>>> REPLACE" in user
    style3 = prompt.build_prompt(record, prompt.load_template(prompt.DEFAULT_TEMPLATE))["messages"][-1]["content"]
    assert "[start of textkit/wrap.py]\n1 \"\"\"Wrap paragraphs to a given width.\"\"\"\n" in style3


def test_a_long_user_template_drops_the_lowest_ranked_files(tmp_path, built):
    rows, repo_settings = built
    record = context.build_context(rows["acme__geometry-3"], "bm25", {**repo_settings, "context_tokens": 1500})
    assert len(record["files"]) >= 2
    template = tmp_path / "long.yaml"
    template.write_text("user: |\n  " + "Please be careful. " * 150 + "\n  $problem_statement\n  $code\n")
    built_prompt = prompt.build_prompt(record, prompt.load_template(template))
    assert built_prompt["tokens"] <= 1500
    kept = [f["path"] for f in record["files"] if f"[start of {f['path']}]" in built_prompt["messages"][0]["content"]]
    assert kept + built_prompt["dropped_files"] == [f["path"] for f in record["files"]]
    assert built_prompt["dropped_files"]


def test_select_cli_reads_a_retrieval_dataset_through_datasets(tmp_path, built):
    # A folder of parquet files goes through datasets.load_dataset, as a hub name does, and is
    # memory-mapped from the cache that it builds.
    rows, _ = built
    chosen = [rows["acme__textkit-1"], rows["acme__ledger-2"]]
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    folder = tmp_path / "bm25_set" / "data"
    folder.mkdir(parents=True)
    records = [{"instance_id": i, "text": retrieval_text({f"{i}.py": "x = 1\n"})} for i in rows]
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(records), folder / "test-00000-of-00001.parquet")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}

    def run_select(source):
        return subprocess.run(
            [sys.executable, "-m", "scripts.select", "--dataset", str(dataset), "--retrieval", source,
             "--retrieval-out", str(tmp_path / "r.jsonl"), "--retrieval-index", str(tmp_path / "r.index.json"),
             "--out", str(tmp_path / "i.jsonl"), "--index", str(tmp_path / "i.index.json")],
            cwd=PROJECT, env=env, capture_output=True, text=True)

    result = run_select(str(tmp_path / "bm25_set"))
    assert result.returncode == 0, result.stderr
    handed = common.read_row(tmp_path / "r.jsonl", tmp_path / "r.index.json", "acme__ledger-2")
    assert handed["files"] == [{"path": "acme__ledger-2.py", "content": "x = 1\n"}]
    assert sorted(json.loads((tmp_path / "r.index.json").read_text())) == ["acme__ledger-2", "acme__textkit-1"]
    offline = run_select("princeton-nlp/SWE-bench_bm25_13K")
    assert offline.returncode == 1
    assert "select: could not load retrieval dataset 'princeton-nlp/SWE-bench_bm25_13K'" in offline.stderr


def test_none_context_is_the_issue_alone(lite_rows):
    row = lite_rows[0]
    record = context.build_context(row, "none")
    assert_valid(record, "context")
    assert record["files"] == []
    assert record["problem_statement"] == row["problem_statement"]
    assert record["tokens"]["total"] == record["tokens"]["problem_statement"] == context.count_tokens(row["problem_statement"])


def test_count_tokens_estimate():
    assert context.count_tokens("", "estimate") == 0
    assert context.count_tokens("abcd", "estimate") == 1
    assert context.count_tokens("abcde", "estimate") == 2
    record = context.build_context({"instance_id": "a-1", "repo": "a/b", "base_commit": "c", "problem_statement": "abcde"},
                                   "none", {"tokenizer": "estimate"})
    assert record["token_counter"] == "estimate: 1 token per 4 characters"
    assert record["tokens"]["total"] == 2

import json
import subprocess

import pytest

from scripts import context, prompt

from conftest import assert_valid

pytestmark = pytest.mark.unit


@pytest.fixture
def row(lite_rows):
    return lite_rows[0]


def test_default_prompt_holds_issue_and_asks_for_a_diff(row):
    record = prompt.build_prompt(context.build_context(row, "none"), prompt.load_template(prompt.DEFAULT_TEMPLATE))
    assert_valid(record, "prompt")
    assert record["template"] == "style3"
    assert [m["role"] for m in record["messages"]] == ["system", "user"]
    user = record["messages"][1]["content"]
    assert row["problem_statement"].strip() in user
    assert row["repo"] in user
    assert "<patch>" in user and "git apply" in user
    assert record["tokens"] == sum(context.count_tokens(m["content"]) for m in record["messages"])


def test_code_is_line_numbered_between_markers(row):
    ctx = context.build_context(row, "none")
    ctx["files"] = [{"path": "pkg/mod.py", "content": "a = 1\nb = 2\n", "tokens": 3, "first_line": 10}]
    user = prompt.build_prompt(ctx, prompt.load_template(prompt.DEFAULT_TEMPLATE))["messages"][-1]["content"]
    assert "[start of pkg/mod.py]\n10 a = 1\n11 b = 2\n[end of pkg/mod.py]" in user
    assert prompt.NO_CODE not in user


def test_example_patch_of_default_template_applies(tmp_path):
    # The example the prompt shows must itself be a diff that git apply accepts.
    user = prompt.load_template(prompt.DEFAULT_TEMPLATE)["user"]
    example = user[user.index("<patch>\n") + 8:user.index("</patch>")]
    repo = tmp_path / "repo"
    (repo / "geometry").mkdir(parents=True)
    (repo / "geometry" / "shapes.py").write_text(
        "class Circle:\n    def __init__(self, radius):\n        self.radius = radius\n\n"
        "    def area(self):\n        return 3.14 * self.radius * self.radius\n\n    def describe(self):\n"
        "        return 'circle'\n"
    )
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (tmp_path / "example.diff").write_text(example)
    subprocess.run(["git", "apply", "--check", str(tmp_path / "example.diff")], cwd=repo, check=True)


def test_user_template(tmp_path, row):
    template = tmp_path / "mine.yaml"
    template.write_text("user: 'Fix $instance_id in $repo for $$5:\n\n  $problem_statement'\n")
    record = prompt.build_prompt(context.build_context(row, "none"), prompt.load_template(template))
    assert record["template"] == "mine"
    assert [m["role"] for m in record["messages"]] == ["user"]
    assert record["messages"][0]["content"].startswith(f"Fix {row['instance_id']} in {row['repo']} for $5:")


@pytest.mark.parametrize("text, message", [
    ("user: 'Hello $nobody'\n", "unknown or malformed placeholder"),
    ("system: only a system\n", "must be a YAML mapping with a `user` string"),
    ("user: [unclosed\n", "cannot be read"),
])
def test_bad_templates_are_explained(tmp_path, row, text, message):
    template = tmp_path / "bad.yaml"
    template.write_text(text)
    with pytest.raises(prompt.TemplateError, match=message):
        prompt.build_prompt(context.build_context(row, "none"), prompt.load_template(template))


def test_stages_write_context_and_prompt(tmp_path, lite_rows):
    from scripts.select import write_selection

    rows_path, index_path = tmp_path / "instances.jsonl", tmp_path / "index.json"
    write_selection(lite_rows[:3], rows_path, index_path)
    instance_id = lite_rows[1]["instance_id"]
    context_path, prompt_path = tmp_path / "context.json", tmp_path / "prompt.json"
    settings = {"context_tokens": None, "tokenizer": "cl100k_base", "repo_cache": None, "repo_url": None}
    context.run(instance_id, {"instances": rows_path, "index": index_path}, "none", settings, context_path)
    prompt.run(context_path, prompt.DEFAULT_TEMPLATE, prompt_path)
    assert json.loads(context_path.read_text())["instance_id"] == instance_id
    assert lite_rows[1]["problem_statement"].strip() in json.loads(prompt_path.read_text())["messages"][1]["content"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("user: $nope\n")
    with pytest.raises(prompt.TemplateError, match="prompt template bad"):
        prompt.run(context_path, bad, tmp_path / "p2.json")
    assert not (tmp_path / "p2.json").exists()


def test_the_stages_as_their_rules_call_them(tmp_path, lite_rows):
    from scripts.select import write_selection

    rows_path, index_path = tmp_path / "instances.jsonl", tmp_path / "index.json"
    write_selection(lite_rows[:3], rows_path, index_path)
    instance_id = lite_rows[2]["instance_id"]
    context_path, prompt_path, log = tmp_path / "context.json", tmp_path / "prompt.json", tmp_path / "stage.log"
    settings = {"strategy": "none", "context_tokens": None, "tokenizer": "cl100k_base", "repo_cache": None,
                "repo_url": None}
    context.run_stage(instance_id, {"instances": rows_path, "index": index_path}, [context_path], log, settings)
    prompt.run_stage(instance_id, {"context": context_path, "template": prompt.DEFAULT_TEMPLATE}, [prompt_path], log)
    assert_valid(json.loads(context_path.read_text()), "context")
    record = json.loads(prompt_path.read_text())
    assert_valid(record, "prompt")
    assert record["instance_id"] == instance_id and record["template"] == "style3"
    assert log.read_text().splitlines()[0].startswith(f"context: {instance_id}: ")

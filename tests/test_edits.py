"""Search/replace edit blocks turned into unified diffs by the patch stage, checked with git apply."""
import json
import subprocess

import jsonschema
import pytest

from scripts import context, patch
from scripts.edits import find_edits

import fixture_repos
from conftest import PROJECT

pytestmark = pytest.mark.unit

SCHEMA = json.loads((PROJECT / "schemas" / "patch.schema.json").read_text())
SHAPES = fixture_repos.GEOMETRY["geometry/shapes.py"]


def response(answer):
    return {"instance_id": "acme__geometry-1", "status": "ok", "failure_reason": None, "answer": answer}


def context_of(files):
    """A context record holding files {path: content} or {path: (content, first_line)}."""
    entries = []
    for path, value in files.items():
        content, first_line = value if isinstance(value, tuple) else (value, 1)
        entries.append({"path": path, "content": content, "tokens": 1, "first_line": first_line})
    return {"files": entries}


def applies(tmp_path, files, diff):
    """The files after `git apply` of diff in a repository holding files; fails if it does not apply."""
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    fixture_repos.git(repo, "init", "-q")
    for path, content in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(content)
    (tmp_path / "fix.diff").write_text(diff)
    subprocess.run(["git", "apply", str(tmp_path / "fix.diff")], cwd=repo, check=True, capture_output=True)
    return {p.relative_to(repo).as_posix(): p.read_text() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}


def test_edit_blocks_are_found_in_prose_fences_and_bold_paths():
    answer = (
        "The perimeter is wrong.\n\n```python\ngeometry/shapes.py\n<<<<<<< SEARCH\n    def perimeter(self):\n"
        "        return math.pi * self.radius\n=======\n    def perimeter(self):\n        return 2 * math.pi * self.radius\n"
        ">>>>>>> REPLACE\n```\n\n**`geometry/units.py`**:\n<<<<<<< SEARCH\n=======\nx = 1\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n"
    )
    edits, problems = find_edits(answer)
    assert problems == []
    assert [(path, len(search), len(replace)) for path, search, replace in edits] == [
        ("geometry/shapes.py", 2, 2), ("geometry/units.py", 0, 1), ("geometry/units.py", 1, 1)]


def test_edits_become_a_diff_that_git_applies(tmp_path):
    answer = (
        "geometry/shapes.py\n<<<<<<< SEARCH\n    def perimeter(self):\n        return math.pi * self.radius\n=======\n"
        "    def perimeter(self):\n        return 2 * math.pi * self.radius\n>>>>>>> REPLACE\n\n"
        "geometry/shapes.py\n<<<<<<< SEARCH\nimport math\n=======\nimport math\nimport numbers\n>>>>>>> REPLACE\n"
        "geometry/new.py\n<<<<<<< SEARCH\n=======\nNEW = True\n>>>>>>> REPLACE\n"
    )
    text, record = patch.make_patch(response(answer), context_of({"geometry/shapes.py": SHAPES}))
    jsonschema.validate(record, SCHEMA)
    assert (record["status"], record["source"], record["files"]) == ("valid", "search_replace",
                                                                     ["geometry/shapes.py", "geometry/new.py"])
    after = applies(tmp_path, {"geometry/shapes.py": SHAPES}, text)
    assert after["geometry/shapes.py"] == SHAPES.replace("return math.pi * self.radius\n",
                                                         "return 2 * math.pi * self.radius\n").replace(
        "import math\n", "import math\nimport numbers\n")
    assert after["geometry/new.py"] == "NEW = True\n"


def test_edits_on_an_excerpt_are_numbered_as_in_the_file(tmp_path):
    lines = SHAPES.split("\n")
    first_line = 20  # the context holds lines 20-30 only
    excerpt = "\n".join(lines[first_line - 1:30]) + "\n"
    assert "return math.pi * self.radius\n" in excerpt
    answer = ("geometry/shapes.py\n<<<<<<< SEARCH\n        return math.pi * self.radius\n=======\n"
              "        return 2 * math.pi * self.radius\n>>>>>>> REPLACE\n")
    text, record = patch.make_patch(response(answer), context_of({"geometry/shapes.py": (excerpt, first_line)}))
    assert record["status"] == "valid"
    hunk_start = int(text.split("@@ -")[1].split(",")[0])
    assert hunk_start > first_line
    after = applies(tmp_path, {"geometry/shapes.py": SHAPES}, text)
    assert after["geometry/shapes.py"] == SHAPES.replace("return math.pi * self.radius\n",
                                                         "return 2 * math.pi * self.radius\n")
    # git applies the diff without having to search for the place (no offset).
    result = subprocess.run(["git", "apply", "--check", "-v", "-R", str(tmp_path / "fix.diff")], cwd=tmp_path / "repo",
                            capture_output=True, text=True)
    assert "offset" not in result.stderr


def test_trailing_whitespace_and_a_missing_final_newline(tmp_path):
    content = "def f():\n    return 1   \n\n\ndef g():\n    return 2"
    answer = ("mod.py\n<<<<<<< SEARCH\n    return 1\n=======\n    return 10\n>>>>>>> REPLACE\n"
              "mod.py\n<<<<<<< SEARCH\n    return 2\n=======\n    return 20\n>>>>>>> REPLACE\n")
    text, record = patch.make_patch(response(answer), context_of({"mod.py": content}))
    assert record["status"] == "valid", record["problems"]
    assert "\\ No newline at end of file" in text
    after = applies(tmp_path, {"mod.py": content}, text)
    assert after["mod.py"] == "def f():\n    return 10\n\n\ndef g():\n    return 20"


@pytest.mark.parametrize("answer, problem", [
    ("geometry/shapes.py\n<<<<<<< SEARCH\n    return self.radius * 7\n=======\n    return 1\n>>>>>>> REPLACE\n",
     "edit 1 (geometry/shapes.py): the SEARCH part is not in the file; it begins '    return self.radius * 7'"),
    ("geometry/other.py\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n",
     "edit 1 (geometry/other.py): the file is not among the context files"),
    ("geometry/shapes.py\n<<<<<<< SEARCH\n=======\nx = 2\n>>>>>>> REPLACE\n",
     "edit 1 (geometry/shapes.py): the SEARCH part is empty but the file exists"),
    ("geometry/shapes.py\n<<<<<<< SEARCH\nimport math\n=======\nimport math\n",
     "edit 1: the block is not closed"),
    ("<<<<<<< SEARCH\nimport math\n=======\nimport os\n>>>>>>> REPLACE\n",
     "edit 1: no file path on the line above"),
    ("geometry/shapes.py\n<<<<<<< SEARCH\nimport math\n=======\nimport math\n>>>>>>> REPLACE\n",
     "the edits change nothing"),
])
def test_edits_that_cannot_be_applied_are_explained(answer, problem):
    text, record = patch.make_patch(response(answer), context_of({"geometry/shapes.py": SHAPES}))
    jsonschema.validate(record, SCHEMA)
    assert text == ""
    assert (record["status"], record["reason"], record["source"]) == ("invalid", "invalid_edits", "search_replace")
    assert any(problem in p for p in record["problems"]), record["problems"]


def test_one_bad_edit_rejects_the_whole_answer():
    answer = ("geometry/shapes.py\n<<<<<<< SEARCH\nimport math\n=======\nimport math\nimport os\n>>>>>>> REPLACE\n"
              "geometry/shapes.py\n<<<<<<< SEARCH\nnot there\n=======\nx\n>>>>>>> REPLACE\n")
    text, record = patch.make_patch(response(answer), context_of({"geometry/shapes.py": SHAPES}))
    assert text == "" and record["status"] == "invalid"
    assert "+import os" in record["rejected_patch"]  # what did apply, for the record


def test_reference_patches_written_as_edits_round_trip(tmp_path):
    rows, url = fixture_repos.build(tmp_path / "repos")
    settings = {"repo_cache": str(tmp_path / "cache"), "repo_url": url}
    for row in rows:
        record = context.build_context(row, "oracle", settings)
        text, verdict = patch.make_patch(response(fixture_repos.edit_blocks(row["patch"])), record)
        assert verdict["status"] == "valid", (row["instance_id"], verdict["problems"])
        files = {f["path"]: f["content"] for f in record["files"]}
        expected = applies(tmp_path / row["instance_id"], files, row["patch"])
        assert applies(tmp_path / f"{row['instance_id']}-edits", files, text) == expected

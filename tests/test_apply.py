"""The apply check (scripts/apply.py through scripts/patch.py) on a repository the tests build.

Every verdict is compared with the SWE-bench harness's own sequence of commands, read from the
installed swebench package and run on a full clone: a patch the harness applies must pass with
the same command and the same effect, and one it rejects must fail or come out repaired.
"""
import ast
import importlib.util
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from scripts import apply, diffs, patch

import fixture_repos
from conftest import PROJECT

pytestmark = pytest.mark.unit

SCHEMA = json.loads((PROJECT / "schemas" / "patch.schema.json").read_text())
# the harness's module where this Python finds it, wherever that is installed
HARNESS_SOURCE = Path(importlib.util.find_spec("swebench.harness.run_evaluation").origin)
SHAPES = fixture_repos.GEOMETRY["geometry/shapes.py"]
VECTORS = fixture_repos.GEOMETRY["geometry/vectors.py"]
FILES = {
    "geometry/shapes.py": SHAPES,
    "geometry/vectors.py": VECTORS,
    "notes/no_newline.txt": "first\nsecond\nthird",
    "legacy/old.py": "print 'python 2'\n",
    "docs/obsolete.txt": "gone soon\n",
}
# The reference fix of Circle.perimeter, as git writes it.
FIX = (
    "diff --git a/geometry/shapes.py b/geometry/shapes.py\n"
    "--- a/geometry/shapes.py\n"
    "+++ b/geometry/shapes.py\n"
    "@@ -23,7 +23,7 @@ class Circle(Shape):\n"
    "         return math.pi * self.radius ** 2\n"
    " \n"
    "     def perimeter(self):\n"
    "-        return math.pi * self.radius\n"
    "+        return 2 * math.pi * self.radius\n"
    " \n"
    " \n"
    " class Rectangle(Shape):\n"
)
FIXED_SHAPES = SHAPES.replace("return math.pi * self.radius\n", "return 2 * math.pi * self.radius\n")
# A second change further down shapes.py, to make two-hunk patches.
TRIANGLE = (
    "@@ -48,7 +48,7 @@ class Triangle(Shape):\n"
    "         self.sides = (a, b, c)\n"
    " \n"
    "     def perimeter(self):\n"
    "-        return sum(self.sides)\n"
    "+        return float(sum(self.sides))\n"
    " \n"
    "     def area(self):\n"
    "         s = self.perimeter() / 2\n"
)
TWO_FIXES = FIXED_SHAPES.replace("return sum(self.sides)\n", "return float(sum(self.sides))\n")


def harness_commands():
    """GIT_APPLY_CMDS as the installed harness defines it."""
    for node in ast.parse(HARNESS_SOURCE.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "GIT_APPLY_CMDS":
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("GIT_APPLY_CMDS not found")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("apply")
    path = root / "src" / "acme" / "geometry"
    path.mkdir(parents=True)
    fixture_repos.git(path, "init", "-q", "-b", "main")
    commit = fixture_repos.commit_files(path, FILES, "base")
    (path / "crlf.txt").write_bytes(b"alpha\r\nbeta\r\ngamma\r\n")
    commit = fixture_repos.commit_files(path, {}, "a file with CRLF line endings")
    return {"root": root, "url": f"{root}/src/{{repo}}", "commit": commit, "path": path}


@pytest.fixture
def repository(source, tmp_path):
    return apply.Repository(str(tmp_path / "cache"), source["url"], "acme/geometry", source["commit"])


def harness(source, tmp_path, text, name="harness"):
    """(the command that applied text in a full clone, as the harness runs them, or None; the clone)."""
    clone = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(source["path"]), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", source["commit"]], cwd=clone, check=True)
    (tmp_path / f"{name}.diff").write_text(text)
    for command in harness_commands():
        if subprocess.run(f"{command} {tmp_path / name}.diff", shell=True, cwd=clone, capture_output=True).returncode == 0:
            return command, clone
    return None, clone


def git_apply(source, tmp_path, text, name="plain"):
    """The clone after plain `git apply` of text (which must succeed)."""
    clone = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(source["path"]), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", source["commit"]], cwd=clone, check=True)
    (tmp_path / f"{name}.diff").write_text(text)
    subprocess.run(["git", "apply", str(tmp_path / f"{name}.diff")], cwd=clone, check=True, capture_output=True)
    return clone


def judge(repository, answer, context=None):
    text, record = patch.make_patch({"instance_id": "acme__geometry-9", "status": "ok", "answer": answer},
                                    context, repository)
    jsonschema.validate(record, SCHEMA)
    assert (text != "") == (record["status"] == "valid")
    return text, record


def test_the_commands_are_the_harness_commands():
    assert apply.HARNESS_COMMANDS == harness_commands()


# (name, answer, command the harness applies it with, fixes, shapes.py afterwards)
CASES = [
    ("clean", FIX, "git apply --verbose", [], FIXED_SHAPES),
    ("wrong hunk counts", FIX.replace("@@ -23,7 +23,7 @@", "@@ -23,9 +23,8 @@"), "git apply --verbose",
     ["hunk_counts"], FIXED_SHAPES),
    ("no trailing newline", FIX.rstrip("\n"), "git apply --verbose", ["trailing_newline"], FIXED_SHAPES),
    ("no a/ b/ prefixes", FIX.replace(" a/", " ").replace(" b/", " "), "git apply --verbose", ["path_prefixes"],
     FIXED_SHAPES),
    ("moved hunk", FIX.replace("@@ -23,7 +23,7 @@", "@@ -5,7 +5,7 @@"), "git apply --verbose", [], FIXED_SHAPES),
    ("stale first context line", FIX.replace("         return math.pi * self.radius ** 2\n",
                                             "         return 3.14 * self.radius ** 2\n"),
     "patch --batch --fuzz=5 -p1 -i", [], FIXED_SHAPES),
    ("two hunks, one stale: the harness's --reject then patch reverses the clean one",
     FIX + TRIANGLE.replace("         self.sides = (a, b, c)\n", "         self.sides = [a, b, c]\n"),
     None, ["context_fuzz"], TWO_FIXES),
    # patch --fuzz ignores context lines, not removed ones
    ("trailing whitespace on a removed line", FIX.replace("-        return math.pi * self.radius\n",
                                                          "-        return math.pi * self.radius  \n"),
     None, ["context_whitespace"], FIXED_SHAPES),
    ("trailing whitespace on a middle context line", FIX.replace("     def perimeter(self):\n",
                                                                  "     def perimeter(self):   \n"),
     "patch --batch --fuzz=5 -p1 -i", [], FIXED_SHAPES),
    ("indentation lost", "--- a/geometry/shapes.py\n+++ b/geometry/shapes.py\n@@ -23,7 +23,7 @@\n"
     "     return math.pi * self.radius ** 2\n \n def perimeter(self):\n-    return math.pi * self.radius\n"
     "+    return 2 * math.pi * self.radius\n", None, ["context_whitespace"], FIXED_SHAPES),
    ("hunk header without line numbers", FIX.replace("@@ -23,7 +23,7 @@ class Circle(Shape):", "@@ ... @@"),
     None, ["hunk_headers", "reanchored_hunks"], FIXED_SHAPES),
    ("moved, and a stale line on both sides of the change",
     FIX.replace("@@ -23,7 +23,7 @@", "@@ -40,7 +40,7 @@").replace("         return math.pi * self.radius ** 2\n",
                                                                  "         return 3.14 * self.radius ** 2\n")
     .replace(" class Rectangle(Shape):\n", " class Oblong(Shape):\n"), "patch --batch --fuzz=5 -p1 -i", [],
     FIXED_SHAPES),
]


@pytest.mark.parametrize("name, answer, command, fixes, expected", CASES, ids=[c[0] for c in CASES])
def test_verdict_matches_the_harness_and_the_patch_is_its_git_diff(source, repository, tmp_path, name, answer,
                                                                    command, fixes, expected):
    text, record = judge(repository, answer)
    harness_command, harness_clone = harness(source, tmp_path, diffs.normalise(diffs.extract_diff(answer)[0])[0])
    assert (record["status"], record["applies"]) == ("valid", True), record["problems"]
    assert record["apply_attempt"] == harness_command == command
    assert set(fixes) <= set(record["fixes"])
    assert (record["apply_error"] is None) == (command is not None)
    # patch.diff is git's own diff of the patched files: plain git apply takes it, with the same effect.
    assert text.startswith("diff --git a/geometry/shapes.py b/geometry/shapes.py\nindex ")
    after = git_apply(source, tmp_path, text)
    assert (after / "geometry/shapes.py").read_text() == expected
    if command:
        assert (harness_clone / "geometry/shapes.py").read_text() == expected


def test_a_patch_the_harness_rejects_fails_with_its_output(source, repository, tmp_path):
    answer = FIX.replace("-        return math.pi * self.radius\n", "-        return math.tau * self.radius\n")
    text, record = judge(repository, answer)
    assert harness(source, tmp_path, answer)[0] is None
    assert (text, record["status"], record["reason"], record["applies"]) == ("", "invalid", "does_not_apply", False)
    assert record["problems"] == ["geometry/shapes.py hunk 1 (stated at line 23): its old lines are nowhere in the file, "
                                  "not even ignoring whitespace or two context lines"]
    assert record["rejected_patch"] == answer
    for command in apply.HARNESS_COMMANDS:
        assert f"$ {command} patch.diff" in record["apply_error"]
    assert "patch does not apply" in record["apply_error"]


def test_a_file_missing_from_the_repository_fails(repository):
    answer = FIX.replace("geometry/shapes.py", "geometry/shape.py")
    text, record = judge(repository, answer)
    assert (record["reason"], record["problems"]) == ("does_not_apply", ["geometry/shape.py: not in the repository at the base commit"])


def test_syntax_breaking_patch_is_kept_and_flagged(source, repository, tmp_path):
    answer = FIX.replace("+        return 2 * math.pi * self.radius\n", "+        return 2 * (math.pi * self.radius\n")
    text, record = judge(repository, answer)
    assert (record["status"], record["applies"]) == ("valid", True)
    assert record["syntax_errors"] == ["geometry/shapes.py, line 26: '(' was never closed"]
    assert "+        return 2 * (math.pi * self.radius" in text


def test_lines_that_patch_fuzzes_into_broken_python_are_re_anchored_instead(source, repository, tmp_path):
    # A whole hunk that lost its indentation: git apply rejects it, `patch --fuzz` drops its
    # context and inserts the added lines, too little indented, which breaks shapes.py.
    answer = ("--- a/geometry/shapes.py\n+++ b/geometry/shapes.py\n@@ -25,2 +25,4 @@\n"
              " def perimeter(self):\n+    if self.radius == 0:\n+        return 0.0\n     return math.pi * self.radius\n")
    guarded = SHAPES.replace("    def perimeter(self):\n        return math.pi * self.radius\n",
                             "    def perimeter(self):\n        if self.radius == 0:\n            return 0.0\n"
                             "        return math.pi * self.radius\n")
    command, clone = harness(source, tmp_path, answer)
    assert command == "patch --batch --fuzz=5 -p1 -i"
    assert apply.syntax_error((clone / "geometry/shapes.py").read_bytes(), "shapes.py")
    text, record = judge(repository, answer)
    assert (record["status"], record["applies"], record["apply_attempt"], record["syntax_errors"]) == \
        ("valid", True, None, [])
    assert "context_whitespace" in record["fixes"]
    assert f"{command} applied it, but then geometry/shapes.py, line " in record["apply_error"]
    assert (git_apply(source, tmp_path, text) / "geometry/shapes.py").read_text() == guarded


def test_a_fuzzed_patch_that_breaks_python_either_way_is_kept_as_the_harness_applies_it(source, repository, tmp_path):
    answer = ("--- a/geometry/shapes.py\n+++ b/geometry/shapes.py\n@@ -25,2 +25,3 @@\n"
              " def perimeter(self):\n+    if self.radius == 0 return 0.0\n     return math.pi * self.radius\n")
    command, clone = harness(source, tmp_path, answer)
    text, record = judge(repository, answer)
    assert (record["applies"], record["apply_attempt"]) == (True, command) == (True, "patch --batch --fuzz=5 -p1 -i")
    assert record["syntax_errors"] and record["apply_error"] is None
    assert (git_apply(source, tmp_path, text) / "geometry/shapes.py").read_text() == \
        (clone / "geometry/shapes.py").read_text()


def test_a_file_that_never_compiled_is_not_flagged(repository):
    answer = "--- a/legacy/old.py\n+++ b/legacy/old.py\n@@ -1 +1 @@\n-print 'python 2'\n+print 'still python 2'\n"
    text, record = judge(repository, answer)
    assert (record["status"], record["syntax_errors"]) == ("valid", [])


def test_new_deleted_and_no_newline_files(source, repository, tmp_path):
    answer = (
        "--- /dev/null\n+++ b/geometry/polar.py\n@@ -0,0 +1,2 @@\n+def polar(r, phi):\n+    return r, phi\n"
        "--- a/docs/obsolete.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone soon\n"
        # the last line of the file has no newline, and the hunk does not say so
        "--- a/notes/no_newline.txt\n+++ b/notes/no_newline.txt\n@@ -2,2 +2,2 @@\n second\n-third\n+THIRD\n"
    )
    text, record = judge(repository, answer)
    assert harness(source, tmp_path, answer)[0] is None  # the file's end does not match
    assert (record["status"], record["apply_attempt"], record["fixes"]) == ("valid", None, ["no_newline_marker"])
    after = git_apply(source, tmp_path, text)
    assert (after / "geometry/polar.py").read_text() == "def polar(r, phi):\n    return r, phi\n"
    assert not (after / "docs/obsolete.txt").exists()
    assert (after / "notes/no_newline.txt").read_text() == "first\nsecond\nTHIRD"
    assert record["files"] == ["docs/obsolete.txt", "geometry/polar.py", "notes/no_newline.txt"]


def test_crlf_file_with_an_lf_patch(source, repository, tmp_path):
    answer = "--- a/crlf.txt\n+++ b/crlf.txt\n@@ -1,3 +1,3 @@\n alpha\n-beta\n+BETA\n gamma\n"
    text, record = judge(repository, answer)
    command, clone = harness(source, tmp_path, answer)
    assert record["status"] == "valid" and record["apply_attempt"] == command
    after = git_apply(source, tmp_path, text)
    assert (after / "crlf.txt").read_bytes() == b"alpha\r\nBETA\r\ngamma\r\n"


def test_search_replace_edits_use_the_whole_file_not_the_excerpt(source, repository, tmp_path):
    # The context shows lines 1-10 of shapes.py only; the edit is further down.
    excerpt = "".join(SHAPES.splitlines(keepends=True)[:10])
    context = {"files": [{"path": "geometry/shapes.py", "content": excerpt, "first_line": 1, "tokens": 1}]}
    answer = ("geometry/shapes.py\n<<<<<<< SEARCH\n        return math.pi * self.radius\n=======\n"
              "        return 2 * math.pi * self.radius\n>>>>>>> REPLACE\n")
    assert patch.make_patch({"instance_id": "x", "status": "ok", "answer": answer}, context)[1]["reason"] == "invalid_edits"
    text, record = judge(repository, answer, context)
    assert (record["status"], record["source"], record["apply_attempt"]) == ("valid", "search_replace", "git apply --verbose")
    assert (git_apply(source, tmp_path, text) / "geometry/shapes.py").read_text() == FIXED_SHAPES
    missing = answer.replace("geometry/shapes.py", "geometry/nowhere.py")
    assert "the file is not in the repository at the base commit" in judge(repository, missing)[1]["problems"][0]


def test_a_patch_that_undoes_itself_changes_nothing(repository):
    answer = FIX.replace("+        return 2 * math.pi * self.radius\n", "+        return math.pi * self.radius\n")
    text, record = judge(repository, answer)
    assert (record["status"], record["reason"], record["applies"]) == ("invalid", "invalid_diff", True)
    assert record["problems"] == ["applied at the base commit, the patch changes nothing"]


def test_unreachable_repository_fails_the_job_with_a_clear_message(tmp_path):
    folder = tmp_path / "instances" / "acme__geometry-9"
    folder.mkdir(parents=True)
    (folder / "response.json").write_text(json.dumps({"instance_id": "acme__geometry-9", "status": "ok", "answer": FIX}))
    (folder / "context.json").write_text(json.dumps({"files": []}))
    rows = [{"instance_id": "acme__geometry-9", "repo": "acme/geometry", "base_commit": "a" * 40,
             "problem_statement": "x"}]
    from scripts.select import write_selection

    write_selection(rows, tmp_path / "instances.jsonl", tmp_path / "index.json")
    with pytest.raises(patch.PatchStageError) as error:
        patch.run_stage("acme__geometry-9", {"response": folder / "response.json", "context": folder / "context.json",
                                             "instances": tmp_path / "instances.jsonl", "index": tmp_path / "index.json"},
                        {"diff": folder / "patch.diff", "record": folder / "patch.json"}, tmp_path / "patch.log",
                        {"repo_cache": str(tmp_path / "cache"), "repo_url": f"{tmp_path}/nowhere/{{repo}}"})
    message = str(error.value)
    assert message.startswith(f"acme__geometry-9: cannot check the patch at acme/geometry@{'a' * 40}: cannot fetch ")
    assert "set repo_url (and repo_cache) to where the repository can be fetched, or apply_check=false" in message
    assert not (folder / "patch.json").exists() and not (folder / "patch.diff").exists()
    assert "error: acme__geometry-9: cannot check the patch" in (tmp_path / "patch.log").read_text()


def test_stage_checks_at_the_instances_base_commit(source, tmp_path):
    from scripts.select import write_selection

    (tmp_path / "response.json").write_text(json.dumps({"instance_id": "x", "status": "ok", "answer": FIX.rstrip("\n")}))
    (tmp_path / "context.json").write_text(json.dumps({"files": []}))
    out = tmp_path / "out"
    repos_settings = {"repo_cache": str(tmp_path / "cache"), "repo_url": source["url"]}
    for commit in (source["commit"], "b" * 40):
        row = {"instance_id": "x", "repo": "acme/geometry", "base_commit": commit, "problem_statement": "x"}
        write_selection([row], tmp_path / "instances.jsonl", tmp_path / "index.json")
        inputs = {"response": tmp_path / "response.json", "context": tmp_path / "context.json",
                  "instances": tmp_path / "instances.jsonl", "index": tmp_path / "index.json"}
        outputs = {"diff": out / "patch.diff", "record": out / "patch.json"}
        if commit == source["commit"]:
            patch.run_stage("x", inputs, outputs, tmp_path / "patch.log", repos_settings)
            record = json.loads((out / "patch.json").read_text())
            assert (record["applies"], record["apply_attempt"]) == (True, "git apply --verbose")
        else:
            with pytest.raises(patch.PatchStageError, match="cannot check the patch"):
                patch.run_stage("x", inputs, outputs, tmp_path / "patch.log", repos_settings)


def test_a_renamed_file_with_a_change(source, repository, tmp_path):
    answer = ("diff --git a/geometry/vectors.py b/geometry/vector2.py\nsimilarity index 90%\n"
              "rename from geometry/vectors.py\nrename to geometry/vector2.py\n"
              "--- a/geometry/vectors.py\n+++ b/geometry/vector2.py\n@@ -1,3 +1,3 @@\n"
              '-"""Two-dimensional vectors."""\n+"""Vectors of the plane."""\n import math\n \n')
    text, record = judge(repository, answer)
    assert (record["status"], record["apply_attempt"]) == ("valid", harness(source, tmp_path, answer)[0])
    after = git_apply(source, tmp_path, text)
    assert not (after / "geometry/vectors.py").exists()
    assert (after / "geometry/vector2.py").read_text() == VECTORS.replace("Two-dimensional vectors.", "Vectors of the plane.")

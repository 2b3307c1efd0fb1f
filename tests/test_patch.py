"""Tests of the patch stage (scripts/patch.py, scripts/diffs.py): extraction, normalisation, validation, records, CLI."""
import json
import random
import subprocess
from pathlib import Path

import jsonschema
import pytest
from unidiff import PatchSet

from scripts.diffs import cut_off_problem, extract_diff, normalise, validate
from scripts.patch import make_patch, run_stage

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCHEMA = json.loads((PROJECT / "schemas" / "patch.schema.json").read_text(encoding="utf-8"))
RECORD_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

DIFF_A = (
    "--- a/pkg/a.py\n"
    "+++ b/pkg/a.py\n"
    "@@ -1,3 +1,3 @@\n"
    " def f():\n"
    "-    return 1\n"
    "+    return 2\n"
    " # end of f\n"
)
DIFF_A_FIRST_ATTEMPT = DIFF_A.replace("return 2", "return 3")
DIFF_B = (
    "--- a/pkg/b.py\n"
    "+++ b/pkg/b.py\n"
    "@@ -10,2 +10,3 @@ class B:\n"
    "     x = 1\n"
    "+    y = 2\n"
    "     z = 3\n"
)
GIT_DIFF_A = "diff --git a/pkg/a.py b/pkg/a.py\nindex 1111111..2222222 100644\n" + DIFF_A


def response(answer, status="ok", failure_reason=None, instance_id="org__repo-1"):
    return {"instance_id": instance_id, "status": status, "failure_reason": failure_reason, "answer": answer}


def assert_record_matches_schema(record):
    errors = [error.message for error in RECORD_VALIDATOR.iter_errors(record)]
    assert errors == []


# The data files are found by pattern, so that this project's files name no model or tool.
STRONG_MODEL_ANSWERS = "preds_swe4cc_*_standard_api_39.jsonl"
WEAK_MODEL_ANSWERS = "preds_oracle_*_litesubset.jsonl"
SUBMITTED_PREDICTIONS = "preds_20240617_*.jsonl"
REFERENCE_PATCHES = "swebench_lite_test.jsonl"


def read_rows(pattern):
    matches = sorted(DATA_DIR.glob(pattern))
    assert len(matches) == 1, f"expected one file matching {pattern} in {DATA_DIR}, found {matches}"
    with open(matches[0], encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- extract_diff

def test_patch_tag_is_extracted():
    assert extract_diff(f"Here is the fix.\n<patch>\n{DIFF_A}</patch>\n") == (DIFF_A, "patch_tag")


def test_patch_tag_without_closing_tag_and_with_end_token():
    assert extract_diff(f"<patch>\n{DIFF_A}<|endoftext|>") == (DIFF_A, "patch_tag")


def test_fence_inside_patch_tag_is_ignored():
    assert extract_diff(f"<patch>\n```diff\n{DIFF_A}```\n</patch>") == (DIFF_A, "patch_tag")


@pytest.mark.parametrize("info", ["diff", "patch", ""])
def test_fenced_diff_is_extracted(info):
    answer = f"The bug is in f.\n\n```{info}\n{DIFF_A}```\n\nThis returns 2 now.\n"
    assert extract_diff(answer) == (DIFF_A, "fence")


def test_fence_is_not_closed_by_a_context_line_holding_backticks():
    readme_diff = (
        "--- a/README.md\n+++ b/README.md\n@@ -1,3 +1,3 @@\n"
        " ```\n-old\n+new\n ```\n"
    )
    assert extract_diff(f"```diff\n{readme_diff}```\n") == (readme_diff, "fence")


def test_bare_git_diff_is_extracted_without_the_prose_around_it():
    answer = f"The fix:\n\n{GIT_DIFF_A}\nThis makes f return 2.\n"
    assert extract_diff(answer) == (GIT_DIFF_A, "bare")


def test_bare_diff_ends_before_a_bullet_list():
    answer = f"{DIFF_A}\n- f now returns 2\n+ nothing else changes\n"
    assert extract_diff(answer) == (DIFF_A, "bare")


def test_bare_diff_keeps_hunks_separated_by_blank_lines():
    two_hunks = DIFF_A + "@@ -20,2 +20,2 @@\n x = 1\n-y = 2\n+y = 3\n"
    answer = two_hunks.replace("@@ -20", "\n@@ -20")
    text, source = extract_diff(answer)
    assert source == "bare"
    assert normalise(text) == (two_hunks, ["stray_blank_lines"])


def test_patch_tag_is_preferred_over_a_fence():
    answer = f"```diff\n{DIFF_B}```\n<patch>\n{DIFF_A}</patch>\n"
    assert extract_diff(answer) == (DIFF_A, "patch_tag")


def test_multi_file_change_split_over_blocks_keeps_every_file():
    answer = f"First file:\n```diff\n{DIFF_A}```\nSecond file:\n```diff\n{DIFF_B}```\n"
    assert extract_diff(answer) == (DIFF_A + DIFF_B, "fence")


def test_corrected_repeat_keeps_the_last_version_of_a_file():
    answer = (
        f"```diff\n{DIFF_A_FIRST_ATTEMPT}```\n"
        f"```diff\n{DIFF_B}```\n"
        f"Wait, that is wrong. Corrected:\n```diff\n{DIFF_A}```\n"
    )
    # pkg/a.py comes first (where it first appeared) but with the corrected content.
    assert extract_diff(answer) == (DIFF_A + DIFF_B, "fence")


@pytest.mark.parametrize("answer", [
    None,
    "",
    "I believe the bug is in f, which should return 2.",
    "Some text\n---\nMore text after a rule\n",
    "```python\ndef f():\n    return 2\n```\n",
])
def test_answers_without_a_diff_give_nothing(answer):
    assert extract_diff(answer) == (None, None)


# ---------------------------------------------------------------- normalise

def test_clean_diff_is_left_alone():
    assert normalise(GIT_DIFF_A) == (GIT_DIFF_A, [])


def test_wrong_hunk_counts_are_recounted_then_valid():
    wrong = DIFF_A.replace("@@ -1,3 +1,3 @@", "@@ -1,7 +1,9 @@")
    assert validate(wrong) != []
    text, fixes = normalise(wrong)
    assert (text, fixes) == (DIFF_A, ["hunk_counts"])
    assert validate(text) == []


def test_recounted_header_keeps_its_section_heading():
    wrong = DIFF_B.replace("@@ -10,2 +10,3 @@", "@@ -10,5 +10,6 @@")
    assert normalise(wrong) == (DIFF_B, ["hunk_counts"])


def test_crlf_and_cr_line_endings_become_lf():
    assert normalise(DIFF_A.replace("\n", "\r\n")) == (DIFF_A, ["line_endings"])
    assert normalise(DIFF_A.replace("\n", "\r")) == (DIFF_A, ["line_endings"])


def test_missing_trailing_newline_is_added():
    assert normalise(DIFF_A.rstrip("\n")) == (DIFF_A, ["trailing_newline"])


def test_hunks_that_change_nothing_are_dropped():
    shown = "@@ -30,2 +30,2 @@\n x = 1\n y = 2\n"
    assert normalise(DIFF_A + shown) == (DIFF_A, ["context_only_hunks"])
    only_shown = "--- a/pkg/c.py\n+++ b/pkg/c.py\n" + shown
    assert normalise(only_shown + DIFF_B) == (DIFF_B, ["context_only_hunks"])
    # when nothing else is left, the diff stays as it is and is rejected
    assert normalise(only_shown) == (only_shown, [])
    assert validate(only_shown) == ["no hunk adds or removes a line"]


def test_junk_after_the_last_hunk_is_dropped():
    assert normalise(DIFF_A + "```\nThat's all.\n") == (DIFF_A, ["trailing_junk"])


def test_empty_line_inside_a_hunk_is_a_context_line():
    with_blank = "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,3 @@\n import os\n \n-x = 1\n+x = 2\n"
    stripped = with_blank.replace("\n \n", "\n\n")
    assert normalise(stripped) == (with_blank, ["blank_context_lines"])


def test_trailing_blank_line_counted_by_the_header_is_context():
    ends_blank = "--- a/m.py\n+++ b/m.py\n@@ -1,3 +1,3 @@\n-x = 1\n+x = 2\n y = 3\n \n"
    assert normalise(ends_blank.replace("\n \n", "\n\n")) == (ends_blank, ["blank_context_lines"])


def test_trailing_blank_line_not_counted_by_the_header_is_dropped():
    assert normalise(DIFF_A + "\n\n") == (DIFF_A, ["stray_blank_lines"])


def test_no_newline_marker_is_not_counted():
    diff = "--- a/m.txt\n+++ b/m.txt\n@@ -1 +1 @@\n-old\n\\ No newline at end of file\n+new\n\\ No newline at end of file\n"
    assert normalise(diff) == (diff, [])
    assert validate(diff) == []


def test_removed_sql_comment_is_not_taken_for_a_file_header():
    diff = (
        "--- a/q.sql\n+++ b/q.sql\n@@ -1,3 +1,3 @@\n"
        " SELECT 1;\n--- old comment\n+++ new comment\n SELECT 2;\n"
    )
    assert normalise(diff) == (diff, [])
    assert validate(diff) == []


# ---------------------------------------------------------------- validate

def test_valid_diffs_have_no_problems():
    assert validate(DIFF_A) == []
    assert validate(GIT_DIFF_A + DIFF_B) == []


def test_added_and_deleted_files_use_dev_null():
    added = "--- /dev/null\n+++ b/pkg/new.py\n@@ -0,0 +1,2 @@\n+a = 1\n+b = 2\n"
    deleted = "--- a/pkg/old.py\n+++ /dev/null\n@@ -1,1 +0,0 @@\n-a = 1\n"
    assert validate(added) == []
    assert validate(deleted) == []


def test_paths_without_prefixes_are_flagged():
    problems = validate(DIFF_A.replace("a/pkg", "pkg").replace("b/pkg", "pkg"))
    assert problems == [
        "pkg/a.py: the --- path 'pkg/a.py' lacks the a/ prefix",
        "pkg/a.py: the +++ path 'pkg/a.py' lacks the b/ prefix",
    ]


def test_absolute_paths_are_flagged():
    problems = validate(DIFF_A.replace("a/pkg", "/home/me/repo/pkg").replace("b/pkg", "/home/me/repo/pkg"))
    assert problems == [
        "/home/me/repo/pkg/a.py: the --- path '/home/me/repo/pkg/a.py' is absolute",
        "/home/me/repo/pkg/a.py: the +++ path '/home/me/repo/pkg/a.py' is absolute",
    ]


def test_paths_leaving_the_repository_are_flagged():
    problems = validate(DIFF_A.replace("a/pkg", "a/../etc").replace("b/pkg", "b/../etc"))
    assert problems == [
        "../etc/a.py: the --- path 'a/../etc/a.py' contains '..'",
        "../etc/a.py: the +++ path 'b/../etc/a.py' contains '..'",
    ]


def test_count_mismatch_names_the_file_and_hunk():
    problems = validate(GIT_DIFF_A + DIFF_B.replace("+10,3", "+10,4"))
    assert problems == ["pkg/b.py hunk 1: the header announces 2 old and 4 new lines but the body has 2 and 3"]


def test_diff_without_a_change_is_flagged():
    no_change = "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n x = 1\n y = 2\n"
    assert validate(no_change) == ["no hunk adds or removes a line"]


def test_unreadable_hunk_header_is_flagged():
    problems = validate(DIFF_A.replace("@@ -1,3 +1,3 @@", "@@ @@"))
    assert problems[0] == "pkg/a.py hunk 1: cannot read the hunk header '@@ @@'"


def test_lines_outside_hunks_are_flagged():
    broken = DIFF_A + "...\n" + "@@ -20,1 +20,1 @@\n-q\n+r\n"
    assert validate(broken) == ["1 line(s) belong to no file header or hunk, the first is line 8: '...'"]


def test_empty_text_and_prose_are_not_diffs():
    assert validate("") == ["the patch is empty"]
    assert validate("just words\n") == ["no file header ('--- a/...' and '+++ b/...') was found"]


def test_file_header_without_hunks_is_flagged():
    assert validate(DIFF_A + "--- a/c.py\n+++ b/c.py\n") == ["c.py: the file header is followed by no hunk"]


# ---------------------------------------------------------------- cut-off answers

CUT_OFF_ANSWER = "<patch>\n--- a/m.py\n+++ b/m.py\n@@ -1,5 +1,5 @@\n a = 1\n-b = 2\n+b = 3\n c = "


def test_answer_cut_off_inside_a_hunk_is_invalid():
    text, source = extract_diff(CUT_OFF_ANSWER)
    problem = cut_off_problem(CUT_OFF_ANSWER, text)
    assert problem == "m.py: the answer stops in the middle of the hunk '@@ -1,5 +1,5 @@' (3 of 5 old and 3 of 5 new lines); it was cut off"
    patch, record = make_patch(response(CUT_OFF_ANSWER))
    assert (patch, record["status"], record["problems"][0]) == ("", "invalid", problem)


def test_answer_cut_off_inside_a_hunk_header_is_invalid():
    answer = "```diff\n" + DIFF_A + "@@ -40,"
    patch, record = make_patch(response(answer))
    assert record["status"] == "invalid"
    assert "cut off" in record["problems"][0]


def test_finished_answer_with_short_hunk_is_recounted_not_cut_off():
    for finished in (CUT_OFF_ANSWER + "3\n", CUT_OFF_ANSWER + "3<|endoftext|>", CUT_OFF_ANSWER + "3\n</patch>"):
        text, _ = extract_diff(finished)
        assert cut_off_problem(finished, text) is None
        patch, record = make_patch(response(finished))
        assert record["status"] == "valid"
        assert "hunk_counts" in record["fixes"]


# ---------------------------------------------------------------- make_patch and records

def test_valid_record():
    patch, record = make_patch(response(f"```diff\n{GIT_DIFF_A}{DIFF_B}```"))
    assert patch == GIT_DIFF_A + DIFF_B
    assert record == {
        "instance_id": "org__repo-1", "status": "valid", "reason": None, "generation_failure": None,
        "problems": [], "source": "fence", "fixes": [], "files": ["pkg/a.py", "pkg/b.py"], "hunks": 2,
        "lines_added": 2, "lines_removed": 1, "rejected_patch": None,
        "applies": None, "apply_attempt": None, "apply_error": None, "syntax_errors": [],
    }


def test_invalid_record_keeps_the_rejected_patch():
    absolute = DIFF_A.replace("a/pkg", "/src/pkg").replace("b/pkg", "/src/pkg")
    patch, record = make_patch(response(f"<patch>\n{absolute}\r\n</patch>"))
    assert patch == ""
    assert record["status"] == "invalid"
    assert record["reason"] == "invalid_diff"
    assert record["rejected_patch"] == absolute
    assert record["files"] == ["/src/pkg/a.py"]
    assert len(record["problems"]) == 2


@pytest.mark.parametrize("unprefixed, prefixed", [
    (DIFF_A.replace("a/pkg", "pkg").replace("b/pkg", "pkg"), DIFF_A),
    (GIT_DIFF_A.replace("a/pkg", "pkg").replace("b/pkg", "pkg"), GIT_DIFF_A),
    # only the +++ side lacks it
    (DIFF_A.replace("b/pkg", "pkg"), DIFF_A),
    # a new file; a repository path that starts with a/
    ("--- /dev/null\n+++ pkg/new.py\n@@ -0,0 +1 @@\n+x = 1\n", "--- /dev/null\n+++ b/pkg/new.py\n@@ -0,0 +1 @@\n+x = 1\n"),
    (DIFF_A.replace("a/pkg", "a/x").replace("b/pkg", "a/x"), DIFF_A.replace("a/pkg", "a/a/x").replace("b/pkg", "b/a/x")),
])
def test_missing_path_prefixes_are_added(unprefixed, prefixed):
    assert normalise(unprefixed) == (prefixed, ["path_prefixes"])
    patch, record = make_patch(response(unprefixed))
    assert (patch, record["status"], record["fixes"]) == (prefixed, "valid", ["path_prefixes"])


def test_failed_generation():
    patch, record = make_patch(response("I cannot help with that.", status="failed", failure_reason="refused"))
    assert patch == ""
    assert (record["status"], record["reason"], record["generation_failure"]) == ("empty", "generation_failed", "refused")


@pytest.mark.parametrize("answer", [None, "", "  \n\t"])
def test_empty_answer(answer):
    patch, record = make_patch(response(answer))
    assert (patch, record["status"], record["reason"]) == ("", "empty", "empty_answer")


def test_prose_answer_has_no_diff():
    patch, record = make_patch(response("The function f should return 2 instead of 1."))
    assert (patch, record["status"], record["reason"], record["source"]) == ("", "empty", "no_diff", None)


@pytest.mark.parametrize("broken", [
    {"status": "ok", "answer": "x"},
    {"instance_id": "a", "status": "done", "answer": "x"},
    {"instance_id": "a", "status": "ok", "answer": ["x"]},
    ["not", "an", "object"],
])
def test_response_breaking_the_contract_is_an_error(broken):
    with pytest.raises(ValueError):
        make_patch(broken)


def record_of_every_kind():
    return {
        "valid": make_patch(response(DIFF_A))[1],
        "invalid": make_patch(response(DIFF_A.replace("a/pkg", "/pkg")))[1],
        "cut_off": make_patch(response(CUT_OFF_ANSWER))[1],
        "generation_failed": make_patch(response(None, status="failed", failure_reason="no_answer_recorded"))[1],
        "generation_failed_without_reason": make_patch(response(None, status="failed"))[1],
        "empty_answer": make_patch(response(""))[1],
        "no_diff": make_patch(response("words only"))[1],
    }


def test_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("kind", list(record_of_every_kind()))
def test_every_record_kind_matches_the_schema(kind):
    assert_record_matches_schema(record_of_every_kind()[kind])


def test_schema_rejects_inconsistent_records():
    valid = make_patch(response(DIFF_A))[1]
    assert not RECORD_VALIDATOR.is_valid({**valid, "rejected_patch": DIFF_A})
    assert not RECORD_VALIDATOR.is_valid({**valid, "status": "invalid"})
    assert not RECORD_VALIDATOR.is_valid({**valid, "fixes": ["made_up"]})
    assert not RECORD_VALIDATOR.is_valid({key: value for key, value in valid.items() if key != "files"})


def random_answer(rng):
    """Either a soup of the pieces that matter to diffs, fences and tags, or a valid answer with a few random edits."""
    pieces = ["\n", "\r\n", " ", "+", "-", "@@ ", "--- a/x\n", "+++ b/x\n", "@@ -1,2 +1,2 @@\n",
              "```", "```diff\n", "<patch>", "</patch>", "<|endoftext|>", "\\", "diff --git a/x b/x\n",
              "a/", "..", "/", "x", "\x00", "\xff", "\u2028", "\x0c", "é"]
    if rng.random() < 0.5:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 80)))
    answer = list(f"Fix:\n```diff\n{GIT_DIFF_A}{DIFF_B}```\n")
    for _ in range(rng.randint(0, 3)):
        position = rng.randrange(len(answer))
        edit = rng.choice(["delete", "insert", "replace"])
        if edit == "delete":
            del answer[position]
        elif edit == "insert":
            answer.insert(position, rng.choice(pieces))
        else:
            answer[position] = rng.choice(pieces)
    return "".join(answer)


def test_garbage_answers_give_records_not_exceptions():
    rng = random.Random(1234)
    statuses = set()
    for _ in range(600):
        patch, record = make_patch(response(random_answer(rng)))
        assert_record_matches_schema(record)
        assert (patch != "") == (record["status"] == "valid")
        if patch:
            assert validate(patch) == []
            assert len(PatchSet(patch)) == len(record["files"])
        statuses.add(record["status"])
    assert statuses == {"valid", "invalid", "empty"}


def test_huge_answer_gives_a_record():
    body = "".join(f"+line {n}\n" for n in range(200_000))
    answer = "```diff\n--- a/big.txt\n+++ b/big.txt\n@@ -0,0 +1,5 @@\n" + body + "```\n" + "x" * 1_000_000
    patch, record = make_patch(response(answer))
    assert (record["status"], record["lines_added"], record["fixes"]) == ("valid", 200_000, ["hunk_counts"])
    assert patch.startswith("--- a/big.txt\n+++ b/big.txt\n@@ -0,0 +1,200000 @@\n")


# ---------------------------------------------------------------- the stage

def write_response(path, answer, **fields):
    path.write_text(json.dumps(response(answer, **fields)), encoding="utf-8")
    return path


def stage(tmp_path, response_path):
    """Run the stage as its rule does, without the apply check; returns (diff path, record path)."""
    (tmp_path / "context.json").write_text(json.dumps({"files": []}), encoding="utf-8")
    files = {"diff": tmp_path / "out" / "patch.diff", "record": tmp_path / "out" / "patch.json"}
    run_stage("x", {"response": response_path, "context": tmp_path / "context.json"}, files, tmp_path / "patch.log", None)
    return files["diff"], files["record"]


def test_stage_writes_the_patch_and_the_record(tmp_path):
    response_path = write_response(tmp_path / "response.json", f"```diff\n{DIFF_A}```")
    diff_path, record_path = stage(tmp_path, response_path)
    assert diff_path.read_text(encoding="utf-8") == DIFF_A
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert_record_matches_schema(record)
    assert record["status"] == "valid"
    assert "patch valid" in (tmp_path / "patch.log").read_text()


def test_stage_writes_an_empty_patch_for_a_failed_generation(tmp_path):
    response_path = write_response(tmp_path / "response.json", None, status="failed", failure_reason="no_answer_recorded")
    diff_path, record_path = stage(tmp_path, response_path)
    assert diff_path.read_text(encoding="utf-8") == ""
    record = json.loads(record_path.read_text(encoding="utf-8"))
    assert (record["reason"], record["generation_failure"]) == ("generation_failed", "no_answer_recorded")


def test_missing_or_unreadable_response_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        stage(tmp_path, tmp_path / "absent.json")
    unreadable = tmp_path / "response.json"
    unreadable.write_text("{not json", encoding="utf-8")
    with pytest.raises(json.JSONDecodeError):
        stage(tmp_path, unreadable)
    assert not (tmp_path / "out" / "patch.diff").exists()
    assert not (tmp_path / "out" / "patch.json").exists()


# ---------------------------------------------------------------- real answers in ../shared/data

REAL_ANSWER_FILES = [
    (STRONG_MODEL_ANSWERS, "full_output"),
    (WEAK_MODEL_ANSWERS, "full_output"),
    (SUBMITTED_PREDICTIONS, "model_patch"),
    (REFERENCE_PATCHES, "patch"),
]


def real_records(pattern, field):
    """{instance_id: (row, patch, record)} for every row of a data file."""
    results = {}
    for row in read_rows(pattern):
        patch, record = make_patch(response(row[field], instance_id=row["instance_id"]))
        results[row["instance_id"]] = (row, patch, record)
    return results


@pytest.mark.parametrize("pattern, field", REAL_ANSWER_FILES)
def test_real_answers_give_schema_records_and_valid_patches_reparse(pattern, field):
    results = real_records(pattern, field)
    assert len(results) >= 39
    for _row, patch, record in results.values():
        assert_record_matches_schema(record)
        if record["status"] == "valid":
            patch_set = PatchSet(patch)
            assert str(patch_set) == patch
            assert [f.path for f in patch_set] == record["files"]
            assert sum(f.added for f in patch_set) == record["lines_added"]
            assert sum(f.removed for f in patch_set) == record["lines_removed"]
        else:
            assert patch == ""


def test_reference_patches_come_out_valid_and_unchanged():
    results = real_records(REFERENCE_PATCHES, "patch")
    assert len(results) == 300
    for row, patch, record in results.values():
        assert (record["status"], record["source"], record["fixes"]) == ("valid", "bare", [])
        assert patch == row["patch"]


def test_submitted_predictions_come_out_unchanged():
    results = real_records(SUBMITTED_PREDICTIONS, "model_patch")
    for row, patch, record in results.values():
        if row["model_patch"]:
            assert (record["status"], patch) == ("valid", row["model_patch"])
        else:
            assert record["reason"] == "empty_answer"


def test_strong_model_answers_all_yield_valid_patches():
    results = real_records(STRONG_MODEL_ANSWERS, "full_output")
    statuses = [record["status"] for _, _, record in results.values()]
    assert statuses == ["valid"] * 39
    # Many of these answers state wrong hunk counts; they are repaired, not rejected.
    assert sum("hunk_counts" in record["fixes"] for _, _, record in results.values()) >= 10


def test_strong_model_hunks_that_only_show_code_are_dropped(tmp_path):
    results = real_records(STRONG_MODEL_ANSWERS, "full_output")
    for instance_id in ("django__django-10914", "pydata__xarray-4493"):
        row, patch, record = results[instance_id]
        assert "context_only_hunks" in record["fixes"]
        # git reads the answer's own diff as a corrupt patch, whatever the files; not the repaired one
        raw = tmp_path / f"{instance_id}.raw.diff"
        raw.write_text(extract_diff(row["full_output"])[0])
        fixed = tmp_path / f"{instance_id}.diff"
        fixed.write_text(patch)
        assert "corrupt patch" in subprocess.run(["git", "apply", "--stat", str(raw)], capture_output=True, text=True).stderr
        subprocess.run(["git", "apply", "--stat", str(fixed)], check=True, capture_output=True)


def test_strong_model_answer_with_three_attempts_keeps_the_last():
    row, patch, record = real_records(STRONG_MODEL_ANSWERS, "full_output")["django__django-13033"]
    # The answer rewrites query.py three times; its recorded model_patch concatenated all three.
    assert row["model_patch"].count("+++ b/django/db/models/sql/query.py") == 3
    assert patch.count("+++ b/django/db/models/sql/query.py") == 1
    assert [line for line in patch.splitlines() if line.startswith("@@")] == ["@@ -1575,6 +1575,20 @@"]


def test_strong_model_answers_with_several_files():
    results = real_records(STRONG_MODEL_ANSWERS, "full_output")
    assert results["django__django-11039"][2]["files"] == [
        "django/core/management/commands/sqlmigrate.py", "tests/migrations/test_commands.py"]
    # First block changes typehints.py and is kept; the typing.py attempts are replaced by the last one.
    _, patch, record = results["sphinx-doc__sphinx-8627"]
    assert record["files"] == ["sphinx/ext/autodoc/typehints.py", "sphinx/util/typing.py"]
    assert "@@ -276,6 +276,16 @@" not in patch
    assert "@@ -249,7 +249,7 @@" in patch


def test_small_model_answers():
    results = real_records(WEAK_MODEL_ANSWERS, "full_output")
    # <patch> block ended by <|endoftext|>, with blank lines at the end of the hunk.
    _, patch, record = results["django__django-12286"]
    assert (record["status"], record["source"], record["files"], record["lines_added"]) == (
        "valid", "patch_tag", ["django/core/checks/translation.py"], 2)
    # Closed ```diff fence: the patch is exactly the one the dataset extracted.
    row, patch, record = results["django__django-16046"]
    assert (record["status"], patch) == ("valid", row["model_patch"])
    # Answers cut off by the token limit in the middle of a hunk are rejected, not recounted.
    _, patch, record = results["django__django-15388"]
    assert (patch, record["status"]) == ("", "invalid")
    assert record["problems"][0].startswith("django/template/autoreload.py: the answer stops in the middle of the hunk '@@ -1,17 +1,17 @@'")
    cut_off = [r for _, _, r in results.values() if any("cut off" in p for p in r["problems"])]
    assert len(cut_off) > len(results) / 2
    # A listing of the file with line numbers, no diff at all.
    assert results["matplotlib__matplotlib-24149"][2]["reason"] == "no_diff"

"""The patch stage: find the diff in a model's answer, repair what is safe to repair, judge it.

Reads the generate stage's response.json and writes two files: patch.diff, the text that
becomes the prediction's model_patch (empty unless the patch is valid), and patch.json, the
verdict (see schemas/patch.schema.json). An answer made of search/replace edit blocks (the
search_replace prompt style) is applied to the files and turned into a unified diff.

With the apply check (scripts/apply.py) the patch must apply at the instance's base commit
as the SWE-bench harness applies it, or be repaired until it does; patch.diff is then the
`git diff` of the patched files. The patch stage never asks a model: a patch that still
fails, or breaks a Python file, is for the repair stage (scripts/repair.py).
"""
from scripts import apply
from scripts import repos as repos_module
from scripts.common import (
    fault_line,
    instance_log,
    read_json,
    read_row,
    write_json_atomic,
    write_text_atomic,
)
from scripts.diffs import (
    HUNK_HEADER,
    UNREADABLE_HEADER,
    cut_off_problem,
    diff_lines,
    extract_diff,
    inner_path,
    normalise,
    parse_diff,
    patch_stats,
    split_lines,
    validate,
)
from scripts.edits import edits_to_diff, find_edits, find_lines

# ---------------------------------------------------------------- judging one answer

def file_changes(text):
    """The apply module's view of a diff: one FileChange per file section."""
    lines = diff_lines(text)
    changes = []
    for section in parse_diff(lines)[0]:
        hunks = []
        for start, end in section["hunks"]:
            match = HUNK_HEADER.fullmatch(lines[start])
            hunks.append((int(match.group(1)) if match else None, lines[start + 1:end]))
        old = inner_path(section["old_path"], "a/", False) if section["old_path"] else None
        new = inner_path(section["new_path"], "b/", False) if section["new_path"] else None
        if section["old_path"] is None and section["new_path"] is None:
            old = new = section["git_path"]
        for header in section["headers"]:  # a renamed file comes from another path
            if header.startswith("rename from "):
                old = header[len("rename from "):].strip()
        changes.append(apply.FileChange(old, new, hunks))
    return changes


def new_record(instance_id):
    return {
        "instance_id": instance_id, "status": "empty", "reason": None, "generation_failure": None,
        "problems": [], "source": None, "fixes": [], "files": [], "hunks": 0,
        "lines_added": 0, "lines_removed": 0, "rejected_patch": None,
        "applies": None, "apply_attempt": None, "apply_error": None, "syntax_errors": [],
    }


def spot(path, line=None, hint=(), text=None, after=False):
    """A place in a file that a repair request shows: around line (1-based), or else around the
    line most like the first of hint; text is the file's (None: read it at the base commit)."""
    return {"path": path, "line": line, "hint": list(hint), "text": text, "after": after}


def decoded(data):
    return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data


def checked(record, text, repository, trust_harness=True):
    """(patch text, record, spots) once the diff has been through the apply check."""
    verdict = apply.check(repository, text, file_changes(text), trust_harness)
    record.update(apply_attempt=verdict.attempt, apply_error=verdict.error)
    if not verdict.applies:
        record.update(status="invalid", reason="does_not_apply", applies=False, rejected_patch=text,
                      problems=[failure[4] for failure in verdict.failures])
        spots = [spot(path, start, old, decoded(verdict.before.get(path))) for path, _, start, old, _ in verdict.failures]
        return "", record, spots
    record.update(applies=True, fixes=record["fixes"] + verdict.fixes, syntax_errors=verdict.syntax_errors,
                  **patch_stats(verdict.patch))
    problems = validate(verdict.patch)
    if problems:  # e.g. the patch undoes its own change
        if not verdict.patch.strip():
            problems = ["applied at the base commit, the patch changes nothing"]
        record.update(status="invalid", reason="invalid_diff", problems=problems, rejected_patch=text)
        return "", record, []
    record["status"] = "valid"
    spots = []
    for error in verdict.syntax_errors:
        path, _, rest = error.partition(", line ")
        line = int(rest.split(":")[0]) if rest.split(":")[0].isdigit() else 1
        spots.append(spot(path, line, text=decoded(verdict.after.get(path)), after=True))
    return verdict.patch, record, spots


def judge_edits(record, edits, edit_problems, context, repository):
    """(patch text, record, spots) for an answer of search/replace edit blocks."""
    if repository is not None:  # the real files, not only the context's excerpts
        paths = list(dict.fromkeys(path for path, _, _ in edits))
        texts = apply.read_texts(repository, paths) if paths else {}
        files = {path: {"path": path, "content": text, "first_line": 1} for path, text in texts.items() if text is not None}
        missing = "is not in the repository at the base commit"
    else:
        files = {f["path"]: f for f in (context or {}).get("files", [])}
        missing = "is not among the context files"
    text, problems = edits_to_diff(edits, files, missing)
    problems = edit_problems + problems + (validate(text) if text and not problems else [])
    record.update(source="search_replace", problems=problems, **patch_stats(text))
    if problems:
        record.update(status="invalid", reason="invalid_edits", rejected_patch=text)
        spots = [spot(path, None, search, files[path]["content"]) for path, search, _ in edits
                 if path in files and search and files[path].get("first_line", 1) == 1
                 and find_lines(split_lines(files[path]["content"]), search) is None]
        return "", record, spots
    if repository is None:
        record["status"] = "valid"
        return text, record, []
    return checked(record, text, repository)


def judge(response, context=None, repository=None):
    """(patch text, record, spots) for one response: the text is "" unless the record's status is
    "valid"; spots are the places a repair request would show.

    context is the instance's context record; repository (an apply.Repository) turns on the
    apply check, and then search/replace edits are applied to the files at the base commit."""
    instance_id, status, answer = check_response(response)
    record = new_record(instance_id)
    if status == "failed":
        record.update(reason="generation_failed", generation_failure=response.get("failure_reason"))
        return "", record, []
    if answer is None or not answer.strip():
        record["reason"] = "empty_answer"
        return "", record, []
    edits, edit_problems = find_edits(answer)
    if edits or edit_problems:
        return judge_edits(record, edits, edit_problems, context, repository)
    diff_text, source = extract_diff(answer)
    if diff_text is None:
        record["reason"] = "no_diff"
        return "", record, []
    text, fixes = normalise(diff_text)
    problems = validate(text)
    cut_off = cut_off_problem(answer, diff_text)
    if cut_off:
        problems.insert(0, cut_off)
    record.update(source=source, fixes=fixes, problems=problems, **patch_stats(text))
    # Hunk headers without line numbers are all that is wrong: re-anchoring can place the hunks.
    placeable = repository is not None and all(UNREADABLE_HEADER in p for p in problems)
    if problems and not placeable:
        record.update(status="invalid", reason="invalid_diff", rejected_patch=text)
        spots = [spot(change.new_path or change.old_path, start, apply.old_side(body))
                 for change in file_changes(text) for start, body in change.hunks if change.old_path]
        return "", record, spots
    if repository is None:
        record["status"] = "valid"
        return text, record, []
    if problems:
        record["fixes"] = record["fixes"] + ["hunk_headers"]
        record["problems"] = []
    return checked(record, text, repository, trust_harness=not problems)


def make_patch(response, context=None, repository=None):
    """(patch text, record) for one response; see judge()."""
    text, record, _ = judge(response, context, repository)
    return text, record


def check_response(response):
    """The response's instance_id, status and answer; ValueError if it breaks the generate stage's contract."""
    if not isinstance(response, dict):
        raise ValueError("response.json must hold a JSON object")
    instance_id = response.get("instance_id")
    if not isinstance(instance_id, str) or not instance_id:
        raise ValueError("response.json has no instance_id")
    status = response.get("status")
    if status not in ("ok", "failed"):
        raise ValueError(f"{instance_id}: response status must be 'ok' or 'failed', not {status!r}")
    answer = response.get("answer")
    if answer is not None and not isinstance(answer, str):
        raise ValueError(f"{instance_id}: answer must be a string or null")
    failure_reason = response.get("failure_reason")
    if failure_reason is not None and not isinstance(failure_reason, str):
        raise ValueError(f"{instance_id}: failure_reason must be a string or null")
    return instance_id, status, answer



# ---------------------------------------------------------------- the stage

def describe_verdict(record):
    """The record's status, with its reason, for a log line."""
    return f"{record['status']} ({record['reason']})" if record["reason"] else record["status"]


class PatchStageError(Exception):
    """The job fails and writes nothing; a rerun retries the instance."""


def run_stage(instance_id, input, output, log_path, repos):
    """The stage for one instance: write patch.diff and patch.json. input and output are the
    rule's named files (response, context, and instances/index for the apply check; diff, record).
    repos ({"repo_cache", "repo_url"}) turns on the apply check at the instance's base commit; a
    repository that cannot be fetched fails the job with PatchStageError."""
    with instance_log(log_path, instance_id) as log:
        repository = None
        if repos is not None:
            row = read_row(input["instances"], input["index"], instance_id)
            repository = apply.Repository(repos["repo_cache"], repos["repo_url"], row["repo"], row["base_commit"])
        try:
            context = read_json(input["context"]) if input.get("context") else None  # none in an agent run
            text, record, _ = judge(read_json(input["response"]), context, repository)
        except repos_module.RepoError as error:
            message = (f"{instance_id}: cannot check the patch at {repository.repo}@{repository.commit}: "
                       f"{str(error).rstrip('.')}. To fix it, set repo_url (and repo_cache) to where the repository can be fetched, or "
                       f"apply_check=false to skip the check (log: {log_path})")
            log(f"error: {message}")
            log(fault_line("repository_unreachable", f"{error}; a rerun retries it"))
            raise PatchStageError(message) from None
        write_text_atomic(output["diff"], text)
        write_json_atomic(output["record"], record)
        applied = {True: f", applies ({record['apply_attempt'] or 'repaired'})", False: ", does not apply",
                   None: ""}[record["applies"]]
        log(f"patch {describe_verdict(record)}{applied}")
    return record

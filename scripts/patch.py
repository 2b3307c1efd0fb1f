"""The patch stage: find the diff in a model's answer, repair what is safe to repair, judge it.

Reads the generate stage's response.json and writes two files: patch.diff, the text that
becomes the prediction's model_patch (empty unless the patch is valid), and patch.json, the
verdict (see schemas/patch.schema.json). An answer made of search/replace edit blocks (the
search_replace prompt style) is applied to the files and turned into a unified diff.

With the apply check (scripts/apply.py) the patch must apply at the instance's base commit
as the SWE-bench harness applies it, or be repaired until it does; patch.diff is then the
`git diff` of the patched files. A patch that still fails, or breaks a Python file, can go
back to the model (self-repair) with the error and the code around the failed hunk.

    python -m scripts.patch --response RESPONSE_JSON [--context CONTEXT_JSON] --diff OUT_DIFF --record OUT_JSON
        [--repo-cache DIR --repo-url URL --repo OWNER/NAME --commit SHA]
"""
import argparse
import difflib
import re
import sys
from pathlib import Path

from unidiff import PatchSet

from scripts import apply
from scripts import repos as repos_module
from scripts.common import instance_log, read_json, write_json_atomic, write_text_atomic

# A problem that the apply check can still get past, by placing the hunks by their content.
UNREADABLE_HEADER = "cannot read the hunk header"
HUNK_HEADER = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)")
GIT_HEADER_PREFIXES = (
    "diff --git ", "index ", "new file mode ", "deleted file mode ", "old mode ", "new mode ",
    "similarity index ", "dissimilarity index ", "rename from ", "rename to ",
    "copy from ", "copy to ", "Binary files ",
)
# Git headers that make sense in a file section that has no hunks.
NO_HUNK_HEADER_PREFIXES = ("new file mode ", "deleted file mode ", "old mode ", "rename from ", "copy from ")
FENCE_OPEN = re.compile(r"( {0,3})(`{3,}|~{3,})([^`]*)")
PATCH_BLOCK = re.compile(r"<patch>(.*?)(?:</patch>|\Z)", re.DOTALL)
# What some models print when they stop: <|endoftext|>, <|im_end|>, </s>.
END_TOKEN = re.compile(r"(?:<\|[\w.-]{1,40}\|>|</s>)\Z")
LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
# Search/replace edit blocks: "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE" on lines of their own.
EDIT_START = re.compile(r"\s*<{7} ?SEARCH\s*")
EDIT_DIVIDER = re.compile(r"\s*={7}\s*")
EDIT_END = re.compile(r"\s*>{7} ?REPLACE\s*")
FENCE_LINE = re.compile(r"\s*(`{3,}|~{3,})[\w+.-]*\s*")
# A path alone on its line, perhaps in backticks or bold, after a heading mark, before a colon.
PATH_LINE = re.compile(r"[#*`\s]*(?:\./)?([^\s`*]+?)[`*:\s]*")


# ---------------------------------------------------------------- reading diff lines

def split_lines(text):
    """Lines of text, each with its own line ending (\\n, \\r\\n or \\r) kept."""
    return LINE.findall(text)


def stated_counts(match):
    """(old, new) line counts a parsed hunk header announces; a missing count means 1."""
    return int(match.group(2) or 1), int(match.group(4) or 1)


def line_weight(line):
    """How many (old, new) lines one hunk body line stands for."""
    if line.startswith("+"):
        return 0, 1
    if line.startswith("-"):
        return 1, 0
    if line.startswith("\\"):
        return 0, 0
    return 1, 1  # a context line, or an empty line standing for one


def count_lines(body):
    old = new = 0
    for line in body:
        old_step, new_step = line_weight(line)
        old += old_step
        new += new_step
    return old, new


def is_body_line(line):
    return line == "" or line[0] in " +-\\"


def is_file_header(line):
    return line.startswith(GIT_HEADER_PREFIXES) or line.startswith(("--- ", "+++ "))


def starts_diff(lines, index):
    line = lines[index]
    if line.startswith("diff --git "):
        return True
    return line.startswith("--- ") and index + 1 < len(lines) and lines[index + 1].startswith("+++ ")


def hunk_body_end(lines, header_index):
    """Index of the first line after the body of the hunk whose header is lines[header_index].

    The body runs over lines starting with ' ', '+', '-', '\\' or empty ones. The header's
    counts are not trusted to end it, since models often get them wrong; they only decide
    whether a '--- '/'+++ ' pair is a removed and an added line or the next file's header.
    """
    match = HUNK_HEADER.fullmatch(lines[header_index])
    old_stated, new_stated = stated_counts(match) if match else (0, 0)
    old = new = 0
    index = header_index + 1
    while index < len(lines) and is_body_line(lines[index]):
        line = lines[index]
        if line.startswith("--- ") and index + 1 < len(lines) and lines[index + 1].startswith("+++ "):
            hunk_is_full = old >= old_stated and new >= new_stated
            hunk_follows = index + 2 < len(lines) and lines[index + 2].startswith("@@")
            if hunk_is_full or hunk_follows:
                break
        old_step, new_step = line_weight(line)
        old += old_step
        new += new_step
        index += 1
    return index


def split_spans(lines):
    """Cut diff lines (without line endings) into spans (kind, start, end).

    kind is "hunk" for a hunk header with its body, "header" for one file header line and
    "other" for one line that is neither.
    """
    spans = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("@@"):
            end = hunk_body_end(lines, index)
            spans.append(("hunk", index, end))
            index = end
        else:
            spans.append(("header" if is_file_header(line) else "other", index, index + 1))
            index += 1
    return spans


def header_path(line):
    """The path on a '--- ' or '+++ ' line, without a trailing tab and timestamp."""
    return line[4:].split("\t")[0].strip()


def starts_new_section(section, line):
    if line.startswith("diff --git "):
        return True
    if line.startswith("--- "):
        return bool(section["hunks"]) or section["old_path"] is not None
    if line.startswith("+++ "):
        return bool(section["hunks"]) or section["new_path"] is not None
    return bool(section["hunks"])


def parse_diff(lines):
    """Group diff lines (without line endings) into file sections.

    Returns (sections, stray). Each section is a dict: "start" and "end" (line indexes),
    "old_path" and "new_path" as written on the '--- '/'+++ ' lines (None when absent),
    "git_path" (the b/ path of a 'diff --git' line), "headers" (its header lines) and
    "hunks", a list of (header_index, body_end). stray lists the indexes of lines that are
    neither a file header nor part of a hunk.
    """
    sections, stray = [], []
    section = None
    for kind, start, end in split_spans(lines):
        line = lines[start]
        if kind == "other":
            stray.append(start)
            continue
        if section is None or (kind == "header" and starts_new_section(section, line)):
            section = {"start": start, "end": None, "old_path": None, "new_path": None,
                       "git_path": None, "headers": [], "hunks": []}
            sections.append(section)
        if kind == "hunk":
            section["hunks"].append((start, end))
            continue
        section["headers"].append(line)
        if line.startswith("--- "):
            section["old_path"] = header_path(line)
        elif line.startswith("+++ "):
            section["new_path"] = header_path(line)
        elif line.startswith("diff --git ") and " b/" in line:
            section["git_path"] = line.rpartition(" b/")[2].strip()
    for section, following in zip(sections, sections[1:] + [None]):
        section["end"] = following["start"] if following else len(lines)
    return sections, stray


def section_path(section):
    """The repository path a file section changes, without its a/ or b/ prefix."""
    for path, prefix in ((section["new_path"], "b/"), (section["old_path"], "a/")):
        if path and path != "/dev/null":
            return path[len(prefix):] if path.startswith(prefix) and path != prefix else path
    return section["git_path"] or "(unnamed file)"


def diff_lines(text):
    """The lines of a diff text without line endings (and without the empty string after a final newline)."""
    return [line.rstrip("\r\n") for line in split_lines(text)]


# ---------------------------------------------------------------- extraction

def strip_end_tokens(text):
    """Text without the end-of-text tokens (and the whitespace after them) it ends with."""
    while True:
        trimmed = text.rstrip()
        token = END_TOKEN.search(trimmed[-48:])
        if token is None:
            return text
        text = trimmed[: len(trimmed) - len(token.group())]


def diff_from_first_header(raw_lines):
    """The text from the first line that starts a diff to the end, or None."""
    clean = [line.rstrip("\r\n") for line in raw_lines]
    for index in range(len(clean)):
        if starts_diff(clean, index):
            return "".join(raw_lines[index:])
    return None


def patch_tag_candidates(text):
    candidates = []
    for block in PATCH_BLOCK.finditer(text):
        # Some models wrap the diff in a code fence inside the tags; a fence line in
        # column 0 is never a diff line.
        raw_lines = [line for line in split_lines(block.group(1)) if not line.startswith(("```", "~~~"))]
        candidate = diff_from_first_header(raw_lines)
        if candidate:
            candidates.append(candidate)
    return candidates


def is_fence_close(line, indent, marker):
    line = line.rstrip()
    if not line.startswith(indent):
        return False
    rest = line[len(indent):]
    return len(rest) >= len(marker) and rest == marker[0] * len(rest)


def fence_candidates(raw_lines):
    """Diffs inside fenced code blocks (```diff, ```patch, or any fence holding a diff)."""
    candidates = []
    index = 0
    while index < len(raw_lines):
        opening = FENCE_OPEN.fullmatch(raw_lines[index].rstrip())
        if opening is None:
            index += 1
            continue
        indent, marker = opening.group(1), opening.group(2)
        # The closing fence must sit exactly where the opening one does: a diff context
        # line ' ```' (a fence in the changed file) must not end the block.
        end = index + 1
        while end < len(raw_lines) and not is_fence_close(raw_lines[end], indent, marker):
            end += 1
        candidate = diff_from_first_header(raw_lines[index + 1:end])
        if candidate:
            candidates.append(candidate)
        index = end + 1
    return candidates


def diff_continues(lines, index):
    while index < len(lines) and lines[index] == "":
        index += 1
    return index < len(lines) and (lines[index].startswith("@@") or starts_diff(lines, index))


def bare_diff_end(lines, start):
    """Index just past a diff written straight into the prose, starting at lines[start].

    It ends at the first line that cannot belong to a diff, or at a blank line once the
    current hunk has all its stated lines and no more diff follows: that blank line parts
    the diff from the prose, which may well begin with '- ' or '+ '.
    """
    old_left = new_left = 0
    index = start
    while index < len(lines):
        line = lines[index]
        in_hunk = old_left > 0 or new_left > 0
        if line.startswith("@@"):
            match = HUNK_HEADER.fullmatch(line)
            old_left, new_left = stated_counts(match) if match else (0, 0)
        elif line == "" and not in_hunk and not diff_continues(lines, index + 1):
            break
        elif is_file_header(line) and not in_hunk:
            old_left = new_left = 0
        elif is_body_line(line):
            old_step, new_step = line_weight(line)
            old_left -= old_step
            new_left -= new_step
        else:
            break
        index += 1
    return index


def bare_candidates(raw_lines):
    clean = [line.rstrip("\r\n") for line in raw_lines]
    candidates = []
    index = 0
    while index < len(clean):
        if starts_diff(clean, index):
            end = bare_diff_end(clean, index)
            candidates.append("".join(raw_lines[index:end]))
            index = end
        else:
            index += 1
    return candidates


def merge_candidates(candidates):
    """One diff from several candidate diffs found in one answer.

    Models split a change over several blocks, or show an attempt and then a corrected
    one. Each file's sections come from the last candidate that touches the file; files
    keep the order in which they first appear.
    """
    if len(candidates) == 1:
        return candidates[0]
    latest_sections = {}
    for candidate in candidates:
        raw_lines = split_lines(candidate)
        sections, _ = parse_diff([line.rstrip("\r\n") for line in raw_lines])
        from_this_candidate = {}
        for section in sections:
            text = "".join(raw_lines[section["start"]:section["end"]])
            from_this_candidate.setdefault(section_path(section), []).append(text)
        # Assigning to an existing key keeps its place, so files stay in order of first appearance.
        latest_sections.update(from_this_candidate)
    pieces = [text for texts in latest_sections.values() for text in texts]
    return "".join(piece if piece.endswith(("\n", "\r")) else piece + "\n" for piece in pieces[:-1]) + pieces[-1]


def extract_diff(answer):
    """Find the diff in a model's answer: (diff text, source) or (None, None).

    source is "patch_tag" (<patch>...</patch>, the closing tag may be missing), "fence"
    (a fenced code block) or "bare" (a diff written straight into the text), tried in that
    order. The text is returned as found, line endings included; see normalise().
    """
    if not isinstance(answer, str):
        return None, None
    text = strip_end_tokens(answer)
    candidates = patch_tag_candidates(text)
    if candidates:
        return merge_candidates(candidates), "patch_tag"
    raw_lines = split_lines(text)
    for source, find in (("fence", fence_candidates), ("bare", bare_candidates)):
        candidates = find(raw_lines)
        if candidates:
            return merge_candidates(candidates), source
    return None, None


# ---------------------------------------------------------------- normalisation

def add_fix(fixes, name):
    if name not in fixes:
        fixes.append(name)


def fix_hunk(header, body):
    """The hunk's lines (header first) with blank context restored and counts recounted, and the fixes made."""
    match = HUNK_HEADER.fullmatch(header)
    if match is None:
        return [header] + body, []  # no line numbers to recount from; validate() reports it
    fixes = []
    blank_tail = 0
    while blank_tail < len(body) and body[-1 - blank_tail] == "":
        blank_tail += 1
    core = body[: len(body) - blank_tail]
    if "" in core:
        core = [" " if line == "" else line for line in core]
        add_fix(fixes, "blank_context_lines")
    old, new = count_lines(core)
    old_stated, new_stated = stated_counts(match)
    # Blank lines that end a hunk are context lines only if the header counts them.
    missing = old_stated - old
    if 0 < missing <= blank_tail and missing == new_stated - new:
        core += [" "] * missing
        old, new = old_stated, new_stated
        blank_tail -= missing
        add_fix(fixes, "blank_context_lines")
    if blank_tail:
        add_fix(fixes, "stray_blank_lines")
    if (old, new) != (old_stated, new_stated):
        header = f"@@ -{match.group(1)},{old} +{match.group(3)},{new} @@{match.group(5)}"
        add_fix(fixes, "hunk_counts")
    return [header] + core, fixes


def normalise(text):
    """Repair what models commonly get wrong in a diff: (normalised text, fixes made).

    Line endings become LF, the text ends with a newline, anything after the last hunk is
    dropped, empty lines inside a hunk become the context lines they stand for, hunk
    headers get the line counts of their bodies, hunks that change nothing go, and paths get
    their a/ and b/ prefixes. fixes names each kind of change made: "line_endings",
    "trailing_newline", "trailing_junk", "blank_context_lines", "stray_blank_lines",
    "hunk_counts", "context_only_hunks", "path_prefixes".
    """
    fixes = []
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        add_fix(fixes, "line_endings")
    lines = text.split("\n")
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    output = []
    end_of_last_hunk = None
    for kind, start, end in split_spans(lines):
        if kind != "hunk":
            output.extend(lines[start:end])
            continue
        hunk_lines, hunk_fixes = fix_hunk(lines[start], lines[start + 1:end])
        output.extend(hunk_lines)
        for name in hunk_fixes:
            add_fix(fixes, name)
        end_of_last_hunk = len(output)
    if end_of_last_hunk is not None and end_of_last_hunk < len(output):
        del output[end_of_last_hunk:]
        add_fix(fixes, "trailing_junk")
    elif not ends_with_newline:
        add_fix(fixes, "trailing_newline")
    output, dropped = without_context_only_hunks(output)
    if dropped:
        add_fix(fixes, "context_only_hunks")
    if add_path_prefixes(output):
        add_fix(fixes, "path_prefixes")
    return "".join(line + "\n" for line in output), fixes


def without_context_only_hunks(lines):
    """(lines without the hunks that change no line, and files left with no hunk; whether any
    went). Models show code that way; git apply calls such a hunk a corrupt patch."""
    sections, _ = parse_diff(lines)
    drop = set()
    for section in sections:
        empty = [(start, end) for start, end in section["hunks"]
                 if not any(line[:1] in ("+", "-") for line in lines[start + 1:end])]
        if empty and len(empty) == len(section["hunks"]):
            drop.update(range(section["start"], section["end"]))
        for start, end in empty:
            drop.update(range(start, end))
    if not drop or all(start in drop for section in sections for start, _ in section["hunks"]):
        return lines, False  # nothing to drop, or nothing would be left: validate() says so
    return [line for index, line in enumerate(lines) if index not in drop], True


def missing_prefixes(section):
    """(old path lacks a/, new path lacks b/) for a section's --- and +++ paths."""
    old, new = section["old_path"], section["new_path"]
    real_old = old is not None and old != "/dev/null" and not is_absolute(old)
    real_new = new is not None and new != "/dev/null" and not is_absolute(new)
    if real_old and real_new and old == new:
        return True, True  # the same path on both sides: written without prefixes
    return real_old and not old.startswith("a/"), real_new and not new.startswith("b/")


def add_path_prefixes(lines):
    """Give the --- and +++ paths (and the diff --git line) the a/ and b/ prefixes git wants,
    in place; True if any was missing. Without them `git apply` and `patch -p1` strip the
    first folder of the path."""
    changed = False
    for section in parse_diff(lines)[0]:
        old_missing, new_missing = missing_prefixes(section)
        if not (old_missing or new_missing):
            continue
        changed = True
        first_hunk = section["hunks"][0][0] if section["hunks"] else section["end"]
        for index in range(section["start"], first_hunk):
            line = lines[index]
            if line.startswith("--- ") and old_missing:
                lines[index] = "--- a/" + line[4:].lstrip()
            elif line.startswith("+++ ") and new_missing:
                lines[index] = "+++ b/" + line[4:].lstrip()
            elif line.startswith("diff --git ") and not line.startswith("diff --git a/"):
                old = inner_path(section["old_path"], "a/", old_missing)
                new = inner_path(section["new_path"], "b/", new_missing)
                lines[index] = f"diff --git a/{old or new} b/{new or old}"
    return changed


def inner_path(path, prefix, missing):
    """The repository path of a --- or +++ path as written; None for /dev/null or none."""
    if path is None or path == "/dev/null":
        return None
    return path if missing else path[len(prefix):]


# ---------------------------------------------------------------- validation

def quoted(line, limit=60):
    return repr(line if len(line) <= limit else line[:limit] + "...")


def is_absolute(path):
    return path.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:[\\/]", path) is not None


def path_problems(section, name):
    problems = []
    if section["old_path"] == section["new_path"] == "/dev/null":
        problems.append(f"{name}: both the --- and the +++ path are /dev/null")
    for path, prefix, side in ((section["old_path"], "a/", "---"), (section["new_path"], "b/", "+++")):
        if path is None or path == "/dev/null":
            continue
        inner = path[len(prefix):] if path.startswith(prefix) else path
        if is_absolute(inner):
            problems.append(f"{name}: the {side} path {path!r} is absolute")
            continue
        if not path.startswith(prefix):
            problems.append(f"{name}: the {side} path {path!r} lacks the {prefix} prefix")
        if ".." in inner.replace("\\", "/").split("/"):
            problems.append(f"{name}: the {side} path {path!r} contains '..'")
        if not inner:
            problems.append(f"{name}: the {side} path {path!r} names no file")
    return problems


def hunk_problems(lines, start, end, name, number):
    header, body = lines[start], lines[start + 1:end]
    match = HUNK_HEADER.fullmatch(header)
    if match is None:
        return [f"{name} hunk {number}: {UNREADABLE_HEADER} {quoted(header)}"]
    problems = []
    if "" in body:
        problems.append(f"{name} hunk {number}: line {start + 2 + body.index('')} is empty "
                        "(a context line needs its leading space)")
    old, new = count_lines(body)
    old_stated, new_stated = stated_counts(match)
    if (old, new) != (old_stated, new_stated):
        problems.append(f"{name} hunk {number}: the header announces {old_stated} old and {new_stated} "
                        f"new lines but the body has {old} and {new}")
    return problems


def unidiff_problems(text):
    """Problems unidiff finds, including lines it reads differently from this module's parser."""
    try:
        patch_set = PatchSet(text)
    except Exception as error:  # unidiff is fed arbitrary model output; its failure is a verdict
        return [f"unidiff cannot parse the diff: {error}"]
    # unidiff skips lines it does not expect, so compare what it read with what is there.
    stats = patch_stats(text)
    read_by_unidiff = (len(patch_set), sum(len(f) for f in patch_set),
                       sum(f.added for f in patch_set), sum(f.removed for f in patch_set))
    read_here = (len(parse_diff(diff_lines(text))[0]), stats["hunks"], stats["lines_added"], stats["lines_removed"])
    if read_by_unidiff != read_here:
        return [f"unidiff reads (files, hunks, added, removed) = {read_by_unidiff}, not {read_here}"]
    return []


def validate(text):
    """Problems that make text unusable as a SWE-bench model_patch; an empty list means valid.

    The text must be a unified diff of at least one file with at least one hunk that
    changes a line; every hunk header must parse and match its body; paths must be
    relative, with a/ and b/ prefixes (or /dev/null), and must not contain '..'.
    """
    if not text.strip():
        return ["the patch is empty"]
    lines = diff_lines(text)
    sections, stray = parse_diff(lines)
    if not sections:
        return ["no file header ('--- a/...' and '+++ b/...') was found"]
    problems = []
    if stray:
        problems.append(f"{len(stray)} line(s) belong to no file header or hunk, the first is line "
                        f"{stray[0] + 1}: {quoted(lines[stray[0]])}")
    changed_lines = 0
    for section in sections:
        name = section_path(section)
        problems += path_problems(section, name)
        if section["hunks"] and (section["old_path"] is None or section["new_path"] is None):
            problems.append(f"{name}: the hunks lack the '--- a/...' and '+++ b/...' lines")
        if not section["hunks"] and not any(line.startswith(NO_HUNK_HEADER_PREFIXES) for line in section["headers"]):
            problems.append(f"{name}: the file header is followed by no hunk")
        for number, (start, end) in enumerate(section["hunks"], 1):
            problems += hunk_problems(lines, start, end, name, number)
            changed_lines += sum(1 for line in lines[start + 1:end] if line[:1] in ("+", "-"))
    if changed_lines == 0:
        problems.append("no hunk adds or removes a line")
    if not problems:
        problems += unidiff_problems(text)
    return problems


def cut_off_problem(answer, diff_text):
    """A problem sentence when the answer was cut off inside the extracted diff, else None.

    An answer stopped by a token limit ends without a newline, inside an unfinished hunk or
    file header. Recounting that hunk would pass half a change off as a whole one.
    """
    if not isinstance(answer, str) or not diff_text or answer.endswith(("\n", "\r")):
        return None
    if strip_end_tokens(answer) != answer:
        return None  # the model printed its end token: it stopped by itself
    last_line = split_lines(answer)[-1]
    if not diff_text.endswith(last_line):
        return None  # the diff that was kept does not run to the end of the answer
    lines = diff_lines(diff_text)
    kind, start, end = split_spans(lines)[-1]
    sections, _ = parse_diff(lines)
    name = section_path(sections[-1]) if sections else "(unnamed file)"
    if kind == "header":
        return f"{name}: the answer stops inside the file header, at {quoted(lines[start])}; it was cut off"
    if kind != "hunk":
        return None
    match = HUNK_HEADER.fullmatch(lines[start])
    if match is None:
        return f"{name}: the answer stops inside the hunk header {quoted(lines[start])}; it was cut off"
    old_stated, new_stated = stated_counts(match)
    old, new = count_lines(lines[start + 1:end])
    if old < old_stated or new < new_stated:
        return (f"{name}: the answer stops in the middle of the hunk {quoted(lines[start])} "
                f"({old} of {old_stated} old and {new} of {new_stated} new lines); it was cut off")
    return None


def patch_stats(text):
    """files (paths without a/ b/), hunks, lines_added and lines_removed of a diff text."""
    lines = diff_lines(text)
    sections, _ = parse_diff(lines)
    files, hunks, added, removed = [], 0, 0, 0
    for section in sections:
        path = section_path(section)
        if path not in files:
            files.append(path)
        for start, end in section["hunks"]:
            hunks += 1
            body = lines[start + 1:end]
            added += sum(1 for line in body if line.startswith("+"))
            removed += sum(1 for line in body if line.startswith("-"))
    return {"files": files, "hunks": hunks, "lines_added": added, "lines_removed": removed}


# ---------------------------------------------------------------- search/replace edits

def edit_path(lines, start, previous):
    """The file an edit block starting at lines[start] changes: the nearest line above that
    is not blank or a code fence, or the previous block's file when that line ends a block."""
    index = start - 1
    while index >= 0 and (not lines[index].strip() or FENCE_LINE.fullmatch(lines[index])):
        index -= 1
    if index < 0 or EDIT_END.fullmatch(lines[index]):
        return previous
    match = PATH_LINE.fullmatch(lines[index])
    return match.group(1) if match else previous


def find_edits(answer):
    """The edit blocks of an answer as (path, search lines, replace lines), and problems."""
    lines = [line.rstrip("\r") for line in answer.split("\n")]
    edits, problems, index, path = [], [], 0, None
    while index < len(lines):
        if not EDIT_START.fullmatch(lines[index]):
            index += 1
            continue
        path = edit_path(lines, index, path)
        divider = next((i for i in range(index + 1, len(lines)) if EDIT_DIVIDER.fullmatch(lines[i])), len(lines))
        end = next((i for i in range(divider + 1, len(lines)) if EDIT_END.fullmatch(lines[i])), None)
        if end is None:
            problems.append(f"edit {len(edits) + 1}: the block is not closed with '=======' and '>>>>>>> REPLACE'")
            break
        if path is None:
            problems.append(f"edit {len(edits) + 1}: no file path on the line above '<<<<<<< SEARCH'")
        else:
            edits.append((path, lines[index + 1:divider], lines[divider + 1:end]))
        index = end + 1
    return edits, problems


def find_lines(lines, search):
    """Index where the run of lines `search` starts in lines (which keep their endings), or
    None. Exact first; then ignoring trailing whitespace, which models often drop."""
    for clean in (lambda line: line.rstrip("\r\n"), lambda line: line.rstrip()):
        wanted = [clean(line) for line in search]
        have = [clean(line) for line in lines]
        for start in range(len(lines) - len(search) + 1):
            if have[start:start + len(search)] == wanted:
                return start
    return None


def file_diff(path, old_lines, new_lines, first_line, created):
    """A git-style unified diff of one file; hunk line numbers are shifted for an excerpt
    that starts at first_line."""
    shift = first_line - 1
    headers = [f"diff --git a/{path} b/{path}\n"]
    headers += ["new file mode 100644\n", "--- /dev/null\n"] if created else [f"--- a/{path}\n"]
    headers.append(f"+++ b/{path}\n")
    body = []
    for line in list(difflib.unified_diff(old_lines, new_lines, n=3))[2:]:
        match = HUNK_HEADER.fullmatch(line.rstrip("\n"))
        if match and shift:
            old_start, new_start = int(match.group(1)) + shift, int(match.group(3)) + shift
            line = f"@@ -{old_start},{match.group(2) or 1} +{new_start},{match.group(4) or 1} @@\n"
        body.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(headers + body) if body else ""


def edits_to_diff(edits, files, missing="is not among the context files"):
    """Apply edits to files ({path: context file entry}) and return (diff text, problems).

    An edit whose SEARCH part is not in its file, or whose file is not in files (it
    `missing`), is a problem; an empty SEARCH part creates a file that does not exist.
    """
    current, created, problems = {}, set(), []
    for number, (path, search, replace) in enumerate(edits, 1):
        name = f"edit {number} ({path})"
        if path not in current:
            if path in files:
                current[path] = split_lines(files[path]["content"])
            elif not any(line.strip() for line in search):
                current[path] = []
                created.add(path)
            else:
                problems.append(f"{name}: the file {missing}, so the edit cannot be applied")
                continue
        lines = current[path]
        if not any(line.strip() for line in search):
            if path in created and not lines:
                lines.extend(line + "\n" for line in replace)
            else:
                problems.append(f"{name}: the SEARCH part is empty but the file exists")
            continue
        start = find_lines(lines, search)
        if start is None:
            problems.append(f"{name}: the SEARCH part is not in the file; it begins {quoted(search[0])}")
            continue
        end = start + len(search)
        new = [line + "\n" for line in replace]
        if new and not lines[end - 1].endswith("\n"):
            new[-1] = new[-1][:-1]  # the file had no final newline: keep it that way
        lines[start:end] = new
    diffs = []
    for path, lines in current.items():
        old = [] if path in created else split_lines(files[path]["content"])
        first_line = 1 if path in created else files[path].get("first_line", 1)
        diffs.append(file_diff(path, old, lines, first_line, path in created))
    text = "".join(diffs)
    if not text and not problems:
        problems.append("the edits change nothing")
    return text, problems


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
        "answer": "response", "repair_attempts": [],
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


# ---------------------------------------------------------------- self-repair

def needs_repair(record):
    return record["status"] == "invalid" or bool(record["syntax_errors"])


def rank(record):
    """Which of two verdicts keeps its patch: valid and compiling, valid, invalid, empty."""
    if record["status"] == "valid":
        return 2 if record["syntax_errors"] else 3
    return 1 if record["status"] == "invalid" else 0


def render_spots(spots, repository, line_numbers):
    """The file excerpts of a repair request, each file's text read at the base commit if need be."""
    unread = sorted({s["path"] for s in spots if s["text"] is None})
    texts = apply.read_texts(repository, unread) if unread and repository is not None else {}
    blocks = []
    for s in spots:
        text = s["text"] if s["text"] is not None else texts.get(s["path"])
        if text is None:
            continue
        lines = text.split("\n")
        around = s["line"] - 1 if s["line"] else 0
        if any(line.strip() for line in s["hint"]):
            around = apply.best_line(lines, s["hint"])
        where = "after your patch" if s["after"] else "at the base commit"
        block = f"{s['path']} {where}:\n" + apply.excerpt(s["path"], text, around, line_numbers, span=len(s["hint"]))
        if block not in blocks:
            blocks.append(block)
    return blocks[:6]


def repair_request(record, blocks, edits):
    """The user message that asks the model to mend its answer."""
    if record["reason"] == "does_not_apply":
        parts = ["Your patch does not apply to the repository at its base commit. SWE-bench tried "
                 "`git apply`, `git apply --reject` and `patch --fuzz=5`:", apply.clip(record["apply_error"] or "", 1500)]
    elif record["status"] == "valid":
        parts = ["Your patch applies, but a Python file it changes no longer compiles:"]
    elif record["status"] == "invalid":
        parts = ["The patch in your answer cannot be used:"]
    else:
        parts = ["Your answer holds no patch."]
    parts += [f"- {problem}" for problem in record["problems"] + record["syntax_errors"]]
    if blocks:
        parts += ["The code as it is:", *blocks]
    if edits:
        parts.append("Answer with all your edit blocks again, every change and not only the ones that failed, each "
                     "SEARCH part copied exactly, whole lines with their indentation, from the files as they are.")
    else:
        parts.append("Answer with the whole corrected patch, every change and not only the part that failed, as one "
                     "unified diff between <patch> and </patch>, with `--- a/path` and `+++ b/path` lines and hunk "
                     "headers whose line numbers and counts match the files as they are.")
    return "\n\n".join(parts)


def self_repair(first, response, prompt, context, repository, repair, folder, log):
    """Ask the model to mend its answer, up to repair["attempts"] times; (patch text, record) of
    the best answer, with every attempt recorded in record["repair_attempts"] and its prompt and
    answer kept as repair-N.prompt.json and repair-N.response.json in folder."""
    from scripts import generate
    from scripts.tokens import count_tokens, tokenizer_of

    best_text, best, spots = first
    latest, answer, attempts = best, response["answer"], []
    messages = list(prompt["messages"])
    edits = prompt.get("template") == "search_replace" or best["source"] == "search_replace"
    tokenizer = tokenizer_of(prompt.get("token_counter"))
    for number in range(1, repair["attempts"] + 1):
        if not (needs_repair(latest) or (number > 1 and latest["status"] == "empty")):
            break
        request = repair_request(latest, render_spots(spots, repository, not edits), edits)
        messages += [{"role": "assistant", "content": answer or ""}, {"role": "user", "content": request}]
        repair_prompt = {"instance_id": response["instance_id"], "template": f"{prompt.get('template', 'prompt')}+repair",
                         "messages": list(messages),
                         "tokens": sum(count_tokens(m["content"], tokenizer) for m in messages),
                         "token_counter": prompt.get("token_counter") or "estimate: 1 token per 4 characters"}
        log(f"repair {number}: asking {repair['provider']} to mend: {'; '.join(latest['problems'] + latest['syntax_errors'])[:300]}")
        reply = generate.generate(repair_prompt, {"instance_id": response["instance_id"]}, repair["provider"],
                                  repair["model"], repair["settings"], log=log)
        write_json_atomic(Path(folder) / f"repair-{number}.prompt.json", repair_prompt)
        write_json_atomic(Path(folder) / f"repair-{number}.response.json", reply)
        text, latest, spots = judge(reply, context, repository)
        latest["answer"] = f"repair-{number}"
        attempts.append({"number": number, "prompt": f"repair-{number}.prompt.json",
                         "response": f"repair-{number}.response.json",
                         **{key: latest[key] for key in ("status", "reason", "problems", "applies", "syntax_errors")},
                         "cost_usd": reply["cost_usd"]})
        log(f"repair {number}: {latest['status']} {latest['reason'] or ''}, {reply['cost_usd']:.6f} USD")
        if rank(latest) > rank(best):
            best_text, best = text, latest
        if reply["status"] == "failed":
            break  # a refusal, or a prompt too long: asking again would not help
        answer = reply["answer"]
    best["repair_attempts"] = attempts
    return best_text, best


# ---------------------------------------------------------------- the stage

def describe_verdict(record):
    """The record's status, with its reason, for a log line."""
    return f"{record['status']} ({record['reason']})" if record["reason"] else record["status"]


class PatchStageError(Exception):
    """The job fails and writes nothing; a rerun retries the instance."""


def run_stage(instance_id, response_path, context_path, prompt_path, rows_path, index_path,
              diff_path, record_path, log_path, repos=None, repair=None):
    """The stage for one instance: write patch.diff and patch.json (and repair-N files).

    repos ({"repo_cache", "repo_url"}) turns on the apply check at the instance's base commit;
    repair ({"provider", "model", "settings", "attempts"}) lets the model mend a patch that
    fails. A repository that cannot be fetched, or a request that cannot be made, fails the
    job with PatchStageError."""
    from scripts import costs, generate
    from scripts.select import read_row

    folder = Path(record_path).parent
    for stale in folder.glob("repair-*.json"):
        stale.unlink()
    with instance_log(log_path, instance_id) as log:
        repository = None
        if repos is not None:
            row = read_row(rows_path, index_path, instance_id)
            repository = apply.Repository(repos["repo_cache"], repos["repo_url"], row["repo"], row["base_commit"])
        response = read_json(response_path)
        context = read_json(context_path) if context_path else None
        try:
            first = judge(response, context, repository)
            text, record, _ = first
            if repair and repair["attempts"] and needs_repair(record):
                text, record = self_repair(first, response, read_json(prompt_path), context, repository, repair,
                                           folder, log)
        except repos_module.RepoError as error:
            message = (f"{instance_id}: cannot check the patch at {repository.repo}@{repository.commit}: "
                       f"{str(error).rstrip('.')}. To fix it, set repo_url (and repo_cache) to where the repository can be fetched, or "
                       f"apply_check=false to skip the check (log: {log_path})")
            log(f"error: {message}")
            raise PatchStageError(message) from None
        except (generate.GenerationFailed, costs.BudgetSpent) as error:
            message = (f"{instance_id}: self-repair could not ask the model: {error} "
                       f"(repair_attempts=0 turns self-repair off; log: {log_path})")
            log(f"error: {message}")
            raise PatchStageError(message) from None
        write_text_atomic(diff_path, text)
        write_json_atomic(record_path, record)
        applied = {True: f", applies ({record['apply_attempt'] or 'repaired'})", False: ", does not apply",
                   None: ""}[record["applies"]]
        log(f"patch {describe_verdict(record)}{applied}{', from ' + record['answer'] if record['answer'] != 'response' else ''}")
    return record


def run(response_path, diff_path, record_path, context_path=None, repository=None):
    """Read response.json (and context.json), write patch.diff and patch.json; return the record."""
    response = read_json(response_path)
    patch_text, record = make_patch(response, read_json(context_path) if context_path else None, repository)
    write_text_atomic(diff_path, patch_text)
    write_json_atomic(record_path, record)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description="Extract, repair and check the patch in a model's answer.")
    parser.add_argument("--response", required=True, help="response.json written by the generate stage")
    parser.add_argument("--context", help="context.json, whose files search/replace edits are applied to")
    parser.add_argument("--diff", required=True, help="where to write patch.diff")
    parser.add_argument("--record", required=True, help="where to write patch.json")
    parser.add_argument("--repo-cache", help="with --repo-url, --repo and --commit: check that the patch applies")
    parser.add_argument("--repo-url", default=repos_module.DEFAULT_URL)
    parser.add_argument("--repo", help="owner/name of the repository")
    parser.add_argument("--commit", help="the base commit")
    args = parser.parse_args(argv)
    repository = None
    if args.repo_cache:
        if not (args.repo and args.commit):
            parser.error("--repo-cache needs --repo and --commit")
        repository = apply.Repository(args.repo_cache, args.repo_url, args.repo, args.commit)
    try:
        record = run(args.response, args.diff, args.record, args.context, repository)
    except repos_module.RepoError as error:
        sys.exit(f"patch: cannot check the patch: {error}")
    print(f"{record['instance_id']}: patch {describe_verdict(record)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

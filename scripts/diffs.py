"""The diff text model of the patch stage: read a unified diff line by line, find it in a model's
answer, normalise what is safe to normalise, and say what is wrong with it."""
import re

from unidiff import PatchSet

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
    for section, following in zip(sections, sections[1:] + [None], strict=False):
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


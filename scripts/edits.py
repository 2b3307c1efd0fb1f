"""Search/replace edit blocks (the search_replace prompt style): find them in an answer and apply
them to the files, giving a unified diff."""
import difflib
import re

from scripts.diffs import HUNK_HEADER, quoted, split_lines

# Search/replace edit blocks: "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE" on lines of their own.
EDIT_START = re.compile(r"\s*<{7} ?SEARCH\s*")
EDIT_DIVIDER = re.compile(r"\s*={7}\s*")
EDIT_END = re.compile(r"\s*>{7} ?REPLACE\s*")
FENCE_LINE = re.compile(r"\s*(`{3,}|~{3,})[\w+.-]*\s*")
# A path alone on its line, perhaps in backticks or bold, after a heading mark, before a colon.
PATH_LINE = re.compile(r"[#*`\s]*(?:\./)?([^\s`*]+?)[`*:\s]*")


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


"""Apply check: does a patch apply at the instance's base commit as the SWE-bench harness applies it?

Only the files the patch names are taken from the repository mirror (scripts/repos.py), with
`git archive <commit> -- paths`, into a scratch git repository. There the harness's commands
run in its order, each on the tree the one before left, up to the first that exits with 0
(swebench 4.1.0, harness/run_evaluation.py): so a `git apply --reject` that applied part of
the patch is what `patch` then sees, as in the harness. A patch that applies is rewritten as
the `git diff` of the patched files (its normal form), which plain `git apply` takes.

When none applies, the hunks are re-anchored: each is put where its old lines are in the file
(nearest to where its header says), exactly, then ignoring trailing whitespace, then with the
indentation shifted as a whole, then without up to two context lines at its ends; the result
is again written as a `git diff`. Changed Python files are compiled, and a file that compiled
before the patch but not after is reported.
"""
import os
import re
import subprocess
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path

from scripts import repos
from scripts.layout import file_lines, render_file

HARNESS_COMMANDS = ("git apply --verbose", "git apply --verbose --reject", "patch --batch --fuzz=5 -p1 -i")
# The scratch repository ignores the user's git configuration, and paths are never patterns.
SCRATCH_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_LITERAL_PATHSPECS": "1", "GIT_TERMINAL_PROMPT": "0"}
IDENTITY = ["-c", "user.name=swebench-runner", "-c", "user.email=swebench-runner@localhost", "-c", "commit.gpgsign=false"]
MAX_OUTPUT = 4000  # characters of the commands' output kept in a record
MAX_FUZZ = 2
LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")
# compile() reports some problems as warnings; silencing them changes process-wide state,
# and patch jobs run as threads.
_warnings_lock = threading.Lock()


@dataclass
class Repository:
    """The instance's repository at its base commit; the mirror is fetched on first use."""
    repo_cache: str
    repo_url: str
    repo: str
    commit: str
    _mirror: Path = field(default=None, repr=False)

    @property
    def mirror(self):
        if self._mirror is None:
            self._mirror = repos.ensure_commit(self.repo_cache, self.repo, self.commit, self.repo_url)[0]
        return self._mirror


@dataclass
class FileChange:
    """What a patch does to one file: paths without a/ b/ (None for /dev/null) and its hunks as
    (stated old start or None, body lines without line endings)."""
    old_path: str
    new_path: str
    hunks: list


def run(args, cwd):
    return subprocess.run(args, cwd=cwd, capture_output=True, env=SCRATCH_ENV)


def git(repo, *args):
    result = run(["git", *IDENTITY, *args], repo)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in a scratch repository: "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def clip(text, limit=MAX_OUTPUT):
    return text if len(text) <= limit else "...\n" + text[-limit:]


# ---------------------------------------------------------------- the scratch repository

def base_tree(repository, paths, dest):
    """A git repository at dest whose one commit holds those of paths that exist at the base
    commit, as they are there. Returns {path: bytes} of them."""
    mirror, commit = repository.mirror, repository.commit
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    listed = repos.git("ls-tree", "-r", "-z", "--name-only", commit, "--", *paths, cwd=mirror).stdout
    existing = sorted(set(listed.decode("utf-8", errors="surrogateescape").split("\0")) & set(paths))
    if existing:
        archive = subprocess.run(["git", "archive", "--format=tar", commit, "--", *existing], cwd=mirror,
                                 capture_output=True, env={**repos.GIT_ENV, "GIT_LITERAL_PATHSPECS": "1"})
        untar = subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, capture_output=True)
        if archive.returncode or untar.returncode:
            raise repos.RepoError(f"cannot take {', '.join(existing)} out of commit {commit} of {mirror.name}: "
                                  f"{(archive.stderr or untar.stderr).decode(errors='replace').strip()}")
    git(dest, "init", "-q")
    git(dest, "add", "-A", "-f")
    git(dest, "commit", "-q", "--allow-empty", "--no-verify", "-m", "base")
    return {path: (dest / path).read_bytes() for path in existing if (dest / path).is_file()}


def reset(tree):
    git(tree, "reset", "-q", "--hard")
    git(tree, "clean", "-q", "-f", "-d", "-x")


def apply_as_harness(tree, patch_file):
    """(the first of the harness's commands that applied the patch, or None; their output)."""
    outputs = []
    for command in HARNESS_COMMANDS:
        try:
            result = subprocess.run([*command.split(), str(patch_file)], cwd=tree, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=SCRATCH_ENV)
            output, code = result.stdout.decode(errors="replace"), result.returncode
        except FileNotFoundError as error:
            output, code = f"{error}", 127
        outputs.append(f"$ {command} patch.diff\n{output.rstrip()}")
        if code == 0:
            return command, "\n".join(outputs)
    return None, "\n".join(outputs)


def tree_diff(tree, paths):
    """The changes of the tree to the given paths, as `git diff` writes them."""
    git(tree, "add", "-A", "-f")
    return git(tree, "diff", "--cached", "--no-color", "--no-ext-diff", "--binary", "--", *paths).decode(
        "utf-8", errors="surrogateescape")


# ---------------------------------------------------------------- re-anchoring hunks

def indent_of(line):
    return line[: len(line) - len(line.lstrip())]


def match_at(file_lines, at, old, how):
    """None if old does not match file_lines from at; else the indentation shift (columns)."""
    pairs = zip(file_lines[at:at + len(old)], old, strict=False)  # the slice is shorter at the file's end
    if how == "exact":
        return 0 if all(a == b for a, b in pairs) else None
    if how == "trailing_whitespace":
        return 0 if all(a.rstrip() == b.rstrip() for a, b in pairs) else None
    shift = None
    for have, want in pairs:
        if have.strip() != want.strip():
            return None
        if have.strip():
            step = len(indent_of(have)) - len(indent_of(want))
            if shift is not None and step != shift:
                return None
            shift = step
    return shift or 0


def is_context(line):
    return line == "" or line.startswith(" ")


def trimmed(body, fuzz):
    """(body without up to fuzz context lines at each end, lines dropped at its start), or None
    when that drops no more than fuzz - 1 would."""
    head = 0
    while head < min(fuzz, len(body)) and is_context(body[head]):
        head += 1
    tail = 0
    while tail < min(fuzz, len(body) - head) and is_context(body[-1 - tail]):
        tail += 1
    if fuzz and head < fuzz and tail < fuzz:
        return None
    return body[head:len(body) - tail], head


def old_side(body):
    return [line[1:] for line in body if is_context(line) or line.startswith("-")]


def locate(file_lines, body, expected):
    """(position, body used, indentation shift, how) of the place nearest to expected where the
    hunk's old lines are, trying the strictest matches first; None if they are nowhere."""
    stripped = [line.strip() for line in file_lines]
    for fuzz in range(MAX_FUZZ + 1):
        cut = trimmed(body, fuzz)
        if cut is None:
            continue
        used, head = cut
        old = old_side(used)
        key = next((i for i, line in enumerate(old) if line.strip()), None)
        if key is None:
            continue  # blank lines alone anchor nothing
        candidates = [at for at in range(len(file_lines) - len(old) + 1) if stripped[at + key] == old[key].strip()]
        for how in ("exact", "trailing_whitespace", "indentation"):
            found = [(abs(at - expected - head) if expected is not None else at, at, shift) for at in candidates
                     for shift in [match_at(file_lines, at, old, how)] if shift is not None]
            if found:
                _, at, shift = min(found)
                return at, used, shift, how if fuzz == 0 else "context_fuzz", at - head
    return None


def reindent(line, shift, unit):
    if not line.strip() or shift == 0:
        return line
    if shift > 0:
        return unit * shift + line
    return line[-shift:] if not line[:-shift].strip() else line.lstrip()


def place(current, start, body, delta):
    """Where a hunk goes in the file's lines: (at, lines used, indent shift, how, anchor, expected) or None."""
    if not old_side(body):  # only added lines: they go after the line the header names
        if start is None or start + delta > len(current):
            return None
        return start + delta, body, 0, "exact", start + delta, start + delta
    expected = max(start - 1, 0) + delta if start is not None else None
    found = locate(current, body, expected)
    return None if found is None else (*found, expected)


def splice(current, endings, at, used, shift, eol):
    """The lines (and their endings) that replace current[at:end] once the hunk is applied, and end."""
    unit = "\t" if indent_of(current[at] if at < len(current) else "").startswith("\t") else " "
    new, new_endings, index = [], [], at
    for line in used:
        if is_context(line):
            new.append(current[index])
            new_endings.append(endings[index])
            index += 1
        elif line.startswith("-"):
            index += 1
        else:
            new.append(reindent(line[1:], shift, unit))
            new_endings.append(eol)
    return new, new_endings, index


def apply_hunks(text, hunks):
    """(new text, fix kinds, numbers of the hunks that found no place) for hunks applied by content."""
    lines = LINE.findall(text)
    eol = "\r\n" if sum(line.endswith("\r\n") for line in lines) * 2 > len(lines) else "\n"
    current = [line.rstrip("\r\n") for line in lines]
    endings = [line[len(bare):] for line, bare in zip(lines, current, strict=True)]
    no_final_newline = bool(lines) and not endings[-1]
    fixes, failed, delta = set(), [], 0
    for number, (start, body) in enumerate(hunks, 1):
        marked = any(line.startswith("\\") for line in body)
        body = [line for line in body if not line.startswith("\\")]
        placed = place(current, start, body, delta)
        if placed is None:
            failed.append(number)
            continue
        at, used, shift, how, anchor, expected = placed
        if how != "exact":
            fixes.add(how if how == "context_fuzz" else "context_whitespace")
        if anchor != expected:
            fixes.add("reanchored_hunks")
        new, new_endings, index = splice(current, endings, at, used, shift, eol)
        if index == len(current) and no_final_newline and not marked:
            fixes.add("no_newline_marker")  # git wants "\\ No newline at end of file" there
        current[at:index], endings[at:index] = new, new_endings
        delta += len(new) - (index - at)
    endings = [ending or eol for ending in endings]
    if no_final_newline and endings:
        endings[-1] = ""  # the file ended without a newline: it still does
    return "".join(line + ending for line, ending in zip(current, endings, strict=True)), sorted(fixes), failed


def reanchor(changes, base):
    """({path: new bytes, or None to delete}, fix kinds, failures) for the changes applied by content.

    base is {path: bytes} of the files at the base commit. A failure is (path, hunk number,
    stated start, old lines, sentence)."""
    result, fixes, failures = {}, set(), []
    for change in changes:
        name = change.new_path or change.old_path
        if change.old_path is None:
            text = ""
            if change.new_path in base:
                failures.append((name, 0, None, [], f"{name}: the patch creates it, but it exists at the base commit"))
                continue
        elif change.old_path in result or change.old_path in base:
            data = result[change.old_path] if change.old_path in result else base[change.old_path]
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                failures.append((name, 0, None, [], f"{name}: not UTF-8 text, its hunks cannot be re-anchored"))
                continue
        else:
            failures.append((name, 0, None, [], f"{name}: not in the repository at the base commit"))
            continue
        new_text, file_fixes, failed = apply_hunks(text, change.hunks)
        fixes.update(file_fixes)
        for number in failed:
            start, body = change.hunks[number - 1]
            old = old_side([line for line in body if not line.startswith("\\")])
            where = f" (stated at line {start})" if start is not None else ""
            failures.append((name, number, start, old, f"{name} hunk {number}{where}: its old lines are nowhere in "
                                                       "the file, not even ignoring whitespace or two context lines"))
        if change.old_path and change.old_path != change.new_path:
            result[change.old_path] = None
        if change.new_path:
            result[change.new_path] = new_text.encode("utf-8")
    return result, sorted(fixes), failures


# ---------------------------------------------------------------- Python syntax

def syntax_error(data, path):
    """'path, line N: message' if data is Python that does not compile, else None."""
    try:
        with _warnings_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(data, path, "exec", dont_inherit=True)
    except SyntaxError as error:
        return f"{path}, line {error.lineno}: {error.msg}"
    except ValueError as error:  # null bytes
        return f"{path}: {error}"
    return None


def syntax_errors(before, after):
    """Python files that compiled before the patch (or are new) and do not after it."""
    errors = []
    for path, data in after.items():
        if not path.endswith(".py") or data is None:
            continue
        if path in before and syntax_error(before[path], path):
            continue  # it did not compile before either (Python 2, a template)
        error = syntax_error(data, path)
        if error:
            errors.append(error)
    return errors


# ---------------------------------------------------------------- the check

@dataclass
class Verdict:
    applies: bool
    attempt: str = None  # the harness's command that applied the patch as given
    error: str = None  # the commands' output when none did
    patch: str = None  # the normal form, when it applies
    fixes: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    syntax_errors: list = field(default_factory=list)
    before: dict = field(default_factory=dict)  # {path: bytes} at the base commit
    after: dict = field(default_factory=dict)  # {path: bytes or None} once applied


def paths_of(changes):
    return sorted({p for change in changes for p in (change.old_path, change.new_path) if p})


def read_after(tree, paths):
    return {path: (tree / path).read_bytes() if (tree / path).is_file() else None for path in paths}


def check(repository, text, changes, trust_harness=True):
    """The Verdict on patch text (whose file changes are `changes`) at the repository's base commit.

    trust_harness=False: the text has hunks the harness cannot read, whose garbage `patch` skips
    with exit status 0; whatever the harness does, the hunks are re-anchored."""
    paths = paths_of(changes)
    with tempfile.TemporaryDirectory(prefix="apply-check-") as scratch:
        tree, patch_file = Path(scratch) / "tree", Path(scratch) / "patch.diff"
        before = base_tree(repository, paths, tree)
        patch_file.write_text(text, encoding="utf-8", errors="surrogateescape")
        attempt, output = apply_as_harness(tree, patch_file)
        if attempt and trust_harness:
            after = read_after(tree, paths)
            harness = Verdict(True, attempt, None, tree_diff(tree, paths), before=before, after=after,
                              syntax_errors=syntax_errors(before, after))
            if not (harness.syntax_errors and attempt.startswith("patch")):
                return harness
            # `patch` placed hunks with fuzz and broke a Python file (typically added lines whose
            # indentation was lost): the re-anchored hunks are taken when they do better.
            note = f"\n({attempt} applied it, but then {'; '.join(harness.syntax_errors)}: re-anchored instead)"
            repaired = reanchored(tree, patch_file, changes, before, paths, output + note)
            return repaired if repaired.applies and not repaired.syntax_errors else harness
        if attempt:
            output += "\n(exit status 0, but the hunks it could not read were skipped)"
        return reanchored(tree, patch_file, changes, before, paths, output)


def reanchored(tree, patch_file, changes, before, paths, output):
    """The Verdict of the re-anchored hunks, written as a git diff in the scratch tree."""
    reset(tree)
    after, fixes, failures = reanchor(changes, before)
    if failures:
        return Verdict(False, None, clip(output), failures=failures, before=before)
    for path, data in after.items():
        target = tree / path
        if data is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    normal = tree_diff(tree, paths)
    reset(tree)
    patch_file.write_text(normal, encoding="utf-8", errors="surrogateescape")
    check_run = run(["git", "apply", "--check", str(patch_file)], tree)
    if not normal or check_run.returncode != 0:  # not expected: the repair is not trusted then
        sentence = "the re-anchored hunks change nothing" if not normal else \
            f"the re-anchored patch does not apply: {check_run.stderr.decode(errors='replace').strip()}"
        return Verdict(False, None, clip(output), failures=[(paths[0], 0, None, [], sentence)], before=before)
    return Verdict(True, None, clip(output), normal, fixes, before=before, after=after,
                   syntax_errors=syntax_errors(before, after))


def read_texts(repository, paths):
    """{path: text} of those of paths that exist at the base commit; None for files that are not UTF-8."""
    with tempfile.TemporaryDirectory(prefix="apply-read-") as scratch:
        files = base_tree(repository, paths, Path(scratch) / "tree")
    texts = {}
    for path, data in files.items():
        try:
            texts[path] = data.decode("utf-8")
        except UnicodeDecodeError:
            texts[path] = None
    return texts


# ---------------------------------------------------------------- excerpts for the model

def best_line(lines, wanted):
    """Index of the line most like the first non-blank line of wanted (0 if none)."""
    target = next((line.strip() for line in wanted if line.strip()), "")
    if not target or not lines:
        return 0
    scores = [SequenceMatcher(None, line.strip(), target).quick_ratio() for line in lines]
    return max(range(len(lines)), key=lambda i: (scores[i], -i))


def excerpt(path, text, around, line_numbers=True, radius=15, span=0):
    """The file's lines from radius before `around` (0-based) to radius after it plus span, in
    the prompt's layout."""
    lines = file_lines(text)
    first = max(0, around - radius)
    last = min(len(lines), around + span + radius)
    content = "".join(line + "\n" for line in lines[first:last])
    return render_file({"path": path, "content": content, "first_line": first + 1}, line_numbers)

"""The patch stage with its apply check over the real answers in ../shared/data, and how much
each kind of defect the repair mends.

The SWE-bench repositories are not reachable from here, so each answer is checked against
files rebuilt from what is known of them: the lines its own hunks show, at the lines they
state, and, for SWE-bench Lite instances, the real lines the reference patch shows. Lines
known from neither are filler. So "applies" checks that the diff agrees with itself and with
the reference's lines (hunk order and counts, overlapping hunks, markers, paths), not that
its context is the repository's. Answers whose hunks contradict each other or the
reference's lines at the place they state cannot be rebuilt and are counted apart.

Then each answer whose patch applies gets one defect at a time (wrong hunk counts, moved
hunks, a stale context line, no final newline, no a/ b/ prefixes, trailing whitespace, lost
indentation, headers without line numbers, CRLF line endings) and goes through the stage
again: "mended" means it still applies with exactly the clean patch's effect.

    .venv/bin/python benchmarks/patch_apply.py [--data-dir DIR] [--limit N] [--workers N]
"""
import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))  # run as a plain script, scripts/ is not on the path otherwise

from patch_extraction import DATA_FILES  # noqa: E402  (the same files of real answers)

from scripts import apply, patch  # noqa: E402
from scripts.common import read_jsonl  # noqa: E402

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", re.M)


# ---------------------------------------------------------------- rebuilding the files

def place(known, start, old, strict):
    """Put a hunk's old lines at line `start` of known ({line: text}); False if they contradict it.
    Not strict: lines found together elsewhere among the known ones are a moved hunk, not a contradiction."""
    slots = range(start, start + len(old))
    if all(known.get(n, text) == text for n, text in zip(slots, old, strict=True)):
        known.update(zip(slots, old, strict=True))
        return True
    if not strict:
        texts = [known.get(n) for n in range(1, max(known) + 1)]
        return any(texts[i:i + len(old)] == old for i in range(len(texts) - len(old) + 1))
    return False


def rebuild(text, reference):
    """({path: file text}, None) rebuilt from the diff's hunks (and the reference's), or (None, why)."""
    known, ends, no_newline = defaultdict(dict), {}, set()
    for source, strict in ((reference, True), (text, False)):
        if not source:
            continue
        for change in patch.file_changes(source):
            if change.old_path is None:
                continue
            lines = known[change.old_path]
            for start, body in change.hunks:
                old = apply.old_side([line for line in body if not line.startswith("\\")])
                if start is None or not old:
                    continue
                if not place(lines, max(start, 1), old, strict) and source is text:
                    own = reference is None or change.old_path not in {c.old_path for c in patch.file_changes(reference)}
                    return None, "its hunks contradict each other" if own else "it contradicts the reference's lines"
                # Less context after the change than before it: git takes the hunk to end the file.
                lead = next((i for i, line in enumerate(body) if not apply.is_context(line)), len(body))
                trail = next((i for i, line in enumerate(reversed(body)) if not apply.is_context(line)
                              and not line.startswith("\\")), len(body))
                if trail < lead or "\\ No newline at end of file" in body:
                    ends[change.old_path] = max(ends.get(change.old_path, 0), max(start, 1) + len(old) - 1)
                if "\\ No newline at end of file" in body:
                    no_newline.add(change.old_path)
    files = {}
    for path, lines in known.items():
        last = max(ends.get(path, 0), max(lines) + (0 if path in ends else 3) if lines else 0)
        content = "".join((lines.get(n, f"# line {n} is not known offline") + "\n") for n in range(1, last + 1))
        files[path] = content[:-1] if path in no_newline else content
    return files, None


def repository_for(files, root):
    """An apply.Repository whose base commit holds files, served from root."""
    source = Path(root) / "src" / "bench" / "repo"
    source.mkdir(parents=True)
    subprocess.run([*GIT, "init", "-q"], cwd=source, check=True)
    for path, content in files.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_bytes(content.encode("utf-8", errors="surrogateescape"))
    subprocess.run([*GIT, "add", "-A"], cwd=source, check=True)
    subprocess.run([*GIT, "commit", "-q", "--allow-empty", "-m", "rebuilt"], cwd=source, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True).stdout.strip()
    return apply.Repository(str(Path(root) / "cache"), f"{root}/src/{{repo}}", "bench/repo", commit)


# ---------------------------------------------------------------- defects

def map_hunk_lines(text, change):
    """text with change(line) applied to every body line of every hunk."""
    out, in_hunk = [], False
    for line in text.split("\n"):
        if line.startswith("@@"):
            in_hunk = True
        elif line.startswith(("diff --git", "--- ", "+++ ")) and not line.startswith(("--- a/", "+++ b/")) or \
                line.startswith("diff --git"):
            in_hunk = False
        elif in_hunk and line[:1] in (" ", "-", "+"):
            line = change(line)
        out.append(line)
    return "\n".join(out)


def stale_first_context(text):
    lines, out, fresh = text.split("\n"), [], False
    for line in lines:
        if line.startswith("@@"):
            fresh = True
        elif fresh and line.startswith(" ") and line.strip():
            line, fresh = " # a line the model remembered wrongly", False
        elif fresh and line[:1] in "+-":
            fresh = False
        out.append(line)
    return "\n".join(out)


def dedent(text):
    """Hunks whose every non-blank line is indented by 4 or more lose 4 spaces, as if copied out of context."""
    def hunk_dedent(match):
        body = match.group(0).split("\n")
        header, lines = body[0], body[1:]
        if not all(line[1:].startswith("    ") for line in lines if line[1:].strip()):
            return match.group(0)
        return "\n".join([header] + [line[:1] + line[5:] if line[1:].strip() else line for line in lines])
    return re.sub(r"^@@[^\n]*(?:\n[ +-][^\n]*)+", hunk_dedent, text, flags=re.M)


DEFECTS = {
    "wrong hunk counts": lambda t: HEADER.sub(lambda m: f"@@ -{m.group(1)},{int(m.group(2) or 1) + 2} "
                                                    f"+{m.group(3)},{int(m.group(4) or 1) + 3} @@", t),
    "hunks moved by 7 lines": lambda t: HEADER.sub(lambda m: f"@@ -{int(m.group(1)) + 7},{m.group(2) or 1} "
                                                         f"+{int(m.group(3)) + 7},{m.group(4) or 1} @@", t),
    "stale first context line": stale_first_context,
    "no final newline": lambda t: t.rstrip("\n"),
    "no a/ b/ prefixes": lambda t: re.sub(r"^(--- |\+\+\+ )[ab]/", r"\1", re.sub(r"^diff --git a/(\S+) b/(\S+)",
                                                                           r"diff --git \1 \2", t, flags=re.M),
                                         flags=re.M),
    "trailing whitespace": lambda t: map_hunk_lines(t, lambda line: line + "  " if line[:1] in " -" and line.strip() else line),
    "lost indentation": dedent,
    "headers without line numbers": lambda t: re.sub(r"^@@ [^@]*@@", "@@ @@", t, flags=re.M),
    "CRLF line endings": lambda t: t.replace("\n", "\r\n"),
}


# ---------------------------------------------------------------- measuring

def verdict_of(answer, repository):
    response = {"instance_id": "bench", "status": "ok", "failure_reason": None, "answer": answer}
    return patch.make_patch(response, None, repository)


def measure_one(row, field, references):
    """What the stage makes of one answer: a dict of outcomes."""
    answer = row.get(field)
    text, record = patch.make_patch({"instance_id": row["instance_id"], "status": "ok", "failure_reason": None,
                                     "answer": answer})
    outcome = {"extracted": record["source"] is not None, "parses": record["status"] == "valid",
               "fixes": record["fixes"], "reason": record["reason"], "defects": {}}
    if record["status"] != "valid":
        return outcome
    reference = references.get(row["instance_id"])
    files, why = rebuild(text, reference if reference != text else None)
    if files is None:
        outcome["unbuildable"] = why
        return outcome
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as root:
        repository = repository_for(files, root)
        clean, checked = verdict_of(text, repository)
        outcome["apply"] = checked["apply_attempt"] or ("repaired" if checked["applies"] else checked["reason"])
        outcome["repair_fixes"] = [f for f in checked["fixes"] if f not in record["fixes"]]
        outcome["syntax_errors"] = bool(checked["syntax_errors"])
        if not clean:
            return outcome
        for name, inject in DEFECTS.items():
            broken = inject(text)
            if broken == text:
                continue  # nothing to break in this diff
            mended, judged = verdict_of(broken, repository)
            attempt = judged["apply_attempt"]
            by = "re-anchored" if not attempt else ("text repairs, then " if judged["fixes"] else "") + attempt.split(" -")[0]
            if mended == clean:
                outcome["defects"][name] = f"mended: {by}"
            elif mended:
                outcome["defects"][name] = f"applies, with another effect: {by}"
            else:
                outcome["defects"][name] = f"not mended: {judged['reason']}"
    return outcome


def report(name, description, outcomes, seconds):
    answers = len(outcomes)
    extracted = sum(o["extracted"] for o in outcomes)
    parses = sum(o["parses"] for o in outcomes)
    checked = [o for o in outcomes if "apply" in o]
    print(f"{name}  ({description})")
    print(f"  answers {answers}; yield a patch {extracted}; parse (valid after the text repairs) {parses}")
    print(f"  text repairs among those that parse: {dict(Counter(f for o in outcomes if o['parses'] for f in o['fixes']))}")
    unbuildable = Counter(o["unbuildable"] for o in outcomes if "unbuildable" in o)
    print(f"  files rebuilt for {len(checked)} of {parses}; not rebuilt: {dict(unbuildable) or 0}")
    print(f"  apply check on the rebuilt files: {dict(Counter(o['apply'] for o in checked))}")
    repairs = Counter(f for o in checked for f in o.get("repair_fixes", []))
    if repairs:
        print(f"  repairs the apply check made: {dict(repairs)}")
    print(f"  break Python: {sum(o.get('syntax_errors', False) for o in checked)}")
    by_defect = defaultdict(Counter)
    for o in checked:
        for defect, result in o["defects"].items():
            by_defect[defect][result] += 1
    if by_defect:
        print("  one defect injected into each patch that applies (mended = same effect as the clean patch):")
        for defect in DEFECTS:
            results = by_defect.get(defect)
            if results:
                total = sum(results.values())
                mended = sum(n for r, n in results.items() if r.startswith("mended"))
                detail = ", ".join(f"{r} {n}" for r, n in results.most_common())
                print(f"    {defect:30s} {mended:4d} of {total:4d} mended  [{detail}]")
    print(f"  time: {seconds:.1f} s")
    print()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, help="the first N answers of each file")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    references = {r["instance_id"]: r["patch"] for r in read_jsonl(next(args.data_dir.glob("swebench_lite_test.jsonl")))}
    for pattern, field, description in DATA_FILES:
        for path in sorted(args.data_dir.glob(pattern)):
            rows = read_jsonl(path)[: args.limit]
            started = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                outcomes = list(pool.map(lambda row, field=field: measure_one(row, field, references), rows))
            report(path.name, description, outcomes, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Context: the code a prompt shows the model, within a token budget.

Strategies (the `context` setting) rank candidate files:
  none                        the issue alone
  oracle                      the files the reference patch edits: an upper bound, it uses the answer
  bm25                        BM25 over the repository's source files at base_commit, queried with the issue
  bm25_13K, bm25_27K, bm25_40K  the files of SWE-bench's retrieval datasets, handed over by the select step

fill_budget() then takes whole files in rank order while they fit; the first file that
does not fit contributes the lines around its best match (the lines the reference patch
edits for oracle, the lines sharing the rarest words with the issue otherwise).
Files are counted as the prompt shows them: style-3 blocks with numbered lines.
"""
import functools
import re
from collections import Counter

from scripts import repos
from scripts.common import append_log, fault_line, read_row, write_json_atomic
from scripts.layout import block_units, file_lines
from scripts.settings import RETRIEVAL_DATASETS
from scripts.tokens import (
    DEFAULT_TOKENIZER,
    count_each,
    count_tokens,
    describe,
)

# context_tokens when it is not set: the size of the retrieval set, 13,000 for bm25 (the
# smallest SWE-bench size), no bound for none and oracle (SWE-bench's oracle files are whole).
DEFAULT_LIMITS = {"bm25": 13_000, "bm25_13K": 13_000, "bm25_27K": 27_000, "bm25_40K": 40_000}
# Tokens of the budget kept for the prompt template's own text (the built-in ones take
# under 400); the prompt stage drops trailing files if a longer template needs more.
TEMPLATE_RESERVE = 500
SOURCE_SUFFIXES = frozenset(
    ".py .pyi .pyx .js .jsx .mjs .cjs .ts .tsx .vue .svelte .java .kt .scala .go .rs .c .h .cc .cpp .cxx .hpp"
    " .cs .rb .php .swift .m .lua .pl .sh".split()
)
MAX_SOURCE_BYTES = 1_000_000  # larger files are data or generated code
TEST_WORDS = {"test", "tests", "testing"}
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WORD_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
FOCUS_WINDOW = 5  # lines either side that count towards a line's match when choosing an excerpt


class ContextError(Exception):
    pass


# ---------------------------------------------------------------- text and counting

def is_test_path(path):
    return bool(TEST_WORDS & set(re.split(r"[ _/.]", path.lower())))


def is_source_file(path, size):
    """Files bm25 indexes: source code that is not a test (as SWE-bench's retrieval does)."""
    dot = path.rfind(".")
    return dot > path.rfind("/") and path[dot:].lower() in SOURCE_SUFFIXES and size <= MAX_SOURCE_BYTES \
        and not is_test_path(path)


@functools.cache
def split_identifier(word):
    parts = [p.lower() for p in WORD_PART.findall(word)]
    whole = word.lower()
    return tuple(parts) if parts == [whole] else (whole, *parts)


@functools.cache
def stopwords():
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def code_terms(text):
    """Search terms of code or prose: identifiers, lowercased, and their snake_case and
    camelCase parts, without one-letter terms and common English words."""
    stop = stopwords()
    return [t for word in IDENTIFIER.findall(text) for t in split_identifier(word) if len(t) > 1 and t not in stop]


# ---------------------------------------------------------------- strategies

def no_files(row, settings):
    return [], "the issue alone"


def oracle_files(row, settings):
    from unidiff import PatchSet

    if not row.get("patch"):
        raise ContextError(f"{row['instance_id']}: context=oracle needs the reference patch, and the row has none.")
    edited = {}
    for patched in PatchSet(row["patch"]):
        if patched.is_added_file:
            continue  # nothing to show: the file does not exist at base_commit
        source = patched.source_file
        lines = edited.setdefault(source[2:] if source.startswith("a/") else source, set())
        for hunk in patched:
            lines.update(range(hunk.source_start, hunk.source_start + max(hunk.source_length, 1)))
    mirror, _ = repos.ensure_commit(settings["repo_cache"], row["repo"], row["base_commit"], settings["repo_url"])
    texts = repos.read_files(mirror, row["base_commit"], list(edited))
    candidates = [
        {"path": path, "content": texts[path], "rank": rank, "edited_lines": edited[path],
         "reason": "edited by the reference patch (oracle: an upper bound, it uses the answer)"}
        for rank, path in enumerate((p for p in edited if p in texts), 1)
    ]
    return candidates, "oracle: the files the reference patch edits, at base_commit (an upper bound)"


def bm25_files(row, settings):
    import bm25s

    mirror, _ = repos.ensure_commit(settings["repo_cache"], row["repo"], row["base_commit"], settings["repo_url"])
    tree = repos.list_files(mirror, row["base_commit"])
    texts = repos.read_files(mirror, row["base_commit"], sorted(p for p, (_, size) in tree.items()
                                                               if is_source_file(p, size)))
    paths = list(texts)
    query = code_terms(row["problem_statement"])
    if not paths or not query:
        return [], f"bm25 over {len(paths)} source files at base_commit"
    retriever = bm25s.BM25(method="lucene")
    # A document is its path and its text, as in SWE-bench's retrieval.
    retriever.index([code_terms(f"{path}\n{texts[path]}") for path in paths], show_progress=False)
    scores = retriever.get_scores(query)
    ranked = sorted((i for i in range(len(paths)) if scores[i] > 0), key=lambda i: (-scores[i], paths[i]))
    candidates = [
        {"path": paths[i], "content": texts[paths[i]], "rank": rank, "score": round(float(scores[i]), 4),
         "reason": f"bm25 rank {rank} of {len(paths)} source files, score {scores[i]:.2f}"}
        for rank, i in enumerate(ranked, 1)
    ]
    return candidates, f"bm25 over {len(paths)} source files at base_commit"


def retrieval_files(row, settings):
    record = settings.get("retrieval")
    if not record or record.get("instance_id") != row["instance_id"]:
        raise ContextError(f"{row['instance_id']}: the select step handed over no retrieval files for it.")
    files = record["files"]
    candidates = [
        {"path": f["path"], "content": f["content"], "rank": rank,
         "reason": f"file {rank} of {len(files)} in {record['source']} (its order: README first, then by path)"}
        for rank, f in enumerate(files, 1)
    ]
    return candidates, record["source"]


STRATEGIES = {"none": no_files, "oracle": oracle_files, "bm25": bm25_files,
              **{name: retrieval_files for name in RETRIEVAL_DATASETS}}


# ---------------------------------------------------------------- the budget

def line_focus(candidate, lines, query_terms):
    """How much each line matters: 1 for lines the reference patch edits; otherwise the
    issue's terms on the line, each weighted by how rare it is in the file."""
    if "edited_lines" in candidate:
        return [1.0 if n in candidate["edited_lines"] else 0.0 for n in range(1, len(lines) + 1)]
    matched = [set(code_terms(line)) & query_terms for line in lines]
    lines_with = Counter(term for terms in matched for term in terms)
    return [sum(1 / lines_with[t] for t in terms) for terms in matched]


def best_line(scores):
    """Index of the line whose neighbourhood matches best; the first line when none matches."""
    best, best_index = 0.0, 0
    window = sum(scores[:FOCUS_WINDOW + 1])
    for index in range(len(scores)):
        if window > best:
            best, best_index = window, index
        if index + FOCUS_WINDOW + 1 < len(scores):
            window += scores[index + FOCUS_WINDOW + 1]
        if index - FOCUS_WINDOW >= 0:
            window -= scores[index - FOCUS_WINDOW]
    return best_index


def entry(candidate, lines, first, last, tokens, reason):
    record = {"path": candidate["path"], "content": "".join(line + "\n" for line in lines[first:last]),
              "tokens": tokens, "first_line": first + 1, "rank": candidate["rank"], "reason": reason,
              "truncated": (first, last) != (0, len(lines)), "file_lines": len(lines)}
    if "score" in candidate:
        record["score"] = candidate["score"]
    if first == 0 and last == len(lines):
        record["content"] = candidate["content"]  # whole: keep the file exactly, final newline or not
    return record


def excerpt(candidate, lines, line_tokens, marker_tokens, budget, query_terms, tokenizer):
    """The file's lines around its best match that fit in budget, or None if not even one does."""
    if not lines:
        return None
    anchor = best_line(line_focus(candidate, lines, query_terms))
    first, last = anchor, anchor + 1
    used = marker_tokens + line_tokens[anchor]
    if used > budget:
        return None
    grown = True
    while grown:
        grown = False
        if last < len(lines) and used + line_tokens[last] <= budget:
            used += line_tokens[last]
            last += 1
            grown = True
        if first > 0 and used + line_tokens[first - 1] <= budget:
            first -= 1
            used += line_tokens[first]
            grown = True
    while True:  # the parts' counts add up to the whole in practice; make sure of it
        tokens = count_tokens("".join(block_units(candidate["path"], lines[first:last], first + 1)), tokenizer)
        if tokens <= budget or last - first == 1:
            break
        if anchor - first > last - 1 - anchor:
            first += 1
        else:
            last -= 1
    if tokens > budget:
        return None
    around = "the lines the reference patch edits" if "edited_lines" in candidate else "the lines that best match the issue"
    reason = f"{candidate['reason']}; lines {first + 1}-{last} of {len(lines)}, around {around}"
    return entry(candidate, lines, first, last, tokens, reason)


def fill_budget(candidates, budget, query_terms, tokenizer):
    """Whole files in rank order while they fit, then the best part of the first that does not."""
    files = []
    for candidate in candidates:
        lines = file_lines(candidate["content"])
        counts = count_each(block_units(candidate["path"], lines), tokenizer)
        whole = sum(counts)
        if budget is None or whole <= budget:
            files.append(entry(candidate, lines, 0, len(lines), whole, candidate["reason"]))
            budget = None if budget is None else budget - whole
            continue
        part = excerpt(candidate, lines, counts[1:-1], counts[0] + counts[-1], budget, query_terms, tokenizer)
        if part:
            files.append(part)
        break
    return files


def build_context(row, strategy, settings=None):
    """The context record of one instance. settings: context_tokens (None: the strategy's
    default), tokenizer, repo_cache and repo_url (oracle, bm25), retrieval (the instance's
    record from the select step, bm25_13K/27K/40K)."""
    settings = {"context_tokens": None, "tokenizer": DEFAULT_TOKENIZER, "repo_cache": None, "repo_url": None,
                "retrieval": None, **(settings or {})}
    tokenizer = settings["tokenizer"]
    candidates, source = STRATEGIES[strategy](row, settings)
    limit = settings["context_tokens"] or DEFAULT_LIMITS.get(strategy)
    issue_tokens = count_tokens(row["problem_statement"].strip(), tokenizer)
    files_budget = None if limit is None else max(0, limit - issue_tokens - TEMPLATE_RESERVE)
    files = fill_budget(candidates, files_budget, set(code_terms(row["problem_statement"])), tokenizer)
    file_tokens = sum(f["tokens"] for f in files)
    return {
        "instance_id": row["instance_id"],
        "repo": row["repo"],
        "base_commit": row["base_commit"],
        "strategy": strategy,
        "source": source,
        "problem_statement": row["problem_statement"],
        "files": files,
        "candidates": len(candidates),
        "token_counter": describe(tokenizer),
        "budget": {"context_tokens": limit, "template_reserve": TEMPLATE_RESERVE, "files": files_budget},
        "tokens": {"problem_statement": issue_tokens, "files": file_tokens, "total": issue_tokens + file_tokens},
    }


def run_stage(instance_id, input, output, log_path, settings):
    """The stage as its rule calls it, like every per-instance stage: write output[0], context.json, with the
    strategy and settings of settings (context_settings, rules/paths.smk)."""
    return run(instance_id, input, settings["strategy"], settings, output[0], log_path)


def run(instance_id, input, strategy, settings, out_path, log_path=None):
    """The stage: build the instance's context and write context.json. input is the rule's named
    files: instances and index, and for bm25_13K/27K/40K retrieval and retrieval_index, the
    retrieval records the select step wrote."""
    row = read_row(input["instances"], input["index"], instance_id)
    retrieval = (input["retrieval"], input["retrieval_index"]) if input.get("retrieval") else None
    settings = dict(settings)
    if strategy in ("oracle", "bm25") and not (settings.get("repo_cache") and settings.get("repo_url")):
        raise ContextError(f"context {strategy} needs repo_cache and repo_url")
    if strategy in RETRIEVAL_DATASETS:
        if not retrieval:
            raise ContextError(f"context {strategy} needs the retrieval records of the select step")
        try:
            settings["retrieval"] = read_row(*retrieval, instance_id)
        except KeyError:
            raise ContextError(f"{instance_id} is not in {retrieval[0]}; rerun the select step") from None
    try:
        record = build_context(row, strategy, settings)
    except repos.RepoError as error:
        # The repository could not be fetched (a server that refuses or stops answering): no
        # fault of the instance, a rerun retries it.
        append_log(log_path, f"error: {instance_id}: {error}")
        append_log(log_path, fault_line("repository_unreachable", f"{error}; a rerun retries it"))
        raise
    write_json_atomic(out_path, record)
    names = ", ".join(f["path"] + (" (part)" if f["truncated"] else "") for f in record["files"]) or "no files"
    append_log(log_path, f"context: {instance_id}: {record['tokens']['total']} tokens; {names}")
    return record


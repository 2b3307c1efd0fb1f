"""The repair stage: a patch that does not parse, apply or compile goes back to the model.

Reads the patch stage's verdict (patch.json) and, when it fails, asks the model to mend its
answer up to repair_attempts times, showing the error and the code around the failed hunks.
Writes repair.diff (the patch the predictions take: the best answer's), repair.json (each
attempt's verdict and cost, the verdict kept and whose answer it is; schemas/repair.schema.json)
and the folder repair/ with N.prompt.json and N.response.json of each request made.

Each paid reply is also written at once to repair.paid/ beside them, which is no output of the job: when
the job fails after a reply (a later request, or the apply check, fails), Snakemake deletes the job's
outputs, and the rerun takes the reply from there instead of asking again. A job that finishes removes the
replies it took, which its repair/ then holds.
"""
import hashlib
import json
import shutil
from pathlib import Path

from scripts import apply, costs, generate
from scripts import repos as repos_module
from scripts.common import fault_line, instance_log, read_json, read_row, write_json_atomic, write_text_atomic
from scripts.patch import PatchStageError, describe_verdict, judge

# An empty answer's turn in a repair request: the Anthropic API refuses a message without content, and leaving the
# turn out would put two user messages in a row, which it refuses too.
EMPTY_ANSWER = "(no answer)"


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


def paid_folder(folder):
    """Where the paid replies of the repair requests of folder (an instance's repair/) wait for a job that finishes."""
    return Path(folder).with_name(f"{Path(folder).name}.paid")


def ask_once(repair_prompt, repair, folder, used, log):
    """The reply to a repair request: one paid by an earlier job that did not finish, or a new one, kept in
    paid_folder(folder) before anything else can fail. used: the files of the replies taken, for the job to remove."""
    messages = json.dumps([repair["provider"], repair["model"], repair_prompt["messages"]], sort_keys=True)
    kept = paid_folder(folder) / f"{hashlib.sha256(messages.encode()).hexdigest()[:24]}.json"
    used.append(kept)
    if kept.exists():
        log(f"the reply paid for by an earlier job that did not finish ({kept}): not asked again")
        return read_json(kept)["response"]
    reply = generate.generate(repair_prompt, {"instance_id": repair_prompt["instance_id"]}, repair["provider"],
                              repair["model"], repair["settings"], log=log)
    write_json_atomic(kept, {"prompt": repair_prompt, "response": reply})
    return reply


def self_repair(first, response, prompt, context, repository, repair, folder, log, used):
    """Ask the model to mend its answer, up to repair["attempts"] times; (patch text, record) of
    the best answer, with every attempt recorded in record["attempts"] and its prompt and
    answer kept as N.prompt.json and N.response.json in folder (used: see ask_once)."""
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
        messages += [{"role": "assistant", "content": answer if (answer or "").strip() else EMPTY_ANSWER},
                     {"role": "user", "content": request}]
        repair_prompt = {"instance_id": response["instance_id"], "template": f"{prompt.get('template', 'prompt')}+repair",
                         "messages": list(messages),
                         "tokens": sum(count_tokens(m["content"], tokenizer) for m in messages),
                         "token_counter": prompt.get("token_counter") or "estimate: 1 token per 4 characters"}
        log(f"repair {number}: asking {repair['provider']} to mend: {'; '.join(latest['problems'] + latest['syntax_errors'])[:300]}")
        reply = ask_once(repair_prompt, repair, folder, used, log)
        write_json_atomic(Path(folder) / f"{number}.prompt.json", repair_prompt)
        write_json_atomic(Path(folder) / f"{number}.response.json", reply)
        text, latest, spots = judge(reply, context, repository)
        latest["answer"] = f"repair-{number}"
        attempts.append({"number": number, "prompt": f"repair/{number}.prompt.json",
                         "response": f"repair/{number}.response.json",
                         **{key: latest[key] for key in ("status", "reason", "problems", "applies", "syntax_errors")},
                         "cost_usd": reply["cost_usd"] or 0.0})
        log(f"repair {number}: {latest['status']} {latest['reason'] or ''}, {reply['cost_usd'] or 0.0:.6f} USD")
        if rank(latest) > rank(best):
            best_text, best = text, latest
        if reply["status"] == "failed":
            break  # a refusal, or a prompt too long: asking again would not help
        answer = reply["answer"]
    best["attempts"] = attempts
    return best_text, best



def run_stage(instance_id, input, output, log_path, settings):
    """The stage for one instance. input and output are the rule's named files (response, prompt,
    context, patch, diff, and instances/index for the apply check; diff, record, requests);
    settings: {"provider", "model", "attempts", "settings" (the request settings), "repos" (None
    without the apply check)}. A repository that cannot be fetched, or a request that cannot be
    made, fails the job with PatchStageError."""
    folder = Path(output["requests"])
    first = read_json(input["patch"])
    text, record = Path(input["diff"]).read_text(encoding="utf-8"), dict(first, answer="response", attempts=[])
    used = []  # the files of the paid replies this job takes (ask_once)
    with instance_log(log_path, instance_id) as log:
        if any(folder.glob("*.response.json")):  # paid answers of this stage's last run
            try:
                generate.keep_paid_answers([folder, output["record"]], settings["settings"]["overwrite"], log)
            except generate.GenerationFailed as error:
                raise PatchStageError(f"{instance_id}: {error} (log: {log_path})") from None
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if needs_repair(first):
            repository = None
            if settings["repos"] is not None:
                row = read_row(input["instances"], input["index"], instance_id)
                repository = apply.Repository(settings["repos"]["repo_cache"], settings["repos"]["repo_url"],
                                              row["repo"], row["base_commit"])
            response, context = read_json(input["response"]), read_json(input["context"])
            try:
                judged = judge(response, context, repository)  # the same verdict again, with its spots
                judged[1].update(answer="response")
                text, record = self_repair(judged, response, read_json(input["prompt"]), context, repository,
                                           settings, folder, log, used)
            except repos_module.RepoError as error:
                message = f"{instance_id}: cannot read the repository for the repair request: {error} (log: {log_path})"
                log(f"error: {message}")
                log(fault_line("repository_unreachable", f"{error}; a rerun retries it"))
                raise PatchStageError(message) from None
            except (generate.GenerationFailed, costs.BudgetSpent) as error:
                message = (f"{instance_id}: self-repair could not ask the model: {error} "
                           f"(repair_attempts=0 turns self-repair off; log: {log_path})")
                log(f"error: {message}")
                if getattr(error, "cause", None):
                    log(fault_line(error.cause, f"{error}; a rerun retries it"))
                raise PatchStageError(message) from None
        record["cost_usd"] = round(sum(a["cost_usd"] for a in record["attempts"]), 6)
        write_text_atomic(output["diff"], text)
        write_json_atomic(output["record"], record)
        for path in used:  # repair/ holds them now
            path.unlink(missing_ok=True)
        if used and not any(paid_folder(folder).iterdir()):
            paid_folder(folder).rmdir()
        log(f"repair: {len(record['attempts'])} request(s); kept {describe_verdict(record)} from {record['answer']}")
    return record

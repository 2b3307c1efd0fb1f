"""Generate: ask the provider for an answer to the prompt and keep it raw in response.json.

Providers: `gold` (the reference patch), `replay` (earlier answers from a JSONL file),
and the APIs in providers.py (`openai`, `anthropic`). An API request is retried on
transient faults with exponential backoff and jitter (or the wait the server asks
for), up to max_attempts, every attempt recorded. What retrying cannot change is a
result: a refusal, or a prompt that does not fit even without its code context.
A transient fault that outlasts the attempts, a spent budget or a rejected request fail
the job and write nothing, so that a rerun tries again.
"""
import logging
import random
import time
from pathlib import Path

from scripts import costs, providers
from scripts.common import (
    fault_line,
    find_jsonl_row,
    instance_log,
    now,
    read_json,
    read_row,
    set_aside,
    write_json_atomic,
)
from scripts.prompt import build_prompt, load_template  # the prompt stage's own: a prompt rebuilt with less code


class PermanentFailure(Exception):
    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class GenerationFailed(Exception):
    """The job fails and writes nothing; a rerun retries the instance. cause: the fault of the machinery
    behind it (the provider could not be reached), if any."""

    def __init__(self, message, cause=None):
        super().__init__(message)
        self.cause = cause


def no_usage():
    return {"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "cache_write_tokens": 0,
            "reasoning_tokens": 0}


def gold(prompt, row, settings):
    """The instance's reference patch: checks an evaluation setup end to end."""
    return providers.Answer(row["patch"], "gold", "gold", no_usage())


def replay(prompt, row, settings):
    """An earlier answer from settings['replay_file']: its full_output, else its model_patch."""
    recorded = find_jsonl_row(settings["replay_file"], row["instance_id"])
    if recorded is None:
        raise PermanentFailure("no_answer_recorded", f"{settings['replay_file']} has no answer for this instance")
    answer = recorded.get("full_output") or recorded.get("model_patch") or ""
    return providers.Answer(answer, "replay", "replay", no_usage())


LOCAL_PROVIDERS = {"gold": gold, "replay": replay}
PROVIDERS = sorted([*LOCAL_PROVIDERS, *providers.ASK])


def redact(text, settings):
    key = settings.get("api_key")
    return text.replace(key, "[redacted]") if key and len(key) > 3 else text


def backoff_seconds(attempt, settings):
    """Exponential backoff with jitter: base * 2^(attempt-1), capped, times a random 0.5 to 1."""
    return min(settings["retry_backoff"] * 2 ** (attempt - 1), 60.0) * random.uniform(0.5, 1.0)


def without_last_file(context, template):
    """The context minus its lowest-ranked file and the prompt messages rebuilt from it."""
    smaller = dict(context, files=context["files"][:-1])
    return smaller, build_prompt(smaller, template)["messages"]


def attempt_record(started, clock, error=None, status=None, wait=0.0):
    return {"started_at": started, "latency_s": round(time.monotonic() - clock, 3), "error": error,
            "status": status, "wait_s": round(wait, 3)}


def quota_marker(settings):
    """The run's record that the provider's account ran out of credit: no generate job sends after it."""
    return Path(settings["ledger"]).parent / "quota_exhausted.json"


def quota_stop(settings):
    marker = quota_marker(settings)
    return read_json(marker)["error"] if marker.exists() else None


def ask_with_retries(prompt, row, provider, model, settings, context=None, template=None, log=print):
    """(Answer, attempts, dropped context files, USD of all its attempts, the price) from an API provider. Each
    attempt is a paid request of the run's budget (costs.Budget): BudgetSpent if its worst case does not fit."""
    messages, attempts, dropped = prompt["messages"], [], []
    last_error = None
    if context:  # start from the files the prompt holds: the prompt stage may have left some out
        left_out = set(prompt.get("dropped_files") or [])
        context = dict(context, files=[f for f in context["files"] if f["path"] not in left_out])
    try:
        budget = costs.Budget(settings, provider, model, log=log)
    except costs.UnknownPrice as error:
        raise GenerationFailed(str(error)) from None
    for number in range(1, settings["max_attempts"] + 1):
        stopped = quota_stop(settings)
        if stopped:
            raise GenerationFailed(f"generation stopped, no request sent: {stopped}")
        try:
            with budget.request(row["instance_id"], messages, settings.get("sample", 1)) as paid:
                started, clock = now(), time.monotonic()
                answer = providers.ask(provider, messages, model, settings)
                paid.answered(answer.usage)
        except (providers.Transient, providers.ContextTooLong, providers.Rejected) as error:
            if isinstance(error, providers.Transient):
                last_error = redact(str(error), settings)
                if error.retry_after is not None and error.retry_after > providers.MAX_RETRY_AFTER_S:
                    raise GenerationFailed(f"{provider} asks to wait {error.retry_after:.0f} s before the next request, "
                                           f"more than the {providers.MAX_RETRY_AFTER_S:.0f} s a job waits; a rerun "
                                           f"later asks again ({last_error})", cause="provider_asks_to_wait") from None
                wait = error.retry_after if error.retry_after is not None else backoff_seconds(number, settings)
                attempts.append(attempt_record(started, clock, last_error, error.status, wait))
                log(f"attempt {number}: {last_error}; waiting {wait:.1f} s")
                if number < settings["max_attempts"]:
                    time.sleep(wait)
                continue
            if isinstance(error, providers.ContextTooLong):
                last_error = redact(str(error), settings)
                attempts.append(attempt_record(started, clock, last_error, 400))
                if not (context and context["files"] and template):
                    raise PermanentFailure("context_too_long", f"the prompt does not fit the model even "
                                           f"without code context ({last_error})") from None
                dropped.append(context["files"][-1]["path"])
                context, messages = without_last_file(context, template)
                log(f"attempt {number}: {last_error}; dropping {dropped[-1]} from the context")
                continue
            if isinstance(error, providers.QuotaExhausted):
                message = redact(str(error), settings)
                write_json_atomic(quota_marker(settings), {"provider": provider, "error": message, "at": now()})
                raise GenerationFailed(f"{provider} says the account has no credit left ({message}); all generation "
                                       "stops, no further request is sent") from None
            raise GenerationFailed(f"{provider} rejected the request: {redact(str(error), settings)}") from None
        attempts.append(attempt_record(started, clock, status=200))
        return answer, attempts, dropped, round(budget.spent, 8), budget.price
    if attempts and attempts[-1]["status"] == 400:
        raise PermanentFailure("context_too_long", f"still too long after dropping {len(dropped)} file(s): {last_error}")
    raise GenerationFailed(f"no answer after {len(attempts)} attempt(s); last error: {last_error}",
                           cause="provider_unreachable")


def outcome(stop_reason, raw_stop_reason, text, usage, limit):
    """(status, failure reason, detail) of an answer: a refusal is a recorded failure, and so is an answer that
    the output limit cut off before it held any text (a reasoning model that spent it all on reasoning)."""
    if stop_reason in ("refusal", "content_filter"):
        return "failed", "refused", f"the model stopped with {raw_stop_reason}"
    if stop_reason == "max_tokens" and not (text or "").strip():
        return "failed", "cut_off", (
            f"the output limit of {limit} tokens ended the answer before any text: {usage.get('output_tokens', 0)} "
            f"output tokens, {usage.get('reasoning_tokens', 0)} of them reasoning. A run with a larger "
            "max_output_tokens asks it again.")
    return "ok", None, None


def generate(prompt, row, provider, model, settings, context=None, template=None, log=print):
    """The response record for one instance; raises GenerationFailed or BudgetSpent on what a rerun may fix."""
    started, clock = now(), time.monotonic()
    attempts, dropped, cost, price, limit = None, [], 0.0, None, None
    try:
        if provider in LOCAL_PROVIDERS:
            answer = LOCAL_PROVIDERS[provider](prompt, row, settings)
        else:
            answer, attempts, dropped, cost, price = ask_with_retries(prompt, row, provider, model, settings, context,
                                                                      template, log)
            if price is None:
                cost = None
                log(f"warning: {costs.unknown_price_message(provider, model, settings['database_prices'])}")
            limit = providers.output_limit(provider, model, settings)
        status, reason, detail = outcome(answer.stop_reason, answer.raw_stop_reason, answer.text, answer.usage, limit)
    except PermanentFailure as failure:
        answer = providers.Answer(None, None, None, no_usage())
        status, reason, detail = "failed", failure.reason, failure.detail
    latency = round(time.monotonic() - clock, 3)
    return {
        "instance_id": row["instance_id"],
        "provider": provider,
        "model": model,
        "status": status,
        "failure_reason": reason,
        "failure_detail": detail,
        "answer": answer.text,
        "stop_reason": answer.stop_reason,
        "raw_stop_reason": answer.raw_stop_reason,
        "usage": answer.usage,
        "cost_usd": cost,  # None: the model's price is unknown
        "price_per_million": price,  # with its source
        "max_output_tokens": limit,  # the output limit sent (None: no request)
        "latency_s": latency,
        "attempts": attempts or [attempt_record(started, clock)],
        "dropped_context_files": dropped,
        "dropped_parameters": answer.dropped_parameters,
        "created_at": now(),
    }


def run_stage(instance_id, input, output, log_path, settings):
    """The stage as its rule calls it, like every per-instance stage: write output[0], response.json, with the
    provider, model and request settings of settings (generate_settings, rules/paths.smk)."""
    return run(instance_id, input, settings["provider"], settings["model"], settings["settings"], output[0], log_path)


def run(instance_id, input, provider, model, settings, out_path, log_path):
    """The stage: read the instance's files, ask, write response.json (or nothing, by raising).
    input is the rule's named files: prompt, instances, index, and for a model context and template."""
    with instance_log(log_path, instance_id) as log:
        if provider in providers.ASK and Path(out_path).exists():
            keep_paid_answers([out_path], settings["overwrite"], log)
        template = None
        if input.get("template") and provider in providers.ASK:
            template = load_template(input["template"])
        context = read_json(input["context"]) if input.get("context") else None
        try:
            if settings.get("batch") and provider in providers.ASK:
                record = from_batch(instance_id, provider, model, settings)
            else:
                record = generate(read_json(input["prompt"]), read_row(input["instances"], input["index"], instance_id),
                                  provider, model, settings, context, template, log)
        except (GenerationFailed, costs.BudgetSpent) as error:
            log(f"error: {error}")
            if getattr(error, "cause", None):
                log(fault_line(error.cause, f"{error}; a rerun retries it"))
            raise GenerationFailed(f"{instance_id}: {error} (log: {log_path})", getattr(error, "cause", None)) from None
        write_json_atomic(out_path, record)
        cost = "unknown cost" if record["cost_usd"] is None else f"{record['cost_usd']:.6f} USD"
        log(f"{record['status']} {record['failure_reason'] or record['stop_reason']}, {cost}, {record['latency_s']} s")
    # through Snakemake's logger: whole lines, and the run's view shows its own instead
    logging.getLogger("snakemake.logging").info(progress_line(record, provider, settings), extra={"swebench": "answer"})


def from_batch(instance_id, provider, model, settings):
    """The response record of an answer that the batch stage received (batch=true); GenerationFailed if none."""
    run_dir = Path(settings["ledger"]).parent
    path = run_dir / "batch" / "answers" / f"{instance_id}.json"
    if not path.exists():
        done = run_dir / "batch" / "done.json"
        why = read_json(done)["unanswered"].get(instance_id) if done.exists() else None
        raise GenerationFailed(f"the batches brought no answer ({why or 'not submitted'}); a rerun asks it in a "
                               "new batch")
    got = read_json(path)
    limit = providers.output_limit(provider, model, settings)
    status, reason, detail = outcome(got["stop_reason"], got["raw_stop_reason"], got["answer"], got["usage"], limit)
    return {
        "instance_id": instance_id, "provider": provider, "model": model,
        "status": status, "failure_reason": reason, "failure_detail": detail, "answer": got["answer"],
        "stop_reason": got["stop_reason"], "raw_stop_reason": got["raw_stop_reason"], "usage": got["usage"],
        "cost_usd": got["cost_usd"], "price_per_million": got["price_per_million"], "max_output_tokens": limit,
        "batch": got["batch"],
        "latency_s": 0.0, "attempts": [{"started_at": got["submitted_at"], "latency_s": 0.0, "error": None,
                                        "status": 200, "wait_s": 0.0}],
        "dropped_context_files": [], "created_at": now(),
    }


def keep_paid_answers(paths, overwrite, log):
    """Paid answers that their job is asked to make again: with overwrite each is set aside as
    <name>.overwritten-<time><suffix> (a file or a folder), else the job fails and keeps them."""
    if overwrite:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for path in map(Path, paths):
            if path.exists():
                aside = set_aside(path, "overwritten", stamp)
                log(f"overwrite: the earlier {path.name} is kept as {aside.name}")
        return
    message = (f"{paths[0]} holds a paid answer, and this run would ask again because an input of it changed (its "
               "prompt or patch, or the rule that makes it). Nothing was asked: the answer is kept, and a rerun goes on "
               "with it. To ask again instead, make that change with --config overwrite=true, which keeps each earlier "
               "answer beside the new one, or give the run another run_id.")
    log(f"error: {message}")
    raise GenerationFailed(message)


def progress_line(record, provider, settings):
    """What the terminal shows when an answer is in: the instance, its outcome, its cost and the run's spend."""
    outcome = "answered" if record["status"] == "ok" else f"failed permanently ({record['failure_reason']})"
    line = f"generate {record['instance_id']}: {outcome} in {record['latency_s']:.1f} s"
    if provider in providers.ASK:
        budget = f" of max_cost {settings['max_cost']:g} USD" if settings.get("max_cost") is not None else ""
        settled, reserved = costs.ledger_totals(settings["ledger"])
        in_flight = f" (+{reserved:.4f} reserved by requests in flight)" if reserved else ""
        cost = "unknown cost (no price known)" if record["cost_usd"] is None else f"{record['cost_usd']:.4f} USD"
        line += f", {cost}; run total {settled:.4f} USD{in_flight}{budget}"
    return line

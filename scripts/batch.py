"""Batch: the run's requests through the providers' batch APIs (OpenAI Batch, Anthropic Message
Batches), billed at the batch rates (half the list price).

One job asks for every instance still without an answer: it reserves each request's worst case
in the run's ledger, records the batch it is about to submit in results/<run>/batch/state.json,
submits it and records the id the provider gave, before it waits. Each batch carries its mark (the
run's own token and one of the batch's): an OpenAI batch in its metadata, an Anthropic one, which
has no metadata, in its requests' custom_ids. So a run stopped while its batch is pending polls the
same batch when run again, and one stopped between the submission and its record finds the batch
among the account's batches and takes it: the requests are never submitted twice. Each answer is
written to batch/answers/<id>.json as its batch ends, and its reservation settled at the batch price;
a request that fails or expires in a batch is released (not billed) and asked again in a later
batch, up to max_attempts batches per instance in one job (a rerun asks again). A batch that
OpenAI's validation rejects ran nothing: its errors are reported, and its requests are not sent
again in that job. The generate job of each instance then writes its response.json from that answer.
"""
import json
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from scripts import costs, providers
from scripts.common import append_log, now, read_json, write_json_atomic

OPENAI_DONE = {"completed", "failed", "expired", "cancelled"}
MARK = "swebench_runner_batch"  # the metadata key of an OpenAI batch that holds its mark
REJECTED = "the batch failed OpenAI's validation"


def answer_path(run_dir, instance_id):
    return Path(run_dir) / "batch" / "answers" / f"{instance_id}.json"


def state_path(run_dir):
    return Path(run_dir) / "batch" / "state.json"


def request_body(provider, messages, model, settings):
    """(endpoint, body) of one request, as the synchronous path would send it."""
    if provider == "anthropic":
        return "/v1/messages", providers.anthropic_request(messages, model, settings)
    if providers.uses_responses(model, settings):
        return "/v1/responses", providers.responses_request(messages, model, settings, set())
    return "/v1/chat/completions", providers.openai_request(messages, model, settings, set())


def submit(run_dir, instance_ids, provider, model, settings, budget, state, log):
    """Reserve and submit one batch of the instances; its record is in the state before it is submitted.
    budget: the costs.Budget of the model at batch rates (None: made from the settings)."""
    budget = budget or costs.Budget(settings, provider, model, batch=True, log=log)
    client = providers.client_for(provider, settings)
    mark = f"{state['run']}-{uuid.uuid4().hex[:8]}"
    requests, lines, endpoint = {}, [], None
    for number, instance_id in enumerate(instance_ids):
        messages = read_json(Path(run_dir) / "instances" / instance_id / "prompt.json")["messages"]
        endpoint, body = request_body(provider, messages, model, settings)
        try:
            reservation = budget.reserve(instance_id, budget.worst_case(messages))
        except costs.BudgetSpent as error:
            log(f"batch: {len(instance_ids) - number} instance(s) not submitted: {error}")
            break
        custom_id = f"{mark}-{number}"  # letters, digits and -: what both providers take
        requests[custom_id] = {"instance_id": instance_id, "reservation": reservation}
        lines.append({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body} if provider == "openai"
                     else {"custom_id": custom_id, "params": body})
    if not requests:
        return None
    record = {"id": None, "mark": mark, "provider": provider, "endpoint": endpoint, "requests": requests,
              "submitted_at": now(), "ended": False}
    state["batches"].append(record)
    write_json_atomic(state_path(run_dir), state)  # a run stopped from here on looks for the batch at the provider
    try:
        if provider == "openai":
            data = "".join(json.dumps(line) + "\n" for line in lines).encode()
            upload = client.files.create(file=("requests.jsonl", data), purpose="batch")
            batch = client.batches.create(input_file_id=upload.id, endpoint=endpoint, completion_window="24h",
                                          metadata={MARK: mark, "run": str(run_dir)[-512:]})
        else:
            batch = client.messages.batches.create(requests=lines)
    except Exception as error:
        fault = providers.classify(error, __import__(provider)) or error
        # no answer, or a 5xx, after the request went out: the provider may have made the batch
        if isinstance(fault, providers.Transient) and fault.sent and (fault.status or 500) >= 500:
            log(f"batch {mark}: no answer to its submission ({fault}); a rerun looks for it at the provider "
                "before it submits anything")
        else:
            drop(run_dir, state, record, budget, "the batch was not created")
        raise fault from error
    record["id"] = batch.id
    write_json_atomic(state_path(run_dir), state)
    log(f"batch {batch.id}: {len(requests)} request(s) submitted")
    return batch.id


def drop(run_dir, state, record, budget, why):
    """Forget a batch that the provider does not have, and release its reservations."""
    for request in record["requests"].values():
        budget.release(request["reservation"], why)
    state["batches"].remove(record)
    write_json_atomic(state_path(run_dir), state)


def made_since(provider, client, since):
    """The account's batches made since `since`, newest first (as both providers list them)."""
    listing = client.batches.list(limit=100) if provider == "openai" else client.messages.batches.list(limit=100)
    for batch in listing:
        made = (datetime.fromtimestamp(batch.created_at, timezone.utc) if provider == "openai"
                else batch.created_at)
        if made < since:
            return
        yield batch


def find_submitted(provider, client, record, poll_s, log):
    """The id of the batch of a record without one (the run stopped before the provider's answer came), found
    among the account's batches by its mark; None when the provider has none. An Anthropic batch shows its
    requests' custom_ids, which carry the mark, only once it has ended: a batch that may be it is waited for."""
    since = datetime.fromisoformat(record["submitted_at"]) - timedelta(hours=1)  # the two clocks may differ
    while True:
        waiting = 0
        for batch in made_since(provider, client, since):
            if provider == "openai":
                if (batch.metadata or {}).get(MARK) == record["mark"]:
                    return batch.id
                continue
            counts = batch.request_counts
            if counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired != len(
                    record["requests"]):
                continue
            if batch.processing_status != "ended":
                waiting += 1
                continue
            lines = client.messages.batches.results(batch.id)
            first = next(iter(lines), None)
            lines.close()
            if first is not None and first.custom_id in record["requests"]:
                return batch.id
        if not waiting:
            return None
        log(f"batch {record['mark']}: waiting for {waiting} batch(es) of the account made since it was submitted to "
            "end, to see whether one is it (Anthropic shows a batch's custom_ids only then)")
        time.sleep(poll_s)


def results(provider, client, record):
    """(ended, progress text, {custom_id: (answer or None, error text)}) of a batch (its record in the state)."""
    batch_id = record["id"]
    if provider == "anthropic":
        batch = client.messages.batches.retrieve(batch_id)
        counts = batch.request_counts
        progress = (f"{batch.processing_status}: {counts.succeeded} succeeded, {counts.errored} errored, "
                    f"{counts.expired} expired, {counts.processing} processing")
        if batch.processing_status != "ended":
            return False, progress, {}
        found = {}
        for line in client.messages.batches.results(batch_id):
            result = line.result
            if result.type == "succeeded":
                found[line.custom_id] = (providers.read_message(result.message), None)
            else:
                detail = getattr(getattr(result, "error", None), "error", None)
                found[line.custom_id] = (None, f"{result.type}: {getattr(detail, 'message', '')}".rstrip(": "))
        return True, progress, found
    batch = client.batches.retrieve(batch_id)
    counts = batch.request_counts
    progress = f"{batch.status}: {counts.completed} of {counts.total} completed, {counts.failed} failed" if counts else batch.status
    if batch.status not in OPENAI_DONE:
        return False, progress, {}
    if batch.status == "failed":  # the input did not pass validation: no request ran
        return True, progress, validation_errors(batch, list(record["requests"]))
    found = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        for text in client.files.content(file_id).text.splitlines():
            if text.strip():
                found[json.loads(text)["custom_id"]] = read_openai_line(json.loads(text))
    return True, progress, found


def validation_errors(batch, custom_ids):
    """{custom_id: (None, error text)} of an OpenAI batch that failed validation: each request gets the
    errors of its line of the input file, or, when none names it, every error without a line."""
    errors = (batch.errors.data if batch.errors else None) or []
    texts = {}
    for error in errors:
        where = f"line {error.line}: " if error.line else ""
        param = f" ({error.param})" if error.param else ""
        texts.setdefault(error.line, []).append(f"{where}{error.code}{param}: {error.message}")
    general = texts.get(None) or ["no error given"]
    return {custom_id: (None, f"{REJECTED}, nothing in it ran or was billed: " + "; ".join(texts.get(number, general)))
            for number, custom_id in enumerate(custom_ids, 1)}


def read_openai_line(line):
    """(Answer or None, error text) of one line of an OpenAI batch's output or error file."""
    import openai

    response = line.get("response") or {}
    if line.get("error") or response.get("status_code") != 200:
        error = line.get("error") or (response.get("body") or {}).get("error") or {}
        return None, f"{error.get('code') or response.get('status_code')}: {error.get('message', '')}"
    body = response["body"]
    if body.get("object") == "response":
        return providers.read_response(openai.types.responses.Response.model_validate(body)), None
    return providers.read_completion(openai.types.chat.ChatCompletion.model_validate(body)), None


def collect(run_dir, state, batch, found, budget, log):
    """Write the answers of an ended batch and settle its reservations; release the failed ones."""
    for custom_id, request in batch["requests"].items():
        answer, error = found.get(custom_id, (None, "no result: the batch ended without it"))
        if answer is None:
            budget.release(request["reservation"], f"batch: {error}")
            batch.setdefault("failed", {})[request["instance_id"]] = error
            continue
        cost = budget.answered(request["reservation"], answer.usage)
        write_json_atomic(answer_path(run_dir, request["instance_id"]), {
            "batch": batch["id"], "answer": answer.text, "stop_reason": answer.stop_reason,
            "raw_stop_reason": answer.raw_stop_reason, "usage": answer.usage,
            "cost_usd": cost if budget.price else None, "price_per_million": budget.price,
            "submitted_at": batch["submitted_at"], "answered_at": now()})
    batch["ended"] = True
    write_json_atomic(state_path(run_dir), state)
    failed = batch.get("failed", {})
    rejected = sorted({error for error in failed.values() if error.startswith(REJECTED)})
    if rejected:
        log(f"batch {batch['id']}: {len(failed)} request(s) not run, and not sent again by this job (a rerun sends "
            "them again, once what the errors name is fixed):\n  " + "\n  ".join(rejected))
    else:
        log(f"batch {batch['id']}: ended, {len(batch['requests']) - len(failed)} answered, {len(failed)} to ask again")


def job_log(log_path):
    """A function that writes a line to the job's log and to the terminal (the batch's state as it changes)."""

    def log(message):
        append_log(log_path, message)
        print(message, flush=True)

    return log


def run(run_dir, instance_ids, provider, model, settings, out_path, poll_s=10.0, log=print):
    """The stage: ask every instance that has no answer through batches, until all are answered or each
    that is not was asked in max_attempts batches of this job; write out_path with the instances still
    without an answer and why. Returns those instances."""
    try:
        budget = costs.Budget(settings, provider, model, batch=True, log=log)
    except costs.UnknownPrice as error:
        raise providers.Rejected(str(error)) from None
    path = state_path(run_dir)
    state = read_json(path) if path.exists() else {"batches": []}
    state.setdefault("run", uuid.uuid4().hex[:12])  # the run's token in each batch's mark
    client = providers.client_for(provider, settings)
    asked, last_error = Counter(), {}  # per instance: the batches of this job that held it, its latest error
    while True:
        for batch in [b for b in state["batches"] if not b["ended"]]:
            if batch["id"] is None:  # the run stopped before the provider's answer to the submission came
                batch["id"] = find_submitted(provider, client, batch, poll_s, log)
                if batch["id"] is None:
                    drop(run_dir, state, batch, budget, "the batch never reached the provider")
                    log(f"batch {batch['mark']}: not at the provider; its instances are submitted anew")
                    continue
                write_json_atomic(path, state)
                log(f"batch {batch['id']}: submitted by a run stopped before it recorded it; taken, not submitted again")
            shown = None
            while True:  # a pending batch of an earlier, stopped run is polled, not sent again
                ended, progress, found = results(provider, client, batch)
                if progress != shown:
                    print(f"batch {batch['id']}: {progress}", flush=True)
                    shown = progress
                if ended:
                    collect(run_dir, state, batch, found, budget, log)
                    break
                time.sleep(poll_s)
            asked.update(request["instance_id"] for request in batch["requests"].values())
            last_error.update(batch.get("failed", {}))
        answered = {i for i in instance_ids if answer_path(run_dir, i).exists()
                    or (Path(run_dir) / "instances" / i / "response.json").exists()}
        left = [i for i in instance_ids if i not in answered]
        todo = [i for i in left if asked[i] < settings["max_attempts"]
                and not last_error.get(i, "").startswith(REJECTED)]
        if not todo or submit(run_dir, todo, provider, model, settings, budget, state, log) is None:
            break
    unanswered = {i: f"{last_error[i]} (asked in {asked[i]} batch(es) of this run)" if i in last_error
                  else "not submitted" for i in left}
    write_json_atomic(out_path, {"batches": [b["id"] for b in state["batches"]], "unanswered": unanswered})
    return left

"""Batch: the run's requests through the providers' batch APIs (OpenAI Batch, Anthropic Message
Batches), billed at the batch rates (half the list price).

One job asks for every instance still without an answer: it reserves each request's worst case
in the run's ledger, submits them as one batch and keeps the batch's id in
results/<run>/batch/state.json before it waits, so that a run stopped while the batch is pending
polls the same batch when run again and never submits its requests twice. Each answer is written
to batch/answers/<id>.json as its batch ends, and its reservation settled at the batch price;
a request that fails or expires in a batch is released (not billed) and asked again in a later
batch, up to max_attempts batches. The generate job of each instance then writes its
response.json from that answer.
"""
import json
import time
from pathlib import Path

from scripts import costs, providers
from scripts.common import append_log, now, read_json, write_json_atomic

OPENAI_DONE = {"completed", "failed", "expired", "cancelled"}


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


def submit(run_dir, instance_ids, provider, model, settings, price, state, log):
    """Reserve and submit one batch of the instances; its record is in the state before this returns."""
    client = providers.client_for(provider, settings)
    requests, lines, endpoint = {}, [], None
    for number, instance_id in enumerate(instance_ids):
        messages = read_json(Path(run_dir) / "instances" / instance_id / "prompt.json")["messages"]
        endpoint, body = request_body(provider, messages, model, settings)
        worst = (costs.worst_case_usd(messages, providers.output_limit(provider, model, settings), price)
                 if price else 0.0)
        try:
            reservation = costs.reserve(settings["ledger"], instance_id, worst, settings.get("max_cost"),
                                        shared=settings.get("shared_ledgers", ()))
        except costs.BudgetSpent as error:
            log(f"batch: {len(instance_ids) - number} instance(s) not submitted: {error}")
            break
        custom_id = f"r{len(state['batches'])}-{number}"  # ids of the form the providers take
        requests[custom_id] = {"instance_id": instance_id, "reservation": reservation}
        lines.append({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body} if provider == "openai"
                     else {"custom_id": custom_id, "params": body})
    if not requests:
        return None
    try:
        if provider == "openai":
            data = "".join(json.dumps(line) + "\n" for line in lines).encode()
            upload = client.files.create(file=("requests.jsonl", data), purpose="batch")
            batch = client.batches.create(input_file_id=upload.id, endpoint=endpoint, completion_window="24h")
        else:
            batch = client.messages.batches.create(requests=lines)
    except Exception as error:
        for request in requests.values():
            costs.settle(settings["ledger"], request["reservation"], "released", note="the batch was not created")
        library = __import__(provider)
        raise (providers.classify(error, library) or error) from error
    state["batches"].append({"id": batch.id, "provider": provider, "endpoint": endpoint, "requests": requests,
                             "submitted_at": now(), "ended": False})
    write_json_atomic(state_path(run_dir), state)
    log(f"batch {batch.id}: {len(requests)} request(s) submitted")
    return batch.id


def results(provider, client, batch_id):
    """(ended, progress text, {custom_id: (answer or None, error text)}) of a batch."""
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
    found = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        for text in client.files.content(file_id).text.splitlines():
            if text.strip():
                found[json.loads(text)["custom_id"]] = read_openai_line(json.loads(text))
    return True, progress, found


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


def collect(run_dir, state, batch, found, settings, price, log):
    """Write the answers of an ended batch and settle its reservations; release the failed ones."""
    for custom_id, request in batch["requests"].items():
        answer, error = found.get(custom_id, (None, "no result: the batch ended without it"))
        if answer is None:
            costs.settle(settings["ledger"], request["reservation"], "released", note=f"batch: {error}")
            batch.setdefault("failed", {})[request["instance_id"]] = error
            continue
        cost = costs.cost_usd(answer.usage, price) if price else None
        costs.settle(settings["ledger"], request["reservation"], "settled", cost or 0.0)
        write_json_atomic(answer_path(run_dir, request["instance_id"]), {
            "batch": batch["id"], "answer": answer.text, "stop_reason": answer.stop_reason,
            "raw_stop_reason": answer.raw_stop_reason, "usage": answer.usage, "cost_usd": cost,
            "price_per_million": price, "submitted_at": batch["submitted_at"], "answered_at": now()})
    batch["ended"] = True
    write_json_atomic(state_path(run_dir), state)
    failed = len(batch.get("failed", {}))
    log(f"batch {batch['id']}: ended, {len(batch['requests']) - failed} answered, {failed} to ask again")


def job_log(log_path):
    """A function that writes a line to the job's log and to the terminal (the batch's state as it changes)."""

    def log(message):
        append_log(log_path, message)
        print(message, flush=True)

    return log


def run(run_dir, instance_ids, provider, model, settings, out_path, poll_s=10.0, log=print):
    """The stage: ask every instance that has no answer through batches, until all are answered or
    max_attempts batches were sent; write out_path with the instances still without an answer."""
    price = costs.price_for(provider, model, settings["prices"], batch=True, database=settings["database_prices"])
    if price is None and settings.get("max_cost") is not None:
        raise providers.Rejected(costs.unknown_price_message(provider, model, settings["database_prices"]))
    path = state_path(run_dir)
    state = read_json(path) if path.exists() else {"batches": []}
    client = providers.client_for(provider, settings)
    while True:
        for batch in [b for b in state["batches"] if not b["ended"]]:
            shown = None
            while True:  # a pending batch of an earlier, stopped run is polled, not sent again
                ended, progress, found = results(provider, client, batch["id"])
                if progress != shown:
                    print(f"batch {batch['id']}: {progress}", flush=True)
                    shown = progress
                if ended:
                    collect(run_dir, state, batch, found, settings, price, log)
                    break
                time.sleep(poll_s)
        answered = {i for i in instance_ids if answer_path(run_dir, i).exists()
                    or (Path(run_dir) / "instances" / i / "response.json").exists()}
        todo = [i for i in instance_ids if i not in answered]
        if not todo or len(state["batches"]) >= settings["max_attempts"]:
            break
        if submit(run_dir, todo, provider, model, settings, price, state, log) is None:
            break
    last_errors = {i: e for b in state["batches"] for i, e in b.get("failed", {}).items() if i in todo}
    write_json_atomic(out_path, {"batches": [b["id"] for b in state["batches"]], "unanswered": last_errors or
                                 {i: "not submitted" for i in todo}})
    return todo

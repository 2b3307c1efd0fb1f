"""A loopback HTTP server that speaks the OpenAI Chat Completions and Responses and the
Anthropic Messages wire formats, for testing the real client libraries. It answers each instance with its
reference patch (found by the problem statement in the prompt) and injects faults on
request: faults[instance_id] is a list consumed one per request."""
import json
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from email.parser import BytesParser

from loopback import LoopbackServer, QuietHandler

# OpenAI models served only through the Responses API: Chat Completions answers them with a 404
RESPONSES_ONLY = ("o3-pro", "gpt-5-pro", "gpt-5.4-pro", "gpt-5-codex", "codex-mini-latest")
RESPONSES_PARAMS = {"model", "input", "instructions", "max_output_tokens", "reasoning", "temperature", "top_p", "store",
                    "metadata", "service_tier", "text", "tools", "tool_choice", "truncation", "user", "background",
                    "stream"}
# The body parameters of the Messages API (anthropic 2.x, API version 2026-10-21, which has no temperature, top_p
# or top_k): it refuses any other with "<name>: Extra inputs are not permitted".
MESSAGES_PARAMS = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "thinking",
                   "tools", "tool_choice", "cache_control", "container", "diagnostics", "inference_geo", "output_config",
                   "service_tier", "speed"}
ERROR_TYPES = {400: "invalid_request_error", 402: "billing_error", 429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
# The 400 of api.openai.com to an organization that may not stream a model (its param is "stream")
STREAM_REFUSED = ("Your organization must be verified to stream this model. Please go to: https://platform.openai.com/"
                  "settings/organization/general and click on Verify Organization. If you just verified, it can take "
                  "up to 15 minutes for access to propagate.")


def pieces(text, parts):
    """text in `parts` pieces, as a model's answer comes in a stream."""
    size = max(1, -(-len(text) // parts))
    return [text[i:i + size] for i in range(0, len(text), size)]


def chat_chunks(payload, include_usage, parts, usage_choices=()):
    """A chat.completion as the chunks of its stream: role, content pieces, finish_reason, then with
    stream_options.include_usage a last chunk with the usage and no choices (the others carry usage: null).
    usage_choices: the choices of that last chunk, [] as api.openai.com sends them (None: null, as some
    compatible servers do)."""
    base = {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"],
            "model": payload["model"], "system_fingerprint": None, "service_tier": "default",
            **({"usage": None} if include_usage else {})}
    choice, message = payload["choices"][0], payload["choices"][0]["message"]

    def chunk(delta, finish=None):
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": piece}) for piece in pieces(message["content"] or "", parts)]
    chunks += [chunk({"refusal": message["refusal"]})] if message["refusal"] else []
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**base, "choices": None if usage_choices is None else [], "usage": payload["usage"]})
    return [(None, c) for c in chunks] + [(None, "[DONE]")]


def response_events(payload, parts):
    """A Responses API response as the events of its stream, up to response.completed (or .incomplete), which
    carries the whole response."""
    events = []

    def event(kind, **fields):
        events.append((kind, {"type": kind, "sequence_number": len(events), **fields}))

    started = {**payload, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    event("response.created", response=started)
    event("response.in_progress", response=started)
    for index, item in enumerate(payload["output"]):
        ids = {"item_id": item["id"], "output_index": index}
        event("response.output_item.added", output_index=index,
              item={**item, "status": "in_progress", "content": []} if item["type"] == "message" else item)
        for number, part in enumerate(item.get("content") or []):
            kind = "output_text" if part["type"] == "output_text" else "refusal"
            field = "text" if kind == "output_text" else "refusal"
            text = part[field]
            event("response.content_part.added", **ids, content_index=number, part={**part, field: ""})
            for piece in pieces(text, parts):
                event(f"response.{kind}.delta", **ids, content_index=number, delta=piece,
                      **({"logprobs": []} if kind == "output_text" else {}))
            event(f"response.{kind}.done", **ids, content_index=number,
                  **({"text": text, "logprobs": []} if kind == "output_text" else {"refusal": text}))
            event("response.content_part.done", **ids, content_index=number, part=part)
        event("response.output_item.done", output_index=index, item=item)
    event("response.completed" if payload["status"] == "completed" else "response.incomplete", response=payload)
    return events


class FakeModelServer(LoopbackServer):
    def __init__(self, rows=(), latency=0.0):
        self.rows = list(rows)
        self.latency = latency
        self.slow_seconds = 5.0
        self.stream_parts = 4  # a streamed answer comes in this many pieces of text
        self.part_seconds = 0.0  # how long the model takes for each piece (an answer not streamed: for all of them)
        self.usage_chunk_choices = []  # the choices of a chat stream's usage chunk (None: null)
        self.retry_after = "0"
        self.faults = {}
        self.answers = {}  # instance_id -> answers given, one per request, before the reference patch
        self.model_answers = {}  # model -> {instance_id: the answer that model always gives}
        self.refused_params = set()  # parameters this "model" refuses, like a reasoning model; a field inside one by
        # its path, as the API names it (reasoning.effort)
        self.output_limits = {}  # model -> its output limit: a request asking more is refused with a 400
        self.no_credit = False  # the account has no credit left: every request is refused
        self.reasoning_tokens = 0  # tokens a reasoning model thinks before each answer, billed as output
        self.reasoning = {}  # instance_id -> its reasoning tokens, instead of reasoning_tokens
        # A model stops at its output limit: reasoning that reaches it leaves an empty answer.
        self.cached_prefixes = {}  # Anthropic prompt cache: prefix -> when its entry expires (monotonic seconds)
        self.cache_ttl = 300.0  # an entry lives 5 minutes, renewed by each read
        # Batch APIs (OpenAI files and /v1/batches, Anthropic /v1/messages/batches)
        self.files = {}  # file id -> (metadata, bytes)
        self.batches = {}  # batch id -> {"provider", "object" (as the API shows it), "lines", "results"}
        self.batch_hold = threading.Event()  # set: batches stay pending (the provider has not got to them)
        self.expire_next = 0  # the next batch expires with this many of its requests not done
        self.expire_all = False  # while set, every batch expires with none of its requests done
        self.batch_models = None  # the models the OpenAI Batch API takes (None: all); a line of another fails validation
        # "after": a batch create request waits while set once the batch is made, as if the answer were slow to come;
        # "lost": it waits while set, then makes nothing, as if it had never reached the provider
        self.hold_batch_create = None
        self.create_waiting = threading.Event()  # set when a create request waits on hold_batch_create
        self.requests = []
        self.lock = threading.Lock()
        # Model requests being answered now, and the most at once. hold_until: each one waits (up to a
        # minute) until that many have come, to see whether the client keeps that many in flight together.
        self.in_flight = self.most_in_flight = 0
        self.hold_until = 0
        self.arrived = threading.Condition(self.lock)
        super().__init__(self._handler())

    def arrive(self):
        with self.arrived:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.arrived.notify_all()
            self.arrived.wait_for(lambda: len(self.requests) >= self.hold_until, timeout=60)

    def leave(self):
        with self.lock:
            self.in_flight -= 1

    def instance_for(self, text):
        for row in self.rows:
            if row["problem_statement"].strip()[:200] in text:
                return row
        return None

    def next_fault(self, instance_id):
        with self.lock:
            queue = self.faults.get(instance_id) or []
            return queue.pop(0) if queue else None

    def billed_usd(self, provider, request, batch=False):
        """What the provider bills for a request: this server's token counts at the genai-prices list price."""
        import genai_prices

        billed = request["billed"]
        usage = genai_prices.Usage(input_tokens=billed["input_tokens"], output_tokens=billed["output_tokens"],
                                   cache_read_tokens=billed.get("cached_input_tokens") or None,
                                   cache_write_tokens=billed.get("cache_write_tokens") or None)
        context = {"processing": "batch"} if batch else None
        return float(genai_prices.calc_price(usage, request["body"]["model"], provider_id=provider,
                                             price_context=context).total_price)

    def anthropic_cache(self, body):
        """(tokens read, tokens written) of the prompt cache: the prefix up to the last block with cache_control,
        if it is at least 1,024 tokens (Anthropic's least for a cache entry)."""
        blocks = [*(body["system"] if isinstance(body.get("system"), list) else []),
                  *(block for m in body["messages"] if isinstance(m["content"], list) for block in m["content"])]
        marked = [i for i, block in enumerate(blocks) if block.get("cache_control")]
        if not marked:
            return 0, 0
        prefix = "".join(block.get("text", "") for block in blocks[: marked[-1] + 1])
        tokens = len(prefix) // 4
        if tokens < 1024:
            return 0, 0
        with self.lock:
            fresh = self.cached_prefixes.get(prefix, 0) > time.monotonic()
            self.cached_prefixes[prefix] = time.monotonic() + self.cache_ttl
        return (tokens, 0) if fresh else (0, tokens)

    @staticmethod
    def messages_problem(body):
        """What the Messages API says of a request whose parameters or turns it refuses, or None."""
        unknown = sorted(set(body) - MESSAGES_PARAMS)
        if unknown:
            return f"{unknown[0]}: Extra inputs are not permitted"
        messages = body.get("messages") or []
        if messages and messages[0].get("role") != "user":
            return 'messages: first message must use the "user" role'
        for number, message in enumerate(messages):
            if number and message.get("role") == messages[number - 1].get("role"):
                return (f'messages: roles must alternate between "user" and "assistant", but found multiple '
                        f'"{message["role"]}" roles in a row')
            content = message.get("content")
            text = content if isinstance(content, str) else "".join(b.get("text", "x") for b in content or [])
            final_assistant = number == len(messages) - 1 and message.get("role") == "assistant"
            if not text.strip() and not final_assistant:
                return "messages: all messages must have non-empty content except for the optional final assistant message"
        return None

    # ---- batches: processed in a thread that sends each request to this server itself ----

    def start_batch(self, provider, lines, endpoint=None, input_file_id=None, metadata=None):
        batch_id = ("batch_" if provider == "openai" else "msgbatch_") + uuid.uuid4().hex[:16]
        created = datetime.now(timezone.utc)
        if provider == "openai":
            shown = {"id": batch_id, "object": "batch", "endpoint": endpoint, "errors": None,
                     "input_file_id": input_file_id, "completion_window": "24h", "status": "validating",
                     "output_file_id": None, "error_file_id": None, "created_at": int(created.timestamp()),
                     "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": metadata}
        else:
            shown = {"id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                     "request_counts": {"processing": len(lines), "succeeded": 0, "errored": 0, "canceled": 0,
                                        "expired": 0},
                     "ended_at": None, "created_at": created.isoformat(), "cancel_initiated_at": None,
                     "expires_at": (created + timedelta(hours=24)).isoformat(), "archived_at": None,
                     "results_url": None}
        expire, self.expire_next = (len(lines) if self.expire_all else self.expire_next), 0
        batch = {"provider": provider, "object": shown, "lines": lines, "results": [], "cancel": False}
        with self.lock:
            self.batches[batch_id] = batch
        threading.Thread(target=self.process_batch, args=(batch, expire), daemon=True).start()
        return shown

    def process_batch(self, batch, expire):
        shown, openai = batch["object"], batch["provider"] == "openai"
        while self.batch_hold.is_set() and not batch["cancel"]:
            time.sleep(0.05)
        if openai:
            errors = self.validation_errors(batch["lines"], shown["endpoint"])
            if errors:  # the whole batch fails: nothing is run or billed
                shown.update(status="failed", failed_at=int(time.time()), errors={"object": "list", "data": errors},
                             request_counts={"total": 0, "completed": 0, "failed": 0})
                return
            shown["status"] = "in_progress"
        done = len(batch["lines"]) - expire
        for number, line in enumerate(batch["lines"]):
            if batch["cancel"] or number >= done:
                kind = "canceled" if batch["cancel"] else "expired"
                if openai:
                    batch["results"].append({"id": f"batch_req_{number}", "custom_id": line["custom_id"],
                                             "response": None, "error": {"code": f"batch_{kind.replace('canceled', 'cancelled')}",
                                                                         "message": f"This request was {kind}."}})
                    shown["request_counts"]["failed"] += 1
                else:
                    batch["results"].append({"custom_id": line["custom_id"], "result": {"type": kind}})
                    shown["request_counts"]["processing"] -= 1
                    shown["request_counts"][kind] += 1
                continue
            path, body = (line["url"], line["body"]) if openai else ("/v1/messages", line["params"])
            request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json", "x-batch": shown["id"]})
            try:
                with urllib.request.urlopen(request) as reply:
                    status, payload = reply.status, json.loads(reply.read())
            except urllib.error.HTTPError as error:
                status, payload = error.code, json.loads(error.read())
            if openai:
                batch["results"].append({"id": f"batch_req_{number}", "custom_id": line["custom_id"], "error": None,
                                         "response": {"status_code": status, "request_id": f"req_{number}",
                                                      "body": payload}})
                shown["request_counts"]["completed" if status == 200 else "failed"] += 1
            else:
                result = ({"type": "succeeded", "message": payload} if status == 200 else
                          {"type": "errored", "error": payload})
                batch["results"].append({"custom_id": line["custom_id"], "result": result})
                shown["request_counts"]["processing"] -= 1
                shown["request_counts"]["succeeded" if status == 200 else "errored"] += 1
        if openai:
            good = [r for r in batch["results"] if r["response"] and r["response"]["status_code"] == 200]
            bad = [r for r in batch["results"] if r not in good]
            for name, rows in (("output_file_id", good), ("error_file_id", bad)):
                if rows:
                    shown[name] = self.add_file("batch_output", "".join(json.dumps(r) + "\n" for r in rows).encode())
            shown["status"] = "cancelled" if batch["cancel"] else "expired" if expire else "completed"
        else:
            shown["processing_status"] = "ended"
            shown["ended_at"] = datetime.now(timezone.utc).isoformat()
            shown["results_url"] = f"{self.url}/v1/messages/batches/{shown['id']}/results"

    def validation_errors(self, lines, endpoint):
        """The errors of an OpenAI batch's validation (batch.errors.data), one per line at fault, with the codes
        OpenAI documents (url_mismatch, duplicate_custom_id, mismatched_model, model_not_found)."""
        errors, seen = [], set()
        for number, line in enumerate(lines, 1):
            model = line["body"].get("model")
            if line["url"] != endpoint:
                code, param, message = ("url_mismatch", "url", f"The url '{line['url']}' for this request does not "
                                        f"match the batch's endpoint '{endpoint}'.")
            elif line["custom_id"] in seen:
                code, param, message = ("duplicate_custom_id", "custom_id", f"The custom_id '{line['custom_id']}' for "
                                        "this request is a duplicate of another request. The custom_id parameter "
                                        "must be unique for each request in a batch.")
            elif model != lines[0]["body"].get("model"):
                code, param, message = ("mismatched_model", "body.model", f"The model '{model}' for this request does "
                                        "not match the rest of the batch. Each batch must contain requests for a "
                                        "single model.")
            elif self.batch_models is not None and model not in self.batch_models:
                code, param, message = ("model_not_found", "body.model", f"The provided model '{model}' is not "
                                        "supported by the Batch API.")
            else:
                seen.add(line["custom_id"])
                continue
            seen.add(line["custom_id"])
            errors.append({"code": code, "message": message, "param": param, "line": number})
        return errors

    def hold_create(self, when):
        """A create request waits here while hold_batch_create is `when`; whether it waited."""
        waited = False
        while self.hold_batch_create == when:
            waited = True
            self.create_waiting.set()
            time.sleep(0.05)
        return waited

    def listed(self, provider, query):
        """A page of the provider's batches, newest first, as its list endpoint gives it."""
        shown = [b["object"] for b in reversed(list(self.batches.values())) if b["provider"] == provider]
        most = 100 if provider == "openai" else 1000
        limit = int(query.get("limit", ["20"])[0])
        if not 1 <= limit <= most:
            return None
        after = query.get("after" if provider == "openai" else "after_id", [None])[0]
        if after:
            shown = shown[[b["id"] for b in shown].index(after) + 1:]
        page = shown[:limit]
        listing = {"data": page, "has_more": len(shown) > limit, "first_id": page[0]["id"] if page else None,
                   "last_id": page[-1]["id"] if page else None}
        return {"object": "list", **listing} if provider == "openai" else listing

    def add_file(self, purpose, data, filename="output.jsonl"):
        file_id = "file-" + uuid.uuid4().hex[:16]
        meta = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}
        with self.lock:
            self.files[file_id] = (meta, data)
        return file_id

    def requests_for(self, instance_id):
        return [r for r in self.requests if r["instance_id"] == instance_id]

    def _handler(self):
        server = self

        class Handler(QuietHandler):
            def json_reply(self, payload):
                return self.send(200, json.dumps(payload).encode(), {})

            def do_GET(self):
                path, _, query = self.path.partition("?")
                if path in ("/v1/batches", "/v1/messages/batches"):
                    provider = "openai" if path == "/v1/batches" else "anthropic"
                    listing = server.listed(provider, urllib.parse.parse_qs(query))
                    if listing is None:
                        return self.error(400, "limit: out of range", provider == "anthropic")
                    return self.json_reply(listing)
                match = re.fullmatch(r"/v1/(?:messages/)?batches/([\w-]+)(/results)?", self.path)
                if match and match.group(1) in server.batches:
                    batch = server.batches[match.group(1)]
                    if not match.group(2):
                        return self.json_reply(batch["object"])
                    if batch["object"].get("processing_status") != "ended":
                        return self.error(400, "Batch is still processing; results are not ready.", True)
                    data = "".join(json.dumps(r) + "\n" for r in batch["results"]).encode()
                    return self.send(200, data, {}, "application/binary")
                match = re.fullmatch(r"/v1/files/([\w-]+)/content", self.path)
                if match and match.group(1) in server.files:
                    return self.send(200, server.files[match.group(1)][1], {}, "application/octet-stream")
                return self.error(404, f"No such object: {self.path}", "/messages" in self.path)

            def batch_post(self, raw):
                """The batch endpoints of both APIs; None when the path is not one of them."""
                if self.path == "/v1/files":
                    form = BytesParser().parsebytes(b"Content-Type: " + self.headers["Content-Type"].encode()
                                                    + b"\r\n\r\n" + raw)
                    parts = {p.get_param("name", header="content-disposition"): p for p in form.get_payload()}
                    if "file" not in parts or "purpose" not in parts:
                        return self.error(400, "Missing required parameter: 'file' or 'purpose'.", False)
                    purpose, data = parts["purpose"].get_payload(decode=True).decode(), parts["file"].get_payload(decode=True)
                    if purpose == "batch":
                        for number, text in enumerate(data.decode().splitlines(), 1):
                            line = json.loads(text)
                            if {"custom_id", "method", "url", "body"} - set(line) or line["method"] != "POST":
                                return self.error(400, f"Line {number} of the file is not a valid batch request.", False)
                    return self.json_reply(server.files[server.add_file(purpose, data, "requests.jsonl")][0])
                if self.path == "/v1/batches":
                    body = json.loads(raw)
                    if body.get("input_file_id") not in server.files:
                        return self.error(400, f"Invalid 'input_file_id': {body.get('input_file_id')}.", False)
                    if body.get("completion_window") != "24h" or body.get("endpoint") not in (
                            "/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions"):
                        return self.error(400, "Invalid 'endpoint' or 'completion_window'.", False)
                    metadata = body.get("metadata") or {}
                    if len(metadata) > 16:
                        return self.error(400, "Invalid 'metadata': too many properties. Expected an object with at "
                                          f"most 16 properties, but got an object with {len(metadata)} properties "
                                          "instead.", False, param="metadata", code="object_above_max_properties")
                    for key, value in metadata.items():
                        if len(key) > 64:
                            return self.error(400, f"Invalid property name in 'metadata': '{key}' is too long. "
                                              "Expected a string with maximum length 64, but got a string with length "
                                              f"{len(key)} instead.", False, param=f"metadata.{key}",
                                              code="property_name_above_max_length")
                        if not isinstance(value, str) or len(value) > 512:
                            return self.error(400, f"Invalid 'metadata.{key}': string too long. Expected a string with "
                                              "maximum length 512, but got a string with length "
                                              f"{len(str(value))} instead.", False, param=f"metadata.{key}",
                                              code="string_above_max_length")
                    lines = [json.loads(t) for t in server.files[body["input_file_id"]][1].decode().splitlines()]
                    if server.hold_create("lost"):
                        return self.error(500, "The server had an error.", False)
                    shown = server.start_batch("openai", lines, body["endpoint"], body["input_file_id"],
                                               body.get("metadata"))
                    server.hold_create("after")
                    return self.json_reply(shown)
                if self.path == "/v1/messages/batches":
                    requests = json.loads(raw).get("requests") or []
                    ids = [r.get("custom_id", "") for r in requests]
                    if not requests or len(set(ids)) != len(ids) or not all(
                            re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids):
                        return self.error(400, "requests: each needs a unique custom_id of 1 to 64 letters, digits, "
                                          "_ or -.", True)
                    if server.hold_create("lost"):
                        return self.error(500, "The server had an error.", True)
                    shown = server.start_batch("anthropic", requests)
                    server.hold_create("after")
                    return self.json_reply(shown)
                match = re.fullmatch(r"/v1/(?:messages/)?batches/([\w-]+)/cancel", self.path)
                if match and match.group(1) in server.batches:
                    batch = server.batches[match.group(1)]
                    batch["cancel"] = True
                    shown = batch["object"]
                    if "status" in shown and shown["status"] not in ("completed", "expired", "cancelled"):
                        shown["status"] = "cancelling"
                    elif shown.get("processing_status") == "in_progress":
                        shown["processing_status"] = "canceling"
                        shown["cancel_initiated_at"] = datetime.now(timezone.utc).isoformat()
                    return self.json_reply(shown)
                return None

            def do_POST(self):
                self.counted = False
                try:
                    self.post()
                finally:
                    if self.counted:
                        server.leave()

            def post(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if "/batches" in self.path or self.path == "/v1/files":
                    if self.batch_post(raw) is None:
                        self.error(404, f"No such route: {self.path}", "/messages" in self.path)
                    return
                body = json.loads(raw)
                anthropic = self.path.endswith("/messages")
                responses = self.path.endswith("/responses")
                if responses:  # the Responses API: input (a string or messages) and instructions
                    given = body.get("input", "")
                    messages = [{"content": given}] if isinstance(given, str) else given
                    system = body.get("instructions") or ""
                else:
                    messages, system = body.get("messages", []), body.get("system", "")
                text = " ".join(m["content"] if isinstance(m["content"], str) else
                                "".join(block.get("text", "") for block in m["content"]) for m in messages)
                text += system if isinstance(system, str) else "".join(block.get("text", "") for block in system)
                row = server.instance_for(text)
                instance_id = row["instance_id"] if row else None
                # "billed": the tokens this server charges for the request, set when it answers
                logged = {"path": self.path, "body": body, "instance_id": instance_id, "billed": None,
                          "batch": self.headers.get("x-batch"),
                          "headers": {k.lower(): v for k, v in self.headers.items()}, "at": time.monotonic()}
                with server.lock:
                    server.requests.append(logged)
                self.counted = True
                server.arrive()
                if server.latency:
                    time.sleep(server.latency)
                fault = server.next_fault(instance_id)
                if "stream_options" in body and not body.get("stream") and not anthropic:
                    return self.error(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                                      False, param="stream_options", code=None)
                if responses:
                    unknown = sorted(set(body) - RESPONSES_PARAMS)
                    if unknown:
                        return self.error(400, f"Unknown parameter: '{unknown[0]}'.", False, param=unknown[0],
                                          code="unknown_parameter")
                    if "input" not in body or "model" not in body:
                        return self.error(400, "Missing required parameter: 'input'.", False, param="input",
                                          code="missing_required_parameter")
                elif not anthropic and body["model"] in RESPONSES_ONLY:
                    return self.error(404, "This model is only supported in v1/responses and not in "
                                      "v1/chat/completions.", False, param="model", code=None)
                problem = server.messages_problem(body) if anthropic else None
                if problem:
                    return self.error(400, problem, anthropic)
                given = {*body, *(f"{name}.{field}" for name, value in body.items() if isinstance(value, dict)
                                  for field in value)}
                refused = server.refused_params & {name for name in given if name != "stream" or body[name]}
                if refused and not anthropic:
                    param = sorted(refused)[0]
                    if param == "stream":
                        return self.error(400, STREAM_REFUSED, False, param="stream", code="unsupported_value")
                    return self.error(400, f"Unsupported parameter: '{param}' is not supported with this model.",
                                      anthropic, param=param, code="unsupported_parameter")
                if server.no_credit:
                    if anthropic:
                        return self.error(400, "Your credit balance is too low to access the Anthropic API. Please go "
                                          "to Plans & Billing to upgrade or purchase credits.", anthropic)
                    return self.error(429, "You exceeded your current quota, please check your plan and billing "
                                      "details.", anthropic, code="insufficient_quota", kind="insufficient_quota")
                asked = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
                most = server.output_limits.get(body["model"])
                if most is not None and asked is not None and asked > most:
                    if anthropic:
                        return self.error(400, f"max_tokens: {asked} > {most}, which is the maximum allowed number "
                                          f"of output tokens for {body['model']}", anthropic)
                    param = next(p for p in ("max_tokens", "max_completion_tokens", "max_output_tokens") if p in body)
                    return self.error(400, f"{param} is too large: {asked}. This model supports at most {most} "
                                      f"completion tokens, whereas you provided {asked}.", anthropic, param=param)
                if fault == "429":
                    return self.error(429, "Rate limit reached; try again later.", anthropic,
                                      headers={"retry-after": server.retry_after})
                header = re.fullmatch(r"(\d{3}) ([\w-]+): (.+)", fault or "")  # e.g. "500 x-should-retry: false"
                if header:
                    status, name, value = int(header.group(1)), header.group(2), header.group(3)
                    return self.error(status, f"Error {status}; see the {name} header.", anthropic, headers={name: value})
                if fault in ("500", "529"):
                    return self.error(int(fault), "The server had an error.", anthropic)
                if fault == "context":
                    message = ("prompt is too long: 250000 tokens > 200000 maximum" if anthropic else
                               "This model's maximum context length is 128000 tokens. However, your messages "
                               "resulted in 250000 tokens.")
                    return self.error(400, message, anthropic, code="context_length_exceeded")
                if fault == "auth":  # some gateways echo the key they were given
                    key = self.headers.get("x-api-key") or self.headers.get("authorization", "")
                    return self.error(401, f"Invalid API key: {key}", anthropic)
                if fault == "slow":
                    time.sleep(server.slow_seconds)
                if fault == "malformed":
                    if body.get("stream"):
                        return self.send(200, b'data: {"id": "x", "choices": [\n\n', {}, "text/event-stream")
                    return self.send(200, b'{"id": "x", "choices": [', {})
                answer = f"<patch>\n{row['patch']}</patch>\n" if row else "I cannot tell which issue this is."
                with server.lock:
                    scripted = server.answers.get(instance_id) or []
                    answer = scripted.pop(0) if scripted else answer
                    answer = server.model_answers.get(body.get("model"), {}).get(instance_id, answer)
                stop = {"truncated": "length", "refusal": "refusal"}.get(fault, "stop")
                if fault == "truncated":
                    answer = answer[: len(answer) // 2]
                if fault in ("empty", "refusal"):
                    answer = ""
                limit = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens")
                reasoning = server.reasoning.get(instance_id, server.reasoning_tokens)
                if limit is not None and reasoning >= limit:  # the whole output limit spent on reasoning
                    answer, stop, reasoning = "", "length", limit
                elif limit is not None and len(answer) // 4 > limit:  # like a model, it stops at the output limit
                    answer, stop = answer[: 4 * limit], "length"
                usage_in, usage_out = len(text) // 4, len(answer) // 4 + reasoning
                # OpenAI caches prompt prefixes by itself (here: 100 tokens of each); Anthropic caches only up to
                # a block marked with cache_control: written by the first request, read by later ones
                read, written = (server.anthropic_cache(body) if anthropic else (100, 0))
                logged["billed"] = {"input_tokens": usage_in, "cached_input_tokens": read,
                                    "cache_write_tokens": written, "output_tokens": usage_out,
                                    "reasoning_tokens": reasoning}
                model = body["model"]
                if anthropic:
                    thinking = [{"type": "thinking", "thinking": "Let me think.", "signature": "c2ln"}] if reasoning else []
                    payload = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                               "content": thinking + ([{"type": "text", "text": answer}] if answer else []),
                               "stop_reason": {"length": "max_tokens", "refusal": "refusal"}.get(stop, "end_turn"),
                               "stop_sequence": None,
                               "usage": {"input_tokens": usage_in - read - written, "output_tokens": usage_out,
                                         "cache_read_input_tokens": read, "cache_creation_input_tokens": written,
                                         "output_tokens_details": {"thinking_tokens": reasoning}}}
                elif responses:
                    content = ([{"type": "refusal", "refusal": "I can't help with that."}] if fault == "refusal" else
                               [{"type": "output_text", "text": answer, "annotations": []}])
                    # reasoning that spent the whole limit leaves no message at all
                    output = [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                               "content": content}] if answer or stop != "length" else []
                    if reasoning:
                        output.insert(0, {"type": "reasoning", "id": "rs_1", "summary": []})
                    payload = {"id": "resp_1", "object": "response", "created_at": time.time(), "model": model,
                               "status": "incomplete" if stop == "length" else "completed",
                               "incomplete_details": {"reason": "max_output_tokens"} if stop == "length" else None,
                               "error": None, "instructions": body.get("instructions"), "output": output,
                               "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                               "temperature": body.get("temperature"), "top_p": 1.0,
                               "reasoning": body.get("reasoning"),
                               "usage": {"input_tokens": usage_in, "output_tokens": usage_out,
                                         "total_tokens": usage_in + usage_out,
                                         "input_tokens_details": {"cached_tokens": read, "cache_write_tokens": 0},
                                         "output_tokens_details": {"reasoning_tokens": reasoning}}}
                else:
                    message = {"role": "assistant", "content": answer or (None if fault == "refusal" else ""),
                               "refusal": "I can't help with that." if fault == "refusal" else None}
                    payload = {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                               "model": model,
                               "choices": [{"index": 0, "message": message,
                                            "finish_reason": "stop" if fault == "refusal" else stop}],
                               "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out,
                                         "total_tokens": usage_in + usage_out,
                                         "prompt_tokens_details": {"cached_tokens": 100},
                                         "completion_tokens_details": {"reasoning_tokens": reasoning}}}
                if body.get("stream") and not anthropic:
                    events = (response_events(payload, server.stream_parts) if responses else
                              chat_chunks(payload, (body.get("stream_options") or {}).get("include_usage"),
                                          server.stream_parts, server.usage_chunk_choices))
                    return self.stream(events, cut=fault == "cut")
                time.sleep(server.part_seconds * server.stream_parts)
                self.send(200, json.dumps(payload).encode(), {})

            def stream(self, events, cut=False):
                """Server-sent events, each piece of text after the model's time for it; cut: the connection
                closes halfway."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                try:
                    for number, (kind, data) in enumerate(events):
                        if cut and number == len(events) // 2:
                            break
                        if (kind or "").endswith(".delta") or kind is None and data != "[DONE]" and any(
                                c["delta"].get("content") for c in data["choices"] or []):
                            time.sleep(server.part_seconds)
                        text = data if isinstance(data, str) else json.dumps(data)
                        self.wfile.write(((f"event: {kind}\n" if kind else "") + f"data: {text}\n\n").encode())
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True
                return True

            def error(self, status, message, anthropic, headers=None, param=None, code=None, kind=None):
                kind = kind or ERROR_TYPES.get(status, "api_error")
                if anthropic:
                    payload = {"type": "error", "error": {"type": kind, "message": message}}
                else:
                    payload = {"error": {"message": message, "type": kind, "param": param, "code": code}}
                return self.send(status, json.dumps(payload).encode(), headers or {})

            def send(self, status, data, headers, content_type="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: what a timeout test wants
                return True

        return Handler


def interrupt_when_asked(server):
    """Send SIGINT to the calling thread once the server has a request in hand, as Ctrl-C during a request."""
    import signal

    main = threading.get_ident()

    def interrupt():
        while not server.requests:
            time.sleep(0.05)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()

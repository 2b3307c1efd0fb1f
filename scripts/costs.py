"""What answers cost, and the run's budget.

Prices come from the genai-prices database (pinned in requirements.txt, offline), which
matches a provider's model id as the provider names it (dated names too); prices.yaml beside
this file adds what the database lacks, and the `prices` setting overrides or adds models by
exact name (local servers, fine-tunes). A price is a dict in USD per million tokens: input,
cached_input (cache reads), cache_write, output, reasoning (default: output), tiers (long-context
rates, each for requests of more than `above` input tokens) and source.

The budget is kept in a ledger, results/<run>/spend.jsonl, appended to under a file lock so that
parallel jobs, separate processes and cluster jobs on a shared filesystem all see one total. A
paid request is one entry: the line that opens it, and a later line with the same `request` id
that settles it (read_ledger gives them folded into one). Appending, and parsing only the lines
added since the last read, keeps each request's bookkeeping flat however long the run.

Before a request starts, its worst case (`worst_case_usd`) is reserved: the line is
written with state "open", and only if the settled spend, the open reservations and this
worst case together stay within max_cost. One that would fit once the requests in flight
settle waits for them; one that cannot fit is refused (BudgetSpent) and not sent. When the
request ends its line is settled:
  settled     the answer came: cost_usd from the usage the provider reported
  released    the request surely was not billed (no connection, a 429 or another 4xx): 0
  worst_case  it may have been billed but says nothing of its usage (a timeout, a 5xx, a
              body that does not parse, or its job ended mid-request): counted at its reservation
An open line whose job was killed is never freed: it counts at its worst case, and the
next request of its instance and sample marks it worst_case (each has one request in flight at most).
A refused request is a line with state "refused" and cost 0, for the run's final message.

Budget is what the stages use: the price and worst case of a model's requests, and
`with budget.request(instance_id, messages) as paid:` around one request, which reserves when it
starts and, whatever the ending, settles when it ends: `paid.answered(usage)` at its cost, an
exception by the rule above (Budget.failed). The batch stage, whose reservations outlive its job,
reserves and settles through the Budget's own methods.
"""
import contextlib
import functools
import json
import math
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import genai_prices
import yaml
from filelock import FileLock
from genai_prices import data_snapshot

from scripts import providers
from scripts.common import now

PRICE_TABLE = Path(__file__).parent / "prices.yaml"
# The chat format adds a few tokens per message (role, separators) and per request (the reply's
# priming): a few for OpenAI's and Anthropic's formats, bounded here with room to spare.
TOKENS_PER_MESSAGE = 16
TOKENS_PER_REQUEST = 64


class BudgetSpent(Exception):
    pass


class UnknownPrice(Exception):
    """A model without a known price in a run with max_cost: its requests cannot be bounded."""


DATABASE = f"genai-prices {genai_prices.__version__}"
# the database's price keys and ours
DATABASE_KEYS = {"input_mtok": "input", "cache_read_mtok": "cached_input", "cache_write_mtok": "cache_write",
                 "output_mtok": "output", "output_reasoning_mtok": "reasoning"}


@functools.cache
def _price_table():
    return yaml.safe_load(PRICE_TABLE.read_text(encoding="utf-8")) or {}


def load_prices(overrides=None):
    """The prices that come before the database, by exact model name: prices.yaml, then the `prices` setting."""
    table = {name: dict(price, source=price.get("source", "scripts/prices.yaml")) for name, price in _price_table().items()}
    return {**table, **{name: dict(price, source="the prices setting") for name, price in (overrides or {}).items()}}


def database_price(provider, model, batch=False):
    """The database's price of a model of a provider ("openai", "anthropic") at today's date, batch rates
    with batch=True; None when the database does not know the model."""
    try:
        found_provider, info = data_snapshot.get_snapshot().find_provider_model(model, None, provider, None)
    except LookupError:
        return None
    rates = info.get_prices(datetime.now(timezone.utc), {"processing": "batch"} if batch else None)
    price, tiers = {}, {}
    for key, ours in DATABASE_KEYS.items():
        value = getattr(rates, key, None)
        if isinstance(value, genai_prices.types.TieredPrices):
            for tier in value.tiers:
                tiers.setdefault(tier.start, {"above": tier.start})[ours] = float(tier.price)
            value = value.base
        if value is not None:
            price[ours] = float(value)
    if "input" not in price or "output" not in price:
        return None  # priced by other units (images, audio, requests)
    if tiers:
        price["tiers"] = [tiers[start] for start in sorted(tiers)]
    rate = "batch rates" if batch else "list price"
    price["source"] = f"{DATABASE}: {found_provider.id}/{info.id}, {rate}"
    return price


def price_for(provider, model, prices, batch=False, database=True):
    """The price of the model: from `prices` (load_prices) by exact name, else from the database (unless database
    is False: a model served elsewhere than by its provider); None if unknown. A price of `prices` with a `batch`
    entry takes it for batch requests."""
    if model in prices:
        price = prices[model]
        if batch and price.get("batch"):
            return dict(price["batch"], source=f"{price['source']}, batch rates")
        return price
    return database_price(provider, model, batch) if database else None


def unknown_price_message(provider, model, database=True):
    where = (f"it is neither in the genai-prices database ({DATABASE}) nor in the prices setting" if database else
             f"it is served at base_url, not by {provider}'s own API, and such a model is priced only by the prices "
             f"setting (if the server bills at {provider}'s prices, add --config provider_prices=true)")
    return (f"no price is known for model {model} (provider {provider}): {where}, so its cost is unknown and max_cost "
            f"cannot bound it. Give its price in USD per million tokens: --config 'prices={{{model}: {{input: X, "
            "output: Y}}' (or a `prices:` entry in a --configfile).")


def rates_at(price, input_tokens):
    """The rates of a price for a request of input_tokens: a long-context tier prices all of its tokens."""
    rates = {key: value for key, value in price.items() if key not in ("tiers", "batch", "source")}
    for tier in price.get("tiers") or ():
        if input_tokens > tier["above"]:
            rates.update({key: value for key, value in tier.items() if key != "above"})
    return rates


def cost_usd(usage, price):
    """USD for one answer's usage at a price in USD per million tokens. input_tokens is the whole prompt
    (cache reads and writes included); output_tokens includes reasoning_tokens."""
    rates = rates_at(price, usage.get("input_tokens", 0))
    cached = usage.get("cached_input_tokens", 0)
    written = usage.get("cache_write_tokens", 0)
    reasoning = usage.get("reasoning_tokens", 0)
    fresh = usage.get("input_tokens", 0) - cached - written
    total = (
        fresh * rates["input"]
        + cached * rates.get("cached_input", rates["input"])
        + written * rates.get("cache_write", rates["input"])
        + (usage.get("output_tokens", 0) - reasoning) * rates["output"]
        + reasoning * rates.get("reasoning", rates["output"])
    )
    return round(total / 1_000_000, 8)


def worst_case_usd(messages, max_output_tokens, price):
    """The most a provider can bill for one request: every UTF-8 byte of the messages as an input
    token (a byte-level BPE tokenizer never makes more tokens than bytes; the local count may be
    lower than the provider's), plus the chat format's framing, at the dearest input price (a cache
    write costs more than plain input), plus the whole output limit at the output price."""
    text_bytes = sum(len(str(m["content"]).encode("utf-8")) for m in messages)
    tokens_in = text_bytes + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_REQUEST
    rates = rates_at(price, tokens_in)  # more tokens never take a cheaper tier
    input_price = max(rates["input"], rates.get("cache_write", rates["input"]))
    output_price = max(rates["output"], rates.get("reasoning", rates["output"]))
    # rounded up to a millionth of a USD, so that rounding never makes the bound smaller than the cost
    return math.ceil(tokens_in * input_price + max_output_tokens * output_price) / 1_000_000


_THREAD_LOCKS = {}  # ledger path -> the lock of this process's threads
_THREAD_LOCKS_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(ledger):
    """The ledger's lock, across processes (a lock file) and across the threads of one: threads wait in turn on a
    lock of their own, where on the lock file each would poll it every 50 ms (all of an api's requests at once)."""
    path = os.fspath(ledger)
    with _THREAD_LOCKS_LOCK:
        thread_lock = _THREAD_LOCKS.setdefault(path, threading.Lock())
    with thread_lock:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            yield


class _Folded:
    """What this process has read of a ledger: its entries (lines folded), those by request id, the open ones,
    and the settled spend, kept up to date line by line so that each request's bookkeeping stays flat."""

    def __init__(self, identity):
        self.identity, self.offset, self.entries, self.by_request, self.open, self.settled = identity, 0, [], {}, {}, 0.0

    def fold(self, line):
        entry = self.by_request.get(line.get("request"))
        if entry is None:
            entry = line
            self.entries.append(line)
            if line.get("request"):
                self.by_request[line["request"]] = line
        else:  # a later line of the request: it replaces the entry's state, cost and note
            self.settled -= _settled_usd(entry)
            entry.pop("note", None)
            entry.update(line)
        if entry.get("state") == "open":
            self.open[entry["request"]] = entry
        else:  # settled, released, worst_case, refused, or a line without a state (before reservations)
            self.open.pop(entry.get("request"), None)
        self.settled += _settled_usd(entry)

    def totals(self):
        return self.settled, sum(e["reserved_usd"] for e in self.open.values())


_FOLDED = {}  # ledger path -> _Folded, for this process


def _state(ledger):
    """The ledger as this process has folded it (called under the lock). Only the lines added since this
    process last read the file are parsed."""
    path = os.fspath(ledger)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        _FOLDED.pop(path, None)
        return _Folded(None)
    identity = (stat.st_dev, stat.st_ino)
    state = _FOLDED.get(path)
    if state is None or state.identity != identity or stat.st_size < state.offset:
        state = _FOLDED[path] = _Folded(identity)  # new, replaced or cut: read from the start
    with open(path, "rb") as f:
        f.seek(state.offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if line.strip():
            state.fold(json.loads(line))
    state.offset += end
    return state


def _read(ledger):
    """The ledger's entries, its lines folded (called under the lock)."""
    return _state(ledger).entries


def _append(ledger, lines):
    with open(ledger, "a", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
        f.flush()
        os.fsync(f.fileno())


def _settled_usd(entry):
    return 0.0 if entry.get("state") == "open" else entry.get("cost_usd") or 0.0


def totals(entries):
    """(settled USD, open reservations USD) of ledger entries. Lines without a state (ledgers
    written before reservations) are settled spend."""
    settled = sum(map(_settled_usd, entries))
    reserved = sum(e["reserved_usd"] for e in entries if e.get("state") == "open")
    return settled, reserved


def ledger_totals(ledger):
    """(settled USD, open reservations USD) of the ledger now."""
    with _locked(ledger):
        return _state(ledger).totals()


def spent(ledger):
    """What the run has spent or may have spent: settled spend plus open reservations at their worst case."""
    return sum(ledger_totals(ledger))


def reserve(ledger, instance_id, worst_usd, max_cost, wait_s=0.0, shared=(), sample=1):
    """Reserve a request's worst case and return the reservation's id. When it does not fit in
    max_cost (None: no budget) beside the spend and the open reservations, but would without those
    still in flight, wait up to wait_s (the longest a request may take) for them to settle: most
    cost less than their worst case. Raise BudgetSpent when it does not fit. shared: every ledger
    that max_cost bounds together, this one among them (the runs of models=[...]). sample: which of the
    instance's answers it is for (samples=k), each with its own request in flight."""
    deadline = time.monotonic() + wait_s
    ledgers = sorted({os.fspath(ledger), *map(os.fspath, shared)})  # locked in one order by every process
    while True:
        with contextlib.ExitStack() as locks:
            for path in ledgers:
                locks.enter_context(_locked(path))
            # its job ended before the answer came: it may have been billed, so it stays counted
            stale = [{"request": e["request"], "state": "worst_case", "cost_usd": e["reserved_usd"],
                      "note": "its job ended before the answer came"}
                     for e in _state(ledger).open.values() if e["instance_id"] == instance_id
                     and e.get("sample", 1) == sample]
            if stale:
                _append(ledger, stale)
            states = [_state(path) for path in ledgers]
            settled, reserved = (sum(column) for column in zip(*(state.totals() for state in states), strict=True))
            if max_cost is None or (settled + reserved + worst_usd <= max_cost and settled + reserved < max_cost):
                request = uuid.uuid4().hex[:12]
                _append(ledger, [{"instance_id": instance_id, **({"sample": sample} if sample > 1 else {}),
                                  "request": request, "state": "open",
                                  "reserved_usd": worst_usd, "cost_usd": None, "at": now(),
                                  "host": socket.gethostname(), "pid": os.getpid()}])
                return request
            # requests that may still be in flight: opened less than wait_s ago (older ones are of killed jobs)
            live = sum(e["reserved_usd"] for state in states for e in state.open.values()
                       if datetime.now(timezone.utc) - datetime.fromisoformat(e["at"]) < timedelta(seconds=wait_s))
            may_fit = live > 0 and settled + reserved - live + worst_usd <= max_cost
            if not may_fit or time.monotonic() >= deadline:
                _append(ledger, [{"instance_id": instance_id, "state": "refused", "reserved_usd": worst_usd,
                                  "cost_usd": 0.0, "at": now()}])
                raise BudgetSpent(
                    f"the budget is spent: this request may cost up to {worst_usd:.4f} USD, and with "
                    f"{settled:.4f} USD spent and {reserved:.4f} USD reserved by requests in flight it would pass "
                    f"max_cost={max_cost:g} (ledgers: {', '.join(ledgers)}). It was not sent; finished instances are kept.")
        time.sleep(0.5)


def settle(ledger, request, state, cost=None, note=None):
    """End a reservation: settled at cost, released (0), or worst_case (its reservation)."""
    with _locked(ledger):
        entry = _state(ledger).by_request[request]
        line = {"request": request, "state": state,
                "cost_usd": {"settled": cost, "released": 0.0, "worst_case": entry["reserved_usd"]}[state],
                "settled_at": now(), **({"note": note} if note else {})}
        _append(ledger, [line])
    return line["cost_usd"]


def record_spend(ledger, instance_id, cost):
    """A settled line for spend that had no reservation (a request of unknown worst case)."""
    with _locked(ledger):
        _append(ledger, [{"instance_id": instance_id, "state": "settled", "cost_usd": cost, "at": now()}])


class Budget:
    """The run's budget for the requests to one model: its price (batch rates with batch=True), each request's
    worst case reserved before it is sent, and the reservation settled when it ends. settings: the request
    settings (ledger, max_cost, prices, ...). UnknownPrice when the model has no price and max_cost is set;
    without max_cost such a model reserves 0 (nothing is refused) and costs 0. spent: the USD its requests
    counted."""

    def __init__(self, settings, provider, model, batch=False, log=print):
        self.settings, self.provider, self.model, self.log = settings, provider, model, log
        self.price = price_for(provider, model, settings["prices"], batch, settings["database_prices"])
        if self.price is None and settings.get("max_cost") is not None:
            raise UnknownPrice(unknown_price_message(provider, model, settings["database_prices"]))
        # A request that fits only once those in flight settle waits for them: at most as long as one may take.
        # A batch waits for none: its requests are reserved all at once.
        self.wait_s = 0.0 if batch else settings["request_timeout"] + 10
        self.spent = 0.0

    def worst_case(self, messages):
        """The worst case of a request of these messages now. The output limit may be lowered to the model's own
        by one retry inside providers.ask: never raised."""
        if not self.price:
            return 0.0
        return worst_case_usd(messages, providers.output_limit(self.provider, self.model, self.settings), self.price)

    def reserve(self, instance_id, worst, sample=1):
        """Reserve a request's worst case (reserve); BudgetSpent if it does not fit. The reservation's id."""
        return reserve(self.settings["ledger"], instance_id, worst, self.settings.get("max_cost"), self.wait_s,
                       self.settings.get("shared_ledgers", ()), sample)

    def answered(self, request, usage):
        """Settle a request whose answer came at the cost of its usage; that cost."""
        return self._settle(request, "settled", cost_usd(usage, self.price) if self.price else 0.0)

    def release(self, request, note):
        """Settle at 0 a request that surely was not billed."""
        return self._settle(request, "released", note=note)

    def failed(self, request, error):
        """Settle a request that brought no answer; the USD it counts. Released when it surely was not billed:
        never sent, or refused by the server before any work (429, 4xx). Anything else may have been billed
        (a timeout, a 5xx, a body that does not parse, an interrupt, error None: no answer was recorded): its
        worst case stays."""
        status = getattr(error, "status", None)
        unbilled = (isinstance(error, providers.Transient) and (not error.sent or (status is not None and status < 500))
                    or isinstance(error, (providers.ContextTooLong, providers.Rejected)) and (status or 0) < 500)
        if unbilled:
            return self.release(request, None)
        why = type(error).__name__ if error is not None else "the request ended without its answer recorded"
        return self._settle(request, "worst_case", note=f"no usage known: {why}")

    def _settle(self, request, state, cost=None, note=None):
        usd = settle(self.settings["ledger"], request, state, cost, note)
        self.spent += usd
        return usd

    @contextlib.contextmanager
    def request(self, instance_id, messages, sample=1):
        """One paid request (see the module's docstring): reserved on entering (BudgetSpent if it does not fit),
        settled on leaving, however it is left. A block left without paid.answered(usage) keeps the worst case and
        raises RuntimeError."""
        paid = Paid(self, messages, instance_id, sample)
        try:
            yield paid
        except BaseException as error:
            if paid.cost is None:
                paid.cost = self.failed(paid.id, error)
            raise
        if paid.cost is None:
            paid.cost = self.failed(paid.id, None)
            raise RuntimeError(f"the request {paid.id} of {instance_id} ended without its answer recorded "
                               "(paid.answered): counted at its worst case")


class Paid:
    """A request in flight (Budget.request): id, worst (its reservation), cost (None until it is settled)."""

    def __init__(self, budget, messages, instance_id, sample):
        self.budget, self.worst, self.cost = budget, budget.worst_case(messages), None
        self.id = budget.reserve(instance_id, self.worst, sample)

    def answered(self, usage):
        """Settle the request at the cost of its answer's usage; that cost."""
        if self.cost is not None:
            raise RuntimeError(f"the request {self.id} is settled already")
        self.cost = self.budget.answered(self.id, usage)
        if self.cost > self.worst:
            self.budget.log(f"warning: the answer cost {self.cost:.6f} USD, more than its reservation of "
                            f"{self.worst:.6f} USD")
        return self.cost


def read_ledger(ledger):
    """The ledger's entries, one per request (opened and settled), refusal or unreserved spend."""
    with _locked(ledger):
        return [dict(e) for e in _read(ledger)]


def stopped_instances(run_dir, entries):
    """{instance id: ("answer" or "repair", the refused reservation)} of the instances whose last request the
    budget refused and that still lack what it was for: their answer, or their repair."""
    last = {e["instance_id"]: e for e in entries}
    refused = {i: e["reserved_usd"] for i, e in last.items() if e.get("state") == "refused"}
    stopped = {}
    for instance_id, usd in refused.items():
        folder = Path(run_dir) / "instances" / instance_id
        if not (folder / "response.json").exists():
            stopped[instance_id] = ("answer", usd)
        elif not (folder / "repair.json").exists():
            stopped[instance_id] = ("repair", usd)
    return stopped


def quota_advice(run_dir):
    """The final message's part on a provider account without credit, when it stopped generation; '' if not."""
    marker = Path(run_dir) / "quota_exhausted.json"
    if not marker.exists():
        return ""
    stopped = json.loads(marker.read_text(encoding="utf-8"))
    index = Path(run_dir) / "instances.index.json"
    ids = json.loads(index.read_text(encoding="utf-8")) if index.exists() else []
    left = sum(not (Path(run_dir) / "instances" / i / "response.json").exists() for i in ids)
    return (f"Generation stopped: {stopped['provider']} says the account has no credit left ({stopped['error']}); "
            f"{left} instance(s) have no answer yet and were not asked again. Add credit to the account (or raise "
            "its quota), then run the same command again: finished instances are kept. ")


def budget_advice(run_dir, max_cost):
    """The final message's part on the budget, when it stopped instances of the run; '' if not."""
    ledger = Path(run_dir) / "spend.jsonl"
    if max_cost is None or not ledger.exists():
        return ""
    entries = read_ledger(ledger)
    stopped = stopped_instances(run_dir, entries)
    if not stopped:
        return ""
    answered = sum(what == "repair" for what, _ in stopped.values())
    total = sum(totals(entries))
    enough = math.ceil((total + sum(usd for _, usd in stopped.values())) * 100) / 100
    return (f"The budget max_cost={max_cost:g} USD stopped the run: {len(stopped)} instance(s) were not asked "
            f"({len(stopped) - answered} for an answer, {answered} for a self-repair; no request sent), {total:.4f} "
            f"USD spent. To go on, run the same command with --config max_cost={enough:g} (enough for one request "
            "of each at its worst case); finished instances are kept. ")

import json
import multiprocessing

import pytest

from scripts import costs

pytestmark = pytest.mark.unit


def test_prices_match_the_database_exactly_never_by_prefix():
    prices = costs.load_prices()
    pro, o3, mini = (costs.price_for("openai", m, prices) for m in ("o3-pro", "o3", "o3-mini"))
    # o3-pro is not o3, and o3-mini is not o3: each has its own list price
    assert (pro["input"], pro["output"]) == (20.0, 80.0) and (o3["input"], o3["output"]) == (2.0, 8.0)
    assert (mini["input"], mini["output"]) == (1.1, 4.4)
    assert pro["source"] == f"{costs.DATABASE}: openai/o3-pro, list price"
    assert costs.price_for("openai", "gpt-4o-2024-08-06", prices) == costs.price_for("openai", "gpt-4o", prices)
    assert costs.price_for("anthropic", "claude-sonnet-4-5-20250929", prices)["source"].endswith(
        "anthropic/claude-sonnet-4-5, list price")
    assert costs.price_for("openai", "gpt-5.4-pro", prices)["tiers"] == [{"above": 272000, "input": 60.0,
                                                                           "output": 270.0}]
    assert costs.price_for("openai", "llama-3-8b", prices) is None
    assert costs.price_for("openai", "o3-pro-turbo", prices) is None  # a longer name is another model
    assert costs.load_prices() == {}  # scripts/prices.yaml holds no list prices


def test_the_cost_of_a_run_is_what_the_database_bills():
    """The issue's 4-answer o3-pro run: 0.0145 USD at o3's price; its list price is ten times that."""
    import genai_prices

    usages = [{"input_tokens": 3000 + 500 * i, "output_tokens": 1000 + 100 * i, "reasoning_tokens": 600,
               "cached_input_tokens": 0} for i in range(4)]
    for provider, model, extra in [("openai", "o3-pro", {}), ("openai", "gpt-5.4-mini", {"cached_input_tokens": 1000}),
                                   ("openai", "gpt-5.4", {"input_tokens": 300_000}),
                                   ("anthropic", "claude-sonnet-4-6", {"cached_input_tokens": 800,
                                                                       "cache_write_tokens": 1200})]:
        for batch in (False, True):
            price = costs.price_for(provider, model, {}, batch=batch)
            ours = sum(costs.cost_usd(dict(u, **extra), price) for u in usages)
            context = {"processing": "batch"} if batch else None
            theirs = sum(float(genai_prices.calc_price(genai_prices.Usage(
                input_tokens=u.get("input_tokens"), output_tokens=u["output_tokens"],
                cache_read_tokens=u.get("cached_input_tokens") or None, cache_write_tokens=u.get("cache_write_tokens")),
                model, provider_id=provider, price_context=context).total_price) for u in (dict(u, **extra) for u in usages))
            assert ours == pytest.approx(theirs, rel=0.01), (model, batch)
    o3_pro = sum(costs.cost_usd(u, costs.price_for("openai", "o3-pro", {})) for u in usages)
    o3 = sum(costs.cost_usd(u, costs.price_for("openai", "o3", {})) for u in usages)
    assert o3_pro == pytest.approx(10 * o3)
    # batch rates are half the list price
    assert costs.cost_usd(usages[0], costs.price_for("openai", "o3-pro", {}, batch=True)) == pytest.approx(o3_pro / 4 / 2, rel=0.2)


def test_config_prices_add_and_override():
    prices = costs.load_prices({"llama-3-8b": {"input": 0.1, "output": 0.2}, "gpt-4o": {"input": 1, "output": 2}})
    assert costs.price_for("openai", "llama-3-8b", prices) == {"input": 0.1, "output": 0.2,
                                                              "source": "the prices setting"}
    assert costs.price_for("openai", "gpt-4o", prices)["input"] == 1
    assert costs.price_for("openai", "gpt-4o-mini", prices)["input"] == 0.15  # exact names only: the database's


def test_long_context_tier_prices_the_whole_request():
    price = {"input": 3.0, "output": 15.0, "tiers": [{"above": 200_000, "input": 6.0, "output": 22.5}]}
    assert costs.cost_usd({"input_tokens": 200_000, "output_tokens": 0}, price) == pytest.approx(0.6)
    assert costs.cost_usd({"input_tokens": 200_001, "output_tokens": 1000}, price) == pytest.approx(
        200_001 * 6e-6 + 1000 * 22.5e-6)
    assert costs.worst_case_usd([{"content": "x" * 300_000}], 0, price) >= 300_000 * 6e-6


def test_cost_arithmetic():
    price = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0}
    usage = {"input_tokens": 1_000_000, "cached_input_tokens": 200_000, "cache_write_tokens": 100_000,
             "output_tokens": 10_000}
    # 700k fresh at 3 + 200k cached at 0.3 + 100k written at 3.75 + 10k out at 15
    assert costs.cost_usd(usage, price) == pytest.approx(2.1 + 0.06 + 0.375 + 0.15)
    assert costs.cost_usd({"input_tokens": 1000, "output_tokens": 0}, {"input": 2.0, "output": 8.0}) == 0.002


def test_worst_case_bounds_the_real_tokens_of_real_prompts():
    from scripts import context, prompt
    from scripts.tokens import count_tokens

    from conftest import LITE_TEST, read_rows

    price = {"input": 3.0, "cache_write": 3.75, "output": 15.0}
    for row in read_rows(LITE_TEST)[:5]:
        messages = prompt.build_prompt(context.build_context(row, "none"),
                                       prompt.load_template(prompt.DEFAULT_TEMPLATE))["messages"]
        tokens = sum(count_tokens(m["content"]) for m in messages)
        nbytes = sum(len(m["content"].encode()) for m in messages)
        worst = costs.worst_case_usd(messages, 1000, price)
        # every byte and the framing at the cache-write price, the whole output limit at the output price
        assert worst == pytest.approx((nbytes + 16 * len(messages) + 64) * 3.75e-6 + 1000 * 15e-6, abs=1e-6)
        assert worst >= costs.cost_usd({"input_tokens": tokens, "cache_write_tokens": tokens,
                                        "output_tokens": 1000}, price)
    # non-ASCII text takes more bytes than characters: the bound follows the bytes
    assert costs.worst_case_usd([{"content": "é" * 1000}], 0, {"input": 1.0, "output": 1.0}) >= 2000e-6


def entries(ledger):
    return costs.read_ledger(ledger)


def test_the_ledger_is_appended_to_and_read_folded(tmp_path):
    """A settlement is a line added to the ledger, not a rewrite of it; readers see one entry per request,
    also a process that read the ledger before another process added to it."""
    ledger = tmp_path / "spend.jsonl"
    request = costs.reserve(ledger, "a", 0.5, 1.0)
    opened = ledger.read_text()
    costs.settle(ledger, request, "settled", 0.125)
    assert ledger.read_text().startswith(opened)
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(line["request"], line["state"]) for line in lines] == [(request, "open"), (request, "settled")]
    assert [(e["instance_id"], e["state"], e["cost_usd"]) for e in entries(ledger)] == [("a", "settled", 0.125)]
    # a line added by another process (here: written directly) is seen by the next read
    with open(ledger, "a") as f:
        f.write(json.dumps({"request": request, "state": "worst_case", "cost_usd": 0.5}) + "\n")
    assert costs.spent(ledger) == 0.5 and len(entries(ledger)) == 1
    # a ledger replaced by a shorter one is read again from its start
    ledger.write_text(json.dumps({"instance_id": "b", "cost_usd": 0.25}) + "\n")
    assert costs.spent(ledger) == 0.25


def test_reserve_settle_refuse(tmp_path):
    ledger = tmp_path / "run" / "spend.jsonl"
    first = costs.reserve(ledger, "a", 0.5, 1.0)
    second = costs.reserve(ledger, "b", 0.25, 1.0)
    assert costs.spent(ledger) == 0.75  # open reservations count at their worst case
    with pytest.raises(costs.BudgetSpent) as error:
        costs.reserve(ledger, "c", 0.375, 1.0)
    assert "may cost up to 0.3750 USD" in str(error.value) and "max_cost=1" in str(error.value)
    assert entries(ledger)[-1] == {"instance_id": "c", "state": "refused", "reserved_usd": 0.375, "cost_usd": 0.0,
                                   "at": entries(ledger)[-1]["at"]}
    assert costs.settle(ledger, first, "settled", 0.125) == 0.125
    third = costs.reserve(ledger, "c", 0.375, 1.0)  # it fits now: 0.125 + 0.25 + 0.375
    assert costs.settle(ledger, second, "released") == 0.0
    assert costs.settle(ledger, third, "worst_case", note="no usage known: APITimeoutError") == 0.375
    assert costs.spent(ledger) == 0.5
    states = [(e["instance_id"], e["state"], e["cost_usd"]) for e in entries(ledger)]
    assert states == [("a", "settled", 0.125), ("b", "released", 0.0), ("c", "refused", 0.0),
                      ("c", "worst_case", 0.375)]
    costs.reserve(ledger, "d", 0.0, None)  # no budget: nothing is refused
    with pytest.raises(costs.BudgetSpent):
        costs.reserve(ledger, "e", 0.0, 0.5)  # a spent budget starts nothing, even of unknown price


def test_a_killed_request_keeps_counting_at_its_worst_case(tmp_path):
    ledger = tmp_path / "spend.jsonl"
    costs.record_spend(ledger, "old", 0.25)
    ledger.write_text(ledger.read_text() + json.dumps({"instance_id": "older", "cost_usd": 0.125}) + "\n")
    costs.reserve(ledger, "a", 0.5, 1.0)  # its job is killed: never settled
    assert costs.spent(ledger) == 0.875
    with pytest.raises(costs.BudgetSpent):
        costs.reserve(ledger, "b", 0.25, 1.0)
    request = costs.reserve(ledger, "a", 0.125, 1.0)  # the rerun of the same instance
    killed = [e for e in entries(ledger) if e["instance_id"] == "a"][0]
    assert (killed["state"], killed["cost_usd"]) == ("worst_case", 0.5)
    assert "ended before the answer came" in killed["note"]
    costs.settle(ledger, request, "settled", 0.0625)
    assert costs.spent(ledger) == 0.9375


def _reserve_until_refused(ledger, results, shared=()):
    import time

    granted = 0
    while True:
        try:
            request = costs.reserve(ledger, "p", 0.125, 1.0, shared=shared)
        except costs.BudgetSpent:
            break
        granted += 1
        time.sleep(0.01)  # in flight while the other processes reserve
        costs.settle(ledger, request, "settled", 0.125)
    results.put(granted)


def test_two_samples_of_an_instance_are_in_flight_together(tmp_path):
    ledger = tmp_path / "spend.jsonl"
    first = costs.reserve(ledger, "a", 0.25, 1.0)
    costs.reserve(ledger, "a", 0.25, 1.0, sample=2)
    assert [(e.get("sample", 1), e["state"]) for e in entries(ledger)] == [(1, "open"), (2, "open")]
    costs.settle(ledger, first, "settled", 0.125)
    assert costs.spent(ledger) == 0.375  # not the first at its worst case beside the second
    costs.reserve(ledger, "a", 0.25, 1.0, sample=2)  # sample 2 again: its earlier request's job ended
    assert [(e.get("sample", 1), e["state"]) for e in entries(ledger)] == [(1, "settled"), (2, "worst_case"), (2, "open")]


def test_processes_never_reserve_past_the_budget(tmp_path):
    ledger = tmp_path / "spend.jsonl"
    results = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_reserve_until_refused, args=(ledger, results)) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sum(results.get() for _ in workers) == 8  # 8 x 0.125 = 1.0, whichever process got them
    assert costs.spent(ledger) == 1.0
    assert [e["state"] for e in entries(ledger)].count("settled") == 8
    assert [e["state"] for e in entries(ledger)].count("refused") == 6


def test_processes_of_several_models_never_reserve_past_the_budget_of_all(tmp_path):
    ledgers = [tmp_path / "a" / "spend.jsonl", tmp_path / "b" / "spend.jsonl"]
    results = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=_reserve_until_refused, args=(ledgers[n % 2], results, ledgers))
               for n in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sum(results.get() for _ in workers) == 8  # max_cost holds across both ledgers
    assert costs.spent(ledgers[0]) + costs.spent(ledgers[1]) == 1.0


def test_the_threads_of_a_process_take_the_ledger_lock_in_turn(tmp_path):
    import threading

    ledger = tmp_path / "spend.jsonl"
    entered = threading.Event()

    def second():
        with costs._locked(ledger):
            entered.set()

    with costs._locked(ledger):
        thread = threading.Thread(target=second, daemon=True)
        thread.start()
        assert not entered.wait(0.5)  # it waits while the lock is held
    assert entered.wait(10)  # and has it once released


def test_the_spend_of_another_model_counts(tmp_path):
    mine, other = tmp_path / "a" / "spend.jsonl", tmp_path / "b" / "spend.jsonl"
    costs.record_spend(other, "x", 0.875)
    with pytest.raises(costs.BudgetSpent, match=r"0\.8750 USD spent.*max_cost=1 \(ledgers: .*a/spend.jsonl, .*b/spend"):
        costs.reserve(mine, "y", 0.25, 1.0, shared=[mine, other])
    assert costs.reserve(mine, "y", 0.25, 1.0)  # alone, its own ledger has room
    with pytest.raises(costs.BudgetSpent, match=r"0\.8750 USD spent and 0\.2500 USD reserved"):
        costs.reserve(mine, "z", 0.125, 1.0, shared=[other])  # its own ledger is counted without being listed


def test_budget_advice_counts_the_instances_the_budget_stopped(tmp_path):
    run = tmp_path / "run"
    ledger = run / "spend.jsonl"
    assert costs.budget_advice(run, 1.0) == ""
    costs.settle(ledger, costs.reserve(ledger, "done", 0.5, 1.0), "settled", 0.25)
    for instance in ("a", "b", "done"):
        with pytest.raises(costs.BudgetSpent):
            costs.reserve(ledger, instance, 0.875, 1.0)
    (run / "instances" / "done").mkdir(parents=True)
    for name in ("response.json", "repair.json"):  # done: answered and repaired
        (run / "instances" / "done" / name).write_text("{}")
    (run / "instances" / "b").mkdir()
    (run / "instances" / "b" / "response.json").write_text("{}")  # b was answered; its self-repair was stopped
    advice = costs.budget_advice(run, 1.0)
    assert ("The budget max_cost=1 USD stopped the run: 2 instance(s) were not asked (1 for an answer, 1 for a "
            "self-repair; no request sent)") in advice
    assert "0.2500 USD spent" in advice and "--config max_cost=2" in advice  # 0.25 + 2 x 0.875
    costs.settle(ledger, costs.reserve(ledger, "a", 0.5, 3.0), "settled", 0.25)
    assert "1 instance(s) were not asked" in costs.budget_advice(run, 3.0)
    assert costs.budget_advice(run, None) == ""


def _spend_many(ledger):
    for _ in range(100):
        costs.record_spend(ledger, "x", 0.001)


def test_ledger_is_shared_by_processes(tmp_path):
    ledger = tmp_path / "spend.jsonl"
    workers = [multiprocessing.Process(target=_spend_many, args=(ledger,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert costs.spent(ledger) == pytest.approx(0.4)
    assert len(ledger.read_text().splitlines()) == 400


def test_a_request_that_fits_once_those_in_flight_settle_waits_for_them(tmp_path, monkeypatch):
    from types import SimpleNamespace

    ledger = tmp_path / "spend.jsonl"
    # the ledger's clock and waits: each wait moves the clock on, and another job may settle meanwhile
    clock, waits, meanwhile = [0.0], [], []

    def sleep(seconds):
        waits.append(seconds)
        clock[0] += seconds
        if meanwhile:
            meanwhile.pop(0)()

    monkeypatch.setattr(costs, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=sleep))
    in_flight = costs.reserve(ledger, "a", 0.5, 1.0)
    meanwhile.append(lambda: costs.settle(ledger, in_flight, "settled", 0.125))
    waited = costs.reserve(ledger, "b", 0.75, 1.0, wait_s=30)  # 0.5 + 0.75 > 1.0 until "a" settles at 0.125
    assert waits == [0.5]  # it waited, and went on once "a" had settled
    assert costs.spent(ledger) == 0.875
    costs.settle(ledger, waited, "settled", 0.75)
    # what cannot fit even when every request in flight settles at nothing is refused at once
    costs.reserve(ledger, "c", 0.0625, 1.0)
    waits.clear()
    with pytest.raises(costs.BudgetSpent):
        costs.reserve(ledger, "d", 0.25, 1.0, wait_s=30)
    assert waits == []
    # and so is what waited its longest: a reservation that never settles (its job was killed)
    with pytest.raises(costs.BudgetSpent):
        costs.reserve(ledger, "e", 0.125, 1.0, wait_s=1.5)
    assert waits == [0.5, 0.5, 0.5]
    refused = [e["instance_id"] for e in costs.read_ledger(ledger) if e["state"] == "refused"]
    assert refused == ["d", "e"]


# A paid request as one thing: costs.Budget, with the real clients against the loopback server.

def budget_settings(server, tmp_path, provider="openai", **changes):
    from scripts.settings import api_settings

    from conftest import run_config

    base_url = f"{server.url}/v1" if provider == "openai" else server.url
    config = run_config(**{"base_url": base_url, "request_timeout": 1.0, "max_output_tokens": 1000,
                           "provider_prices": True, **changes})
    settings = api_settings(provider, config, tmp_path)
    settings["api_key"] = "sk-test-budget"
    return settings


def problem_messages(row):
    return [{"role": "user", "content": f"Fix this issue with a patch.\n\n{row['problem_statement']}"}]


@pytest.fixture
def api():
    from conftest import LITE_TEST, read_rows
    from fake_api import FakeModelServer

    with FakeModelServer(read_rows(LITE_TEST)[:1]) as server:
        yield server


def open_and_settled(ledger):
    """(the ledger's open entries, [(state, cost, note)] of the others)."""
    lines = entries(ledger)
    return ([e for e in lines if e["state"] == "open"],
            [(e["state"], e["cost_usd"], e.get("note")) for e in lines if e["state"] != "open"])


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_paid_request_is_settled_at_the_cost_of_its_answer(provider, api, tmp_path):
    from scripts import providers

    settings = budget_settings(api, tmp_path, provider)
    budget = costs.Budget(settings, provider, "gpt-4o" if provider == "openai" else "claude-sonnet-4-6")
    messages = problem_messages(api.rows[0])
    with budget.request(api.rows[0]["instance_id"], messages) as paid:
        assert [e["state"] for e in entries(settings["ledger"])] == ["open"]
        assert entries(settings["ledger"])[0]["reserved_usd"] == paid.worst == budget.worst_case(messages) > 0
        answer = providers.ask(provider, messages, budget.model, settings)
        assert paid.answered(answer.usage) == costs.cost_usd(answer.usage, budget.price) > 0
    assert open_and_settled(settings["ledger"]) == ([], [("settled", paid.cost, None)])
    assert budget.spent == paid.cost == pytest.approx(api.billed_usd(provider, api.requests[-1]), rel=0.01)


# (the server's fault, the state it leaves, the exception the client's error becomes)
ENDINGS = [
    ("429", "released", "Transient"),  # refused before any work: not billed
    ("auth", "released", "Rejected"),  # a 401
    ("context", "released", "ContextTooLong"),
    ("500", "worst_case", "Transient"),  # a 5xx may have been billed
    ("slow", "worst_case", "Transient"),  # a timeout too
    ("malformed", "worst_case", "Transient"),  # an answer that does not parse
]


@pytest.mark.parametrize("fault, state, error", ENDINGS)
def test_a_paid_request_without_an_answer_is_settled_by_the_rule(fault, state, error, api, tmp_path):
    from scripts import providers

    api.slow_seconds = 2.0
    settings = budget_settings(api, tmp_path, max_cost=10.0)
    budget = costs.Budget(settings, "openai", "gpt-4o")
    row = api.rows[0]
    api.faults[row["instance_id"]] = [fault]
    with pytest.raises(getattr(providers, error)):
        with budget.request(row["instance_id"], problem_messages(row)) as paid:
            providers.ask("openai", problem_messages(row), "gpt-4o", settings)
    cost = paid.worst if state == "worst_case" else 0.0
    note = f"no usage known: {error}" if state == "worst_case" else None
    assert open_and_settled(settings["ledger"]) == ([], [(state, cost, note)])
    assert paid.cost == budget.spent == cost and costs.spent(settings["ledger"]) == cost


def test_a_request_that_never_connects_is_released_by_the_budget(tmp_path):
    import socket

    from scripts import providers

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = budget_settings(type("Closed", (), {"url": f"http://127.0.0.1:{port}"}), tmp_path)
    budget = costs.Budget(settings, "openai", "gpt-4o")
    with pytest.raises(providers.Transient):
        with budget.request("a", [{"role": "user", "content": "hello"}]):
            providers.ask("openai", [{"role": "user", "content": "hello"}], "gpt-4o", settings)
    assert open_and_settled(settings["ledger"]) == ([], [("released", 0.0, None)])


def test_an_interrupted_request_keeps_its_worst_case(api, tmp_path):
    """Ctrl-C while the request is in flight: it may have been billed, so it counts at its worst case, settled at
    once rather than left open for a later request to find."""
    from scripts import providers

    from fake_api import interrupt_when_asked

    api.slow_seconds = 5.0
    settings = budget_settings(api, tmp_path, request_timeout=30.0)
    budget = costs.Budget(settings, "openai", "gpt-4o")
    row = api.rows[0]
    api.faults[row["instance_id"]] = ["slow"]
    interrupt_when_asked(api)
    with pytest.raises(KeyboardInterrupt):
        with budget.request(row["instance_id"], problem_messages(row)) as paid:
            providers.ask("openai", problem_messages(row), "gpt-4o", settings)
    assert open_and_settled(settings["ledger"]) == ([], [("worst_case", paid.worst, "no usage known: KeyboardInterrupt")])


def test_a_caller_cannot_leave_a_reservation_open(tmp_path):
    settings = {"ledger": tmp_path / "spend.jsonl", "prices": {"m": {"input": 1.0, "output": 2.0}},
                "database_prices": False, "max_cost": 1.0, "request_timeout": 1.0, "max_output_tokens": 1000}
    budget = costs.Budget(settings, "openai", "m")
    messages = [{"role": "user", "content": "hello"}]
    # a block left without recording the answer: it may have been billed, so it keeps its worst case, and says so
    with pytest.raises(RuntimeError, match="ended without its answer recorded"):
        with budget.request("a", messages) as paid:
            pass
    assert open_and_settled(settings["ledger"]) == (
        [], [("worst_case", paid.worst, "no usage known: the request ended without its answer recorded")])
    # an answer is settled once: a second one, or an error after it, changes nothing
    with pytest.raises(ValueError):
        with budget.request("b", messages) as paid:
            assert paid.answered({"input_tokens": 100, "output_tokens": 50}) == 200e-6
            with pytest.raises(RuntimeError, match="settled already"):
                paid.answered({"input_tokens": 100, "output_tokens": 50})
            raise ValueError("after the answer")
    assert open_and_settled(settings["ledger"])[1][-1] == ("settled", 200e-6, None)
    # a request that does not fit is refused on entering: its block never runs, and nothing stays open
    with pytest.raises(costs.BudgetSpent):
        with budget.request("c", [{"role": "user", "content": "x" * 1_000_000}]):
            pytest.fail("a refused request was sent")
    left, ended = open_and_settled(settings["ledger"])
    assert left == [] and ended[-1] == ("refused", 0.0, None)
    assert budget.spent == pytest.approx(paid.worst + 200e-6)


def test_a_budget_needs_a_price_to_bound(tmp_path):
    settings = {"ledger": tmp_path / "spend.jsonl", "prices": {}, "database_prices": False, "max_cost": 1.0,
                "request_timeout": 1.0, "max_output_tokens": 1000}
    with pytest.raises(costs.UnknownPrice, match="no price is known for model local-model"):
        costs.Budget(settings, "openai", "local-model")
    # without max_cost a model of unknown price reserves and costs 0
    budget = costs.Budget(dict(settings, max_cost=None), "openai", "local-model")
    with budget.request("a", [{"role": "user", "content": "hello"}]) as paid:
        assert paid.worst == 0.0 and paid.answered({"input_tokens": 10, "output_tokens": 10}) == 0.0
    assert open_and_settled(settings["ledger"]) == ([], [("settled", 0.0, None)])
    # batch rates, and a batch's requests wait for none in flight
    batch = costs.Budget(dict(settings, database_prices=True), "openai", "gpt-4o", batch=True)
    assert batch.price == costs.price_for("openai", "gpt-4o", {}, batch=True) and batch.wait_s == 0.0

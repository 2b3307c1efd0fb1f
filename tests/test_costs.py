import multiprocessing

import pytest

from scripts import costs


def test_price_lookup_by_name_and_dated_name():
    prices = costs.load_prices()
    assert costs.price_for("gpt-4o", prices) == prices["gpt-4o"]
    assert costs.price_for("gpt-4o-2024-08-06", prices) == prices["gpt-4o"]
    assert costs.price_for("gpt-4o-mini-2024-07-18", prices) == prices["gpt-4o-mini"]
    assert costs.price_for("claude-sonnet-4-5-20250929", prices) == prices["claude-sonnet-4-5"]
    assert costs.price_for("llama-3-8b", prices) is None


def test_config_prices_add_and_override():
    prices = costs.load_prices({"llama-3-8b": {"input": 0.1, "output": 0.2}, "gpt-4o": {"input": 1, "output": 2}})
    assert costs.price_for("llama-3-8b", prices) == {"input": 0.1, "output": 0.2}
    assert prices["gpt-4o"] == {"input": 1, "output": 2}


def test_cost_arithmetic():
    price = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0}
    usage = {"input_tokens": 1_000_000, "cached_input_tokens": 200_000, "cache_write_tokens": 100_000,
             "output_tokens": 10_000}
    # 700k fresh at 3 + 200k cached at 0.3 + 100k written at 3.75 + 10k out at 15
    assert costs.cost_usd(usage, price) == pytest.approx(2.1 + 0.06 + 0.375 + 0.15)
    assert costs.cost_usd({"input_tokens": 1000, "output_tokens": 0}, {"input": 2.0, "output": 8.0}) == 0.002


def test_budget(tmp_path):
    ledger = tmp_path / "run" / "spend.jsonl"
    costs.check_budget(ledger, None)
    costs.check_budget(ledger, 1.0)  # nothing spent yet
    costs.record_spend(ledger, "a", 0.4)
    costs.record_spend(ledger, "b", 0.6)
    assert costs.spent(ledger) == pytest.approx(1.0)
    with pytest.raises(costs.BudgetSpent) as error:
        costs.check_budget(ledger, 1.0)
    assert "max_cost=1.0" in str(error.value) and "--config max_cost=" in str(error.value)
    costs.check_budget(ledger, 1.5)


def _spend_many(ledger):
    for _ in range(200):
        costs.record_spend(ledger, "x", 0.001)


def test_ledger_is_shared_by_processes(tmp_path):
    ledger = tmp_path / "spend.jsonl"
    workers = [multiprocessing.Process(target=_spend_many, args=(ledger,)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert costs.spent(ledger) == pytest.approx(0.8)
    assert len(ledger.read_text().splitlines()) == 800

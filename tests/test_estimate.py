"""The cost estimate: its arithmetic against known prices, and the stop above cost_warn."""
import json

import pytest

from scripts import costs, estimate

from conftest import assert_valid

pytestmark = pytest.mark.unit

PRICE = {"input": 3.00, "output": 15.00}  # USD per million tokens


def settings(**overrides):
    return {"provider": "openai", "prices": {"my-model": PRICE}, "answer_tokens": 1000, "max_output_tokens": 16000, "cost_warn": 10,
            "confirm_cost": False, "database_prices": True, **overrides}


def test_low_and_high_figures_follow_the_prices():
    record = estimate.estimate([2000, 3000, 5000], "my-model", PRICE, answer_tokens=1000, max_output_tokens=16000)
    # 10,000 prompt tokens at 3 USD/M = 0.03; answers 3 x 1,000 (low) or 3 x 16,000 (high) at 15 USD/M
    assert record["prompt_tokens"] == 10000 and record["instances"] == 3
    assert record["low_usd"] == pytest.approx(0.03 + 0.045)
    assert record["high_usd"] == pytest.approx(0.03 + 0.72)
    assert "0.07 to 0.75 USD" in estimate.describe(record)


def test_with_the_prompt_cache_each_prompt_is_written_at_the_cache_write_price(tmp_path):
    price = costs.price_for("anthropic", "claude-sonnet-4-6", {})
    assert price["cache_write"] == pytest.approx(1.25 * price["input"])
    plain, cached = (estimate.estimate([2000, 3000, 5000], "claude-sonnet-4-6", price, 1000, 16000, prompt_cache=cache)
                     for cache in (False, True))
    premium = 10000 * (price["cache_write"] - price["input"]) / 1e6
    assert cached["low_usd"] == pytest.approx(plain["low_usd"] + premium)
    assert cached["high_usd"] == pytest.approx(plain["high_usd"] + premium)
    assert f"each prompt written to the prompt cache at {price['cache_write']:g}" in estimate.describe(cached)
    assert "prompt cache" not in estimate.describe(plain)


def test_a_model_without_a_price_has_no_figures_and_never_stops():
    assert_valid(estimate.estimate([1000], "local", None, 1000, 2000) | {"samples": 1}, "estimate")
    record = estimate.estimate([1000], "local-model", None, 1000, 4000)
    assert record["low_usd"] is None and record["high_usd"] is None
    assert "no price is known for model local-model" in estimate.describe(record)
    estimate.check(record, cost_warn=0, confirmed=False)


def test_above_cost_warn_stops_unless_confirmed():
    record = estimate.estimate([100_000] * 10, "my-model", PRICE, 1000, 16000)  # high: 3.0 + 2.4 USD
    estimate.check(record, cost_warn=6, confirmed=False)
    with pytest.raises(estimate.CostAboveWarning, match=r"above cost_warn=5 USD.*confirm_cost=true.*count=N"):
        estimate.check(record, cost_warn=5, confirmed=False)
    estimate.check(record, cost_warn=5, confirmed=True)
    estimate.check(record, cost_warn=None, confirmed=False)


def write_instance(run, instance_id, tokens, answered=False):
    folder = run / "instances" / instance_id
    folder.mkdir(parents=True)
    (folder / "prompt.json").write_text(json.dumps({"instance_id": instance_id, "tokens": tokens}))
    if answered:
        (folder / "response.json").write_text("{}")


def test_only_instances_still_to_ask_are_counted(tmp_path):
    write_instance(tmp_path, "a", 1000)
    write_instance(tmp_path, "b", 2000, answered=True)
    write_instance(tmp_path, "c", 4000)
    tokens, context, instances, missing = estimate.prompts_to_ask(tmp_path, ["a", "b", "c", "d"])
    assert sorted(tokens) == [1000, 4000] and context == [0, 0] and instances == 2 and missing == ["d"]


def test_each_sample_still_to_ask_is_counted(tmp_path):
    write_instance(tmp_path, "a", 1000, answered=True)  # sample 1 answered
    write_instance(tmp_path, "b", 2000)
    (tmp_path / "instances" / "a" / "samples" / "3").mkdir(parents=True)
    (tmp_path / "instances" / "a" / "samples" / "3" / "response.json").write_text("{}")
    tokens, _, instances, missing = estimate.prompts_to_ask(tmp_path, ["a", "b"], samples=3)
    # a: samples 2 (1 and 3 answered); b: samples 1, 2 and 3
    assert sorted(tokens) == [1000, 2000, 2000, 2000] and instances == 2 and missing == []
    record, _ = estimate.for_run(tmp_path, ["a", "b"], "my-model", settings(samples=3))
    assert record["answers"] == 4 and record["instances"] == 2 and record["prompt_tokens"] == 7000
    # 7,000 prompt tokens at 3 USD/M, 4 answers of 1,000 (low) or 16,000 (high) tokens at 15 USD/M
    assert record["low_usd"] == pytest.approx(0.021 + 0.06) and record["high_usd"] == pytest.approx(0.021 + 0.96)
    assert estimate.describe(record).startswith("Cost estimate for 2 instances, 4 answers, to ask (7,000 prompt tokens")


def test_the_stage_writes_nothing_when_it_stops(tmp_path, capsys):
    write_instance(tmp_path, "a", 1_000_000)  # 3 USD of prompt alone
    out, log = tmp_path / "estimate.json", tmp_path / "logs" / "estimate.log"
    with pytest.raises(estimate.CostAboveWarning):
        estimate.run(tmp_path, ["a"], "my-model", settings(cost_warn=1), out, log)
    assert not out.exists()
    assert "Cost estimate for 1 instances" in capsys.readouterr().out
    record = estimate.run(tmp_path, ["a"], "my-model", settings(cost_warn=1, confirm_cost=True), out, log)
    assert json.loads(out.read_text()) == record and record["high_usd"] == pytest.approx(3.24)
    # the job's log holds what it printed, each run's
    assert log.read_text() == 2 * (estimate.describe(record) + "\n")
    assert_valid(record, "estimate")


def test_the_database_prices_the_default_models():
    from scripts.providers import DEFAULT_MODELS

    for provider, model in DEFAULT_MODELS.items():
        price = costs.price_for(provider, model, costs.load_prices())
        record = estimate.estimate([1000], model, price, 1000, 2000)
        assert 0 < record["low_usd"] < record["high_usd"]
        assert price["source"] in estimate.describe(record) and "genai-prices" in price["source"]


def test_the_estimate_and_the_budget_use_the_same_price(tmp_path):
    write_instance(tmp_path, "a", 1000)
    record, _ = estimate.for_run(tmp_path, ["a"], "o3-pro", settings(prices={}))
    assert record["price"] == costs.price_for("openai", "o3-pro", {})
    assert record["low_usd"] == pytest.approx(1000 * 20e-6 + 1000 * 80e-6)


def test_one_estimate_of_several_models_stops_on_their_sum(tmp_path, capsys):
    first, second = tmp_path / "results" / "a", tmp_path / "results" / "b"
    write_instance(first, "x", 100_000)  # the prompts are the first model's; the second has none of its own
    outs = [first / "estimate.json", second / "estimate.json"]
    prices = {"my-model": PRICE, "cheap": {"input": 1.0, "output": 1.0}}
    runs = [(str(first), "my-model", settings(prices=prices, cost_warn=0.6)),  # high: 0.3 + 0.24 USD
            (str(second), "cheap", settings(prices=prices, cost_warn=0.6))]  # high: 0.1 + 0.016 USD
    with pytest.raises(estimate.CostAboveWarning, match=r"2 models: 0\.42 to 0\.66 USD\. That is above cost_warn=0\.6"):
        estimate.run_models(runs, ["x"], first, outs)
    assert not any(out.exists() for out in outs)  # each alone (0.54 and 0.116) would pass
    runs = [(run, model, dict(model_settings, confirm_cost=True)) for run, model, model_settings in runs]
    log = first / "logs" / "estimate.log"
    records = estimate.run_models(runs, ["x"], first, outs, log)
    assert [json.loads(out.read_text())["model"] for out in outs] == ["my-model", "cheap"]
    for out in outs:
        assert_valid(json.loads(out.read_text()), "estimate")
    assert [r["high_usd"] for r in records] == [pytest.approx(0.54), pytest.approx(0.116)]
    assert "Cost estimate of the 2 models: 0.42 to 0.66 USD." in capsys.readouterr().out
    assert log.read_text().splitlines() == [f"{first}: {estimate.describe(records[0])}",
                                            f"{second}: {estimate.describe(records[1])}",
                                            "Cost estimate of the 2 models: 0.42 to 0.66 USD."]


def test_the_estimate_gives_the_code_context_s_share_of_the_input_tokens_and_cost(tmp_path, capsys):
    # a: 13,200 prompt tokens of which 11,800 are its context's files; b: its second file dropped by the prompt
    write_instance(tmp_path, "a", 13_200)
    (tmp_path / "instances/a/context.json").write_text(json.dumps({"files": [
        {"path": "src/one.py", "tokens": 10_000}, {"path": "src/two.py", "tokens": 1_800}]}))
    write_instance(tmp_path, "b", 6_000)
    (tmp_path / "instances/b/prompt.json").write_text(json.dumps({"instance_id": "b", "tokens": 6_000,
                                                                  "dropped_files": ["src/big.py"]}))
    (tmp_path / "instances/b/context.json").write_text(json.dumps({"files": [
        {"path": "src/small.py", "tokens": 4_000}, {"path": "src/big.py", "tokens": 9_000}]}))
    write_instance(tmp_path, "c", 800)  # the issue alone (context=none)
    (tmp_path / "instances/c/context.json").write_text(json.dumps({"files": []}))
    record = estimate.run(tmp_path, ["a", "b", "c"], "my-model", settings(), tmp_path / "estimate.json")
    assert_valid(record, "estimate")
    assert (record["prompt_tokens"], record["context_tokens"]) == (20_000, 15_800)
    # 20,000 prompt tokens at 3 USD/M, of which the context's 15,800
    assert record["input_usd"] == pytest.approx(0.06) and record["context_usd"] == pytest.approx(0.0474)
    assert capsys.readouterr().out.strip().endswith(
        "The code context: 5,267 of 6,667 input tokens per answer, 0.05 of 0.06 USD.")
    # without a price: the tokens alone
    unpriced, _ = estimate.for_run(tmp_path, ["a"], "local-model", settings(prices={}, database_prices=False))
    assert unpriced["context_usd"] is None and unpriced["input_usd"] is None
    assert estimate.describe(unpriced).endswith("The code context: 11,800 of 13,200 input tokens per answer.")

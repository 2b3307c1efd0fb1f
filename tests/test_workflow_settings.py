"""Settings mean what they say: through the real snakemake, with the real model clients against the loopback server."""
import json

import pytest

from scripts import costs

from conftest import LITE_TEST, jobs_run, read_rows, snakemake, write_rows
from fake_api import FakeModelServer

pytestmark = pytest.mark.workflow


def provider_config(provider, server, dataset, *extra):
    base_url = f"{server.url}/v1" if provider == "openai" else server.url
    return ["--config", f"dataset={dataset}", f"provider={provider}", f"base_url={base_url}",
            "retry_backoff=0.01", "request_timeout=5", "context=none", *extra]


def env_for(provider):
    return {"OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY": "sk-test-settings"}


def responses(run):
    return {path.parent.name: json.loads(path.read_text()) for path in (run / "instances").glob("*/response.json")}


def test_settings_anthropic_does_not_send_change_nothing(tmp_path):
    rows = read_rows(LITE_TEST)[10:12]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        snakemake(tmp_path, *provider_config("anthropic", server, dataset, "run_id=claude"), env=env_for("anthropic"))
        assert len(server.requests) == len(rows)
        assert not any("temperature" in r["body"] or "reasoning_effort" in r["body"] for r in server.requests)
        again = snakemake(tmp_path, *provider_config("anthropic", server, dataset, "run_id=claude", "temperature=0.7",
                                                     "reasoning_effort=high", "openai_api=chat"),
                          env=env_for("anthropic"), check=False)
        assert again.returncode == 0, again.stderr
        assert len(server.requests) == len(rows) and "generate" not in jobs_run(again)


def test_anthropic_runs_without_the_prompt_cache_unless_asked_and_its_estimate_counts_the_premium(tmp_path):
    rows = [read_rows(LITE_TEST)[i] for i in (18, 29)]  # prompts long enough to be cached (1,024 tokens)
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    price = costs.price_for("anthropic", "claude-sonnet-4-6", {})
    with FakeModelServer(rows) as server:
        snakemake(tmp_path, *provider_config("anthropic", server, dataset, "run_id=plain"), env=env_for("anthropic"))
        plain = list(server.requests)
        assert plain and not any("cache_control" in json.dumps(r["body"]) for r in plain)
        for instance_id, response in responses(tmp_path / "results" / "plain").items():
            [request] = server.requests_for(instance_id)
            billed = request["billed"]
            assert billed["cache_write_tokens"] == billed["cached_input_tokens"] == 0
            usage = {"input_tokens": billed["input_tokens"], "output_tokens": billed["output_tokens"]}
            assert response["cost_usd"] > 0 and response["cost_usd"] == pytest.approx(costs.cost_usd(usage, price))
            assert response["cost_usd"] == pytest.approx(server.billed_usd("anthropic", request), rel=0.01)
        server.requests.clear()
        snakemake(tmp_path, *provider_config("anthropic", server, dataset, "run_id=cached", "prompt_cache=true"),
                  env=env_for("anthropic"))
        assert all("cache_control" in json.dumps(r["body"]) for r in server.requests)
        assert all(r["billed"]["cache_write_tokens"] > 1024 for r in server.requests)
    estimates = [json.loads((tmp_path / "results" / run / "estimate.json").read_text()) for run in ("plain", "cached")]
    premium = estimates[0]["prompt_tokens"] * (price["cache_write"] - price["input"]) / 1e6
    assert premium > 0 and estimates[0]["prompt_tokens"] == estimates[1]["prompt_tokens"]
    for figure in ("low_usd", "high_usd"):
        assert estimates[1][figure] == pytest.approx(estimates[0][figure] + premium)


def test_an_answer_cut_off_by_the_output_limit_is_asked_again_with_a_larger_one(tmp_path):
    rows = read_rows(LITE_TEST)[10:13]
    cut = rows[0]["instance_id"]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    run = tmp_path / "results" / "cut"
    with FakeModelServer(rows) as server:
        server.reasoning = {cut: 3000}  # this instance's reasoning passes an output limit of 2000
        config = provider_config("anthropic", server, dataset, "run_id=cut")
        snakemake(tmp_path, *config, "max_output_tokens=2000", env=env_for("anthropic"))
        first = json.loads((run / "instances" / cut / "response.json").read_text())
        assert (first["status"], first["failure_reason"], first["max_output_tokens"]) == ("failed", "cut_off", 2000)
        assert first["usage"]["reasoning_tokens"] == first["usage"]["output_tokens"] == 2000 and first["cost_usd"] > 0
        assert json.loads((run / "instances" / cut / "patch.json").read_text())["generation_failure"] == "cut_off"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["counts"]["generation"]["by_reason"] == {"cut_off": 1}

        second = snakemake(tmp_path, *config, "max_output_tokens=8000", env=env_for("anthropic"))
        assert jobs_run(second).count("generate") == 1
        assert [len(server.requests_for(r["instance_id"])) for r in rows] == [2, 1, 1]
        assert server.requests_for(cut)[-1]["body"]["max_tokens"] == 8000
        answer = json.loads((run / "instances" / cut / "response.json").read_text())
        assert answer["status"] == "ok" and answer["max_output_tokens"] == 8000
        # the paid, cut-off answer is kept beside the new one
        [kept] = (run / "instances" / cut).glob("response.cut_off-*.json")
        assert json.loads(kept.read_text()) == first
        predictions = {p["instance_id"]: p["model_patch"] for p in read_rows(run / "predictions.jsonl")}
        assert predictions == {r["instance_id"]: r["patch"] for r in rows}

        third = snakemake(tmp_path, *config, "max_output_tokens=8000", env=env_for("anthropic"))
        assert len(server.requests) == 4 and "generate" not in jobs_run(third)


def test_a_model_served_elsewhere_is_not_priced_from_the_provider_database(tmp_path):
    rows = read_rows(LITE_TEST)[10:12]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with FakeModelServer(rows) as server:
        local = snakemake(tmp_path, *provider_config("openai", server, dataset, "model=gpt-4o-mini", "run_id=local",
                                                     "provider_prices=false"), env=env_for("openai"))
        assert "No cost estimate: no price is known for model gpt-4o-mini" in local.stderr
        assert not (tmp_path / "results" / "local" / "estimate.json").exists()
        assert {r["cost_usd"] for r in responses(tmp_path / "results" / "local").values()} == {None}
        # with its price given on the command line, as the message above advises, it is priced
        advice = local.stderr.split("--config '")[1].split("'")[0].replace("X", "1").replace("Y", "2")
        assert advice == "prices={gpt-4o-mini: {input: 1, output: 2}}"
        snakemake(tmp_path, *provider_config("openai", server, dataset, "model=gpt-4o-mini", "run_id=given",
                                             "provider_prices=false", advice, "max_cost=1"), env=env_for("openai"))
    for response in responses(tmp_path / "results" / "given").values():
        assert response["price_per_million"]["source"] == "the prices setting"
        assert response["cost_usd"] == costs.cost_usd(response["usage"], {"input": 1, "output": 2}) > 0

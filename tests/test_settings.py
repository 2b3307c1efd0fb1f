import pytest

from scripts import settings

from conftest import run_config

pytestmark = pytest.mark.unit


def base_config(**changes):
    config = {
        "dataset": "lite", "split": "test", "instances": None, "filter": None, "shuffle": False, "seed": 0,
        "count": None, "provider": "gold", "model": None, "replay_file": None, "context": "none",
        "prompt_template": None, "predictions": None, "evaluation": "none", "run_id": None,
        "context_tokens": None, "tokenizer": "cl100k_base", "repo_cache": ".cache/repos",
        "repo_url": "https://github.com/{repo}.git", "retrieval_dataset": None, "prompt_style": "style3",
    }
    config.update(changes)
    return config


def test_environment_sits_between_file_and_command_line():
    config = base_config(count=None, dataset="lite")
    environ = {"SWEBENCH_COUNT": "7", "SWEBENCH_DATASET": "verified", "SWEBENCH_UNKNOWN": "x", "OTHER": "1"}
    layered = settings.layer_environment(config, {"dataset": "full"}, environ)
    assert layered["count"] == 7  # parsed like a --config value
    assert layered["dataset"] == "lite"  # set with --config, so the environment does not apply
    assert "unknown" not in layered
    assert config["count"] is None  # the input is left alone


def test_environment_empty_value_means_null():
    layered = settings.layer_environment(base_config(count=3), {}, {"SWEBENCH_COUNT": ""})
    assert layered["count"] is None


@pytest.mark.parametrize("given, expected", [
    (None, None), ("", None), ("a,b", ["a", "b"]), (" a , b ,", ["a", "b"]), (["a", " b"], ["a", "b"]),
])
def test_instance_list(given, expected):
    assert settings.instance_list(given) == expected


def test_run_id_defaults():
    assert settings.run_id(base_config()) == "gold"
    assert settings.run_id(base_config(provider="replay", replay_file="x/preds_old.jsonl")) == "replay-preds_old"
    assert settings.run_id(base_config(model="org/My Model:7b")) == "gold-org-My-Model-7b"
    assert settings.run_id(base_config(predictions="p/my_preds.jsonl")) == "predictions-my_preds"
    assert settings.run_id(base_config(run_id="mine")) == "mine"


def test_check_accepts_hub_names_and_existing_files(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("")
    settings.check(base_config(dataset="SWE-bench/SWE-bench_Lite"))
    settings.check(base_config(dataset=str(data)))


@pytest.mark.parametrize("changes, words", [
    ({"dataset": "missing.jsonl"}, ["dataset=missing.jsonl", "no such file"]),
    ({"filter": "django-(1"}, ["filter", "not a valid regular expression"]),
    ({"provider": "replay"}, ["replay_file=PATH"]),
    ({"provider": "replay", "replay_file": "nope.jsonl"}, ["replay_file=nope.jsonl", "no such file"]),
    ({"predictions": "nope.jsonl"}, ["predictions=nope.jsonl"]),
    ({"prompt_template": "nope.yaml"}, ["prompt_template=nope.yaml"]),
    ({"validate_gold": True, "evaluation": "modal"}, ["validate_gold=true", "evaluation=modal", "set evaluation=docker"]),
    ({"validate_gold": True, "evaluation": "none"}, ["evaluation=none", "leave validate_gold at false"]),
])
def test_check_names_the_problem(changes, words):
    with pytest.raises(settings.ConfigError) as error:
        settings.check(base_config(**changes))
    for word in words:
        assert word in str(error.value)


def test_check_rejects_dataset_file_without_known_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.txt").write_text("{}")
    with pytest.raises(settings.ConfigError, match="must end in"):
        settings.check(base_config(dataset="rows.txt"))


def test_lowercase_booleans_from_the_command_line():
    layered = settings.layer_environment(base_config(shuffle="true", filter="false-positive"), {"shuffle": "true"}, {})
    assert layered["shuffle"] is True
    assert layered["filter"] == "false-positive"
    assert settings.layer_environment(base_config(shuffle="False"), {}, {})["shuffle"] is False


@pytest.mark.parametrize("argv, runs", [
    (["--cores", "2", "--config", "count=3"], True),
    (["--lint"], False), (["--report", "r.html"], False), (["--report=r.zip"], False),
    (["--list-rules"], False), (["-l"], False), (["--dag"], False), (["--touch"], False),
])
def test_runs_jobs_tells_a_run_from_a_reading_of_the_workflow(argv, runs):
    assert settings.runs_jobs(argv) is runs


def test_each_model_of_several_is_the_run_with_its_entry():
    config = run_config(models=[{"provider": "openai", "model": "gpt-4o", "temperature": "0.5"},
                                {"provider": "openai", "model": "1.5", "max_output_tokens": "800", "run_id": "2024"}])
    first, second = settings.model_configs(config)
    # values from the command line come as text: numbers are read as numbers, a model name or run_id stays text
    assert (first["model"], first["temperature"], first["models"], first["dataset"]) == ("gpt-4o", 0.5, None, "lite")
    assert (second["model"], second["max_output_tokens"], second["run_id"]) == ("1.5", 800, "2024")
    assert [settings.run_id(c) for c in (first, second)] == ["openai-gpt-4o", "2024"]


@pytest.mark.parametrize("base_url, environ, provider_prices, priced", [
    (None, {}, False, True),  # the provider's own API
    ("https://api.openai.com/v1", {}, False, True),
    ("http://localhost:8000/v1", {}, False, False),  # vLLM, Ollama...
    (None, {"OPENAI_BASE_URL": "http://localhost:11434/v1"}, False, False),
    ("https://gateway.example.com/v1", {}, True, True),  # a proxy that bills at the provider's prices
])
def test_only_the_providers_own_api_is_priced_from_the_database(base_url, environ, provider_prices, priced):
    config = run_config(provider="openai", base_url=base_url, provider_prices=provider_prices)
    assert settings.database_prices(config, environ) is priced
    assert run_config()["provider_prices"] is False  # the default


def test_a_setting_the_provider_does_not_send_is_no_answer_setting():
    anthropic = run_config(provider="anthropic", temperature=0.0)
    recorded = settings.answer_settings(anthropic, {})
    assert not {"temperature", "reasoning_effort", "openai_api", "max_output_tokens"} & set(recorded)
    changed = dict(anthropic, temperature=0.7, reasoning_effort="high", openai_api="chat", max_output_tokens=64000)
    settings.check_answer_settings(recorded, settings.answer_settings(changed, {}), "results/x")  # no stop
    assert settings.generate_params(changed) == settings.generate_params(anthropic)
    # a record made before, with temperature among its settings, does not stop either
    settings.check_answer_settings({**recorded, "temperature": 0.0}, settings.answer_settings(changed, {}), "results/x")
    # for OpenAI, which sends it, a changed temperature stops the run and changes the params
    openai = run_config(provider="openai", temperature=0.0)
    with pytest.raises(settings.ConfigError, match=r"temperature=0.0 \(now 0.7\)"):
        settings.check_answer_settings(settings.answer_settings(openai, {}),
                                       settings.answer_settings(dict(openai, temperature=0.7), {}), "results/x")
    assert settings.generate_params(dict(openai, temperature=0.7)) != settings.generate_params(openai)


@pytest.mark.parametrize("changes, strategy", [
    ({"provider": "openai"}, "bm25_13K"),  # Lite's test split: in SWE-bench's test split, ids and all
    ({"provider": "anthropic", "dataset": "verified"}, "bm25_13K"),
    ({"provider": "openai", "dataset": "full", "split": "dev"}, "bm25_13K"),
    ({"provider": "openai", "dataset": "princeton-nlp/SWE-bench_Lite", "split": "dev"}, "bm25_13K"),
    ({"provider": "openai", "dataset": "full", "split": "train"}, "bm25"),  # not SWE-bench's own instances
    ({"provider": "openai", "dataset": "multimodal"}, "bm25"),
    ({"provider": "openai", "dataset": "rows.jsonl"}, "bm25"),
    ({"provider": "openai", "dataset": "rows.jsonl", "retrieval_dataset": "bm25.parquet"}, "bm25_13K"),
    ({"provider": "gold"}, "none"),
    ({"provider": "replay"}, "none"),
    ({"provider": "openai", "predictions": "preds.jsonl"}, "none"),
    ({"provider": "openai", "context": "oracle"}, "oracle"),  # given: kept
    ({"provider": "gold", "context": "bm25"}, "bm25"),
])
def test_context_auto_gives_a_model_code_and_says_why(changes, strategy):
    config = run_config(**changes)
    assert config["context"] == "auto" or "context" in changes  # the default
    chosen, why = settings.context_choice(config)
    assert chosen == strategy
    assert why.startswith("context=auto: " if "context" not in changes else f"context={strategy} was given")


def test_context_auto_says_what_it_chose_and_why():
    assert settings.context_choice(run_config(provider="openai", dataset="verified")) == (
        "bm25_13K", "context=auto: SWE-bench's own baseline, princeton-nlp/SWE-bench_bm25_13K, holds split test of "
        "SWE-bench/SWE-bench_Verified")
    assert settings.context_choice(run_config(provider="openai", dataset="rows.jsonl", context_tokens=27000)) == (
        "bm25", "context=auto: princeton-nlp/SWE-bench_bm25_13K does not hold dataset rows.jsonl split test; BM25 over "
        "the repository at base_commit, within 27,000 tokens")
    assert settings.context_choice(run_config(provider="replay")) == ("none", "context=auto: provider replay asks no model")
    # models=[...]: the first model makes every model's contexts, so a model among them gets code for all
    assert settings.context_choice(run_config(provider="gold"), ["gold", "openai"])[0] == "bm25_13K"
    assert settings.context_choice(run_config(provider="gold"), ["gold", "replay"])[0] == "none"


@pytest.mark.parametrize("provider, model, given, expected", [
    # nothing given: no temperature, no output limit sent, the budget at the model's own limit (above the default)
    ("openai", "gpt-5", set(), {"temperature": None, "send_output_limit": False, "max_output_tokens": 128000}),
    ("anthropic", "claude-3-haiku-20240307", set(), {"temperature": None, "send_output_limit": False,
                                                     "max_output_tokens": 4096}),
    # a model whose limit is not known: reserved at max_output_tokens
    ("openai", "my-local-model", set(), {"temperature": None, "send_output_limit": False, "max_output_tokens": 16384}),
    # what the user gave is sent
    ("openai", "gpt-5", {"temperature", "max_output_tokens"}, {"temperature": 0.0, "max_output_tokens": 16384}),
])
def test_an_agents_steps_send_only_the_temperature_and_output_limit_the_user_gave(provider, model, given, expected):
    config = base_config(provider=provider, model=model, temperature=0.0, max_output_tokens=16384, base_url=None)
    api = {"temperature": 0.0, "max_output_tokens": 16384, "base_url": None, "ledger": "spend.jsonl"}
    agent = settings.agent_request_settings(api, config, given)
    assert {key: agent[key] for key in expected} == expected
    assert agent["ledger"] == "spend.jsonl" and ("send_output_limit" in agent) == ("max_output_tokens" not in given)
    params = settings.agent_params(dict(config, replay_file=None, openai_api="auto", reasoning_effort=None), given)
    assert params["temperature"] == (0.0 if "temperature" in given or provider == "anthropic" else None)


def test_the_settings_given_are_those_of_the_command_line_and_the_environment():
    given = settings.given_keys({"count": 3}, {"SWEBENCH_TEMPERATURE": "0.2", "HOME": "/root"})
    assert given == {"count", "temperature"}

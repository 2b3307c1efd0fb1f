"""Batch requests through the real clients against the loopback server's batch APIs: answers, batch prices,
expired and failed requests asked again, and a stopped run that polls its pending batch instead of sending again."""
import json
import multiprocessing

import pytest

from scripts import batch, context, costs, prompt
from scripts.settings import api_settings

from conftest import LITE_TEST, assert_valid, read_rows, run_config
from fake_api import FakeModelServer

pytestmark = pytest.mark.unit

ROWS = read_rows(LITE_TEST)[:6]
MODELS = {"openai": "gpt-5.4-mini", "anthropic": "claude-sonnet-4-6"}


def make_run(run, rows):
    template = prompt.load_template(prompt.DEFAULT_TEMPLATE)
    for row in rows:
        folder = run / "instances" / row["instance_id"]
        folder.mkdir(parents=True)
        (folder / "prompt.json").write_text(json.dumps(prompt.build_prompt(context.build_context(row, "none"), template)))
    return [row["instance_id"] for row in rows]


def settings_for(provider, server, run, **changes):
    base_url = f"{server.url}/v1" if provider == "openai" else server.url
    settings = api_settings(provider, run_config(**{"base_url": base_url, "batch": True, "max_attempts": 3,
                                                    "request_timeout": 10, "max_output_tokens": 4000,
                                                    "provider_prices": True, **changes}), run)
    settings["api_key"] = "sk-test-batch"
    return settings


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_answers_every_instance_at_half_price(provider, tmp_path):
    ids = make_run(tmp_path, ROWS)
    with FakeModelServer(ROWS) as server:
        server.expire_next = 2  # the first batch expires with two requests not done
        server.faults[ids[0]] = ["500"]  # and one fails in it
        lines = []
        left = batch.run(tmp_path, ids, provider, MODELS[provider], settings_for(provider, server, tmp_path),
                         tmp_path / "batch" / "done.json", poll_s=0.05, log=lines.append)
    assert left == [] and json.loads((tmp_path / "batch" / "done.json").read_text())["unanswered"] == {}
    assert_valid(json.loads((tmp_path / "batch" / "done.json").read_text()), "batch")
    assert len(server.batches) == 2  # the three that did not come back went in a second batch
    second = list(server.batches.values())[1]
    assert len(second["lines"]) == 3
    billed = [r for r in server.requests if r["billed"]]
    assert len(billed) == len(ids) and all(r["batch"] for r in billed)
    total = sum(json.loads(batch.answer_path(tmp_path, i).read_text())["cost_usd"] for i in ids)
    at_batch_rates = sum(server.billed_usd(provider, r, batch=True) for r in billed)
    at_list_price = sum(server.billed_usd(provider, r) for r in billed)
    assert total == pytest.approx(at_batch_rates, rel=0.01) and total == pytest.approx(at_list_price / 2, rel=0.01)
    assert costs.spent(tmp_path / "spend.jsonl") == pytest.approx(total)
    states = [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")]
    assert states.count("settled") == len(ids) and states.count("released") == 3
    for instance_id in ids:
        got = json.loads(batch.answer_path(tmp_path, instance_id).read_text())
        assert got["answer"] == f"<patch>\n{next(r['patch'] for r in ROWS if r['instance_id'] == instance_id)}</patch>\n"
        assert got["price_per_million"]["source"].endswith("batch rates")
    from scripts import generate

    record = generate.from_batch(ids[0], provider, MODELS[provider], settings_for(provider, server, tmp_path))
    assert_valid(record, "response")


def run_batch(provider, url, run):
    class Server:  # what settings_for needs of the server
        pass

    server = Server()
    server.url = url
    batch.run(run, sorted(p.name for p in (run / "instances").iterdir()), provider, MODELS[provider],
              settings_for(provider, server, run), run / "batch" / "done.json", poll_s=0.05, log=print)


def kill_while_pending(provider, server, run_dir):
    """Start a batch run in a process of its own and kill it once its batch is pending on the server and
    recorded in the run folder."""
    server.batch_hold.set()
    process = multiprocessing.get_context("fork").Process(target=run_batch, args=(provider, server.url, run_dir))
    process.start()
    for _ in range(400):
        state = batch.state_path(run_dir)
        if server.batches and state.exists() and [b["id"] for b in json.loads(state.read_text())["batches"]] == list(
                server.batches):
            break
        process.join(0.05)
    else:
        raise AssertionError("the batch was not made and recorded within 20 s")
    process.kill()
    process.join()


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_stopped_run_polls_its_pending_batch_and_sends_nothing_again(provider, tmp_path):
    ids = make_run(tmp_path, ROWS[:3])
    with FakeModelServer(ROWS) as server:
        kill_while_pending(provider, server, tmp_path)
        assert len(server.batches) == 1 and not (tmp_path / "batch" / "done.json").exists()
        state = json.loads((tmp_path / "batch" / "state.json").read_text())
        assert [b["id"] for b in state["batches"]] == list(server.batches)
        assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["open"] * 3
        server.batch_hold.clear()
        run_batch(provider, server.url, tmp_path)
    assert len(server.batches) == 1 and len([r for r in server.requests if r["billed"]]) == 3
    assert all(batch.answer_path(tmp_path, i).exists() for i in ids)
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["settled"] * 3


def test_a_batch_the_budget_cannot_hold_is_not_sent(tmp_path):
    ids = make_run(tmp_path, ROWS[:3])
    with FakeModelServer(ROWS) as server:
        left = batch.run(tmp_path, ids, "openai", MODELS["openai"], settings_for("openai", server, tmp_path, max_cost=0.0),
                         tmp_path / "batch" / "done.json", poll_s=0.05, log=print)
    assert left == ids and server.batches == {} and server.requests == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_cancelled_batch_is_sent_again_for_what_it_left(provider, tmp_path):
    ids = make_run(tmp_path, ROWS[:3])
    with FakeModelServer(ROWS) as server:
        kill_while_pending(provider, server, tmp_path)
        # cancelled on the provider's side (its console, or its client) while pending
        settings = settings_for(provider, server, tmp_path)
        client = batch.providers.client_for(provider, settings)
        first = next(iter(server.batches))
        cancel = client.batches.cancel if provider == "openai" else client.messages.batches.cancel
        assert cancel(first).id == first
        server.batch_hold.clear()
        run_batch(provider, server.url, tmp_path)
    assert len(server.batches) == 2 and all(batch.answer_path(tmp_path, i).exists() for i in ids)
    assert [len(b["lines"]) for b in server.batches.values()] == [3, 3]
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["released"] * 3 + ["settled"] * 3


def stop_while_submitting(provider, server, run_dir, when):
    """Start a batch run in a process of its own and kill it while its batch submission waits for the provider's
    answer: `lost` (the request never reaches the provider), or `after` the provider made the batch (the run has not
    recorded its id)."""
    server.hold_batch_create = when
    process = multiprocessing.get_context("fork").Process(target=run_batch, args=(provider, server.url, run_dir))
    process.start()
    if not server.create_waiting.wait(20):
        process.kill()
        raise AssertionError("the batch was not submitted within 20 s")
    process.kill()
    process.join()
    server.hold_batch_create = None


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_run_stopped_before_it_recorded_its_batch_takes_it_from_the_provider(provider, tmp_path):
    ids = make_run(tmp_path, ROWS[:3])
    with FakeModelServer(ROWS) as server:
        stop_while_submitting(provider, server, tmp_path, "after")
        (ours,) = server.batches
        [recorded] = json.loads(batch.state_path(tmp_path).read_text())["batches"]
        assert recorded["id"] is None and len(recorded["requests"]) == 3
        assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["open"] * 3
        # another run's batch of as many requests, made since and ended: not this run's
        other = tmp_path / "other"
        make_run(other, ROWS[3:6])
        run_batch(provider, server.url, other)
        run_batch(provider, server.url, tmp_path)
        billed = [r for r in server.requests if r["billed"]]
    assert len(server.batches) == 2 and len(billed) == 6
    assert sorted(r["instance_id"] for r in billed if r["batch"] == ours) == sorted(ids)
    assert [json.loads(batch.answer_path(tmp_path, i).read_text())["batch"] for i in ids] == [ours] * 3
    assert [b["id"] for b in json.loads(batch.state_path(tmp_path).read_text())["batches"]] == [ours]
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["settled"] * 3
    if provider == "openai":  # the batch carries its mark, which names the run
        assert server.batches[ours]["object"]["metadata"] == {"swebench_runner_batch": recorded["mark"],
                                                              "run": str(tmp_path)}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_run_stopped_before_the_provider_made_its_batch_submits_it_anew(provider, tmp_path):
    ids = make_run(tmp_path, ROWS[:3])
    with FakeModelServer(ROWS) as server:
        stop_while_submitting(provider, server, tmp_path, "lost")
        assert server.batches == {} and json.loads(batch.state_path(tmp_path).read_text())["batches"][0]["id"] is None
        run_batch(provider, server.url, tmp_path)
    assert len(server.batches) == 1 and len([r for r in server.requests if r["billed"]]) == 3
    assert all(batch.answer_path(tmp_path, i).exists() for i in ids)
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["released"] * 3 + ["settled"] * 3


def test_each_instance_is_asked_in_max_attempts_batches_and_a_rerun_asks_again(tmp_path):
    from scripts import generate

    ids = make_run(tmp_path, ROWS[:3])
    done = tmp_path / "batch" / "done.json"
    with FakeModelServer(ROWS) as server:
        settings = settings_for("openai", server, tmp_path, max_attempts=2)
        server.expire_all = True  # every batch expires with nothing done
        assert batch.run(tmp_path, ids, "openai", MODELS["openai"], settings, done, poll_s=0.05, log=print) == ids
        assert len(server.batches) == 2
        unanswered = json.loads(done.read_text())["unanswered"]
        assert sorted(unanswered) == sorted(ids)
        assert_valid(json.loads(done.read_text()), "batch")
        assert all(e == "batch_expired: This request was expired. (asked in 2 batch(es) of this run)"
                   for e in unanswered.values())
        with pytest.raises(generate.GenerationFailed, match=r"\(batch_expired: .*\); a rerun asks it in a new batch"):
            generate.from_batch(ids[0], "openai", MODELS["openai"], settings)

        server.expire_all = False
        assert batch.run(tmp_path, ids, "openai", MODELS["openai"], settings, done, poll_s=0.05, log=print) == []
    assert len(server.batches) == 3 and json.loads(done.read_text())["unanswered"] == {}
    assert all(batch.answer_path(tmp_path, i).exists() for i in ids)


def test_a_batch_that_fails_validation_reports_its_errors_and_is_not_sent_again(tmp_path):
    from scripts import generate

    ids = make_run(tmp_path, ROWS[:3])
    done = tmp_path / "batch" / "done.json"
    lines = []
    with FakeModelServer(ROWS) as server:
        server.batch_models = {"gpt-4o"}  # not the model asked
        settings = settings_for("openai", server, tmp_path)
        left = batch.run(tmp_path, ids, "openai", MODELS["openai"], settings, done, poll_s=0.05, log=lines.append)
        assert left == ids and len(server.batches) == 1  # the same requests would fail the same way
        assert [r for r in server.requests if r["billed"]] == []
        unanswered = json.loads(done.read_text())["unanswered"]
        for number, instance_id in enumerate(ids, 1):
            error = (f"line {number}: model_not_found (body.model): The provided model '{MODELS['openai']}' is not "
                     "supported by the Batch API.")
            assert unanswered[instance_id] == ("the batch failed OpenAI's validation, nothing in it ran or was billed: "
                                               f"{error} (asked in 1 batch(es) of this run)")
            assert any(error in line for line in lines)
            with pytest.raises(generate.GenerationFailed, match="failed OpenAI's validation"):
                generate.from_batch(instance_id, "openai", MODELS["openai"], settings)
    assert "not sent again by this job (a rerun sends them again, once what the errors name is fixed)" in "\n".join(lines)
    assert not any(batch.answer_path(tmp_path, i).exists() for i in ids)
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["released"] * 3


def test_the_loopback_batch_apis_page_their_lists_and_keep_openai_metadata_limits(tmp_path):
    import anthropic
    import openai

    ids = make_run(tmp_path, ROWS[:1])
    with FakeModelServer(ROWS) as server:
        for provider in ("openai", "anthropic"):
            settings = settings_for(provider, server, tmp_path)
            for _ in range(3):
                batch.submit(tmp_path, ids, provider, MODELS[provider], settings, None,
                             {"run": "r", "batches": []}, print)
            client = batch.providers.client_for(provider, settings)
            listing = client.batches.list(limit=2) if provider == "openai" else client.messages.batches.list(limit=2)
            assert len(listing.data) == 2 and listing.has_more
            made = [b["object"]["id"] for b in server.batches.values() if b["provider"] == provider]
            assert [b.id for b in listing] == made[::-1]  # newest first, over the pages
        client = batch.providers.client_for("openai", settings_for("openai", server, tmp_path))
        upload = client.files.create(file=("requests.jsonl", b""), purpose="batch")
        for metadata, message in (({f"k{i}": "v" for i in range(17)}, "too many properties"),
                                  ({"k" * 65: "v"}, "is too long"), ({"k": "v" * 513}, "string too long")):
            with pytest.raises(openai.BadRequestError, match=message):
                client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata=metadata)
        client = batch.providers.client_for("anthropic", settings_for("anthropic", server, tmp_path))
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.list(limit=1001)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_submission_whose_answer_times_out_is_found_at_the_provider_not_sent_again(provider, tmp_path):
    ids = make_run(tmp_path, ROWS[:3])
    done = tmp_path / "batch" / "done.json"
    with FakeModelServer(ROWS) as server:
        settings = settings_for(provider, server, tmp_path, request_timeout=1)
        server.hold_batch_create = "after"  # the batch is made, its id comes after the client gave up
        with pytest.raises(batch.providers.Transient, match="Timeout"):
            batch.run(tmp_path, ids, provider, MODELS[provider], settings, done, poll_s=0.05, log=print)
        server.hold_batch_create = None
        assert len(server.batches) == 1 and not done.exists()
        assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["open"] * 3  # may be billed
        assert batch.run(tmp_path, ids, provider, MODELS[provider], settings, done, poll_s=0.05, log=print) == []
    assert len(server.batches) == 1 and len([r for r in server.requests if r["billed"]]) == 3
    assert [e["state"] for e in costs.read_ledger(tmp_path / "spend.jsonl")] == ["settled"] * 3

"""The repair stage: the real openai and anthropic clients against the loopback server."""
import json

import pytest

from scripts import costs, patch, repair
from scripts.select import write_selection
from scripts.settings import api_settings

import fixture_repos
from conftest import assert_valid, run_config
from fake_api import FakeModelServer

pytestmark = pytest.mark.unit

INSTANCE = "acme__geometry-1"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    rows, url = fixture_repos.build(tmp_path_factory.mktemp("repos"))
    return {r["instance_id"]: r for r in rows}, url


@pytest.fixture
def instance(built, tmp_path):
    """The run folder of one instance: its selection, prompt and the paths of its files."""
    rows, url = built
    row = rows[INSTANCE]
    write_selection([row], tmp_path / "instances.jsonl", tmp_path / "index.json")
    folder = tmp_path / "instances" / INSTANCE
    folder.mkdir(parents=True)
    prompt = {"instance_id": INSTANCE, "template": "style3", "tokens": 10, "token_counter": "estimate",
              "messages": [{"role": "system", "content": "You fix issues."},
                           {"role": "user", "content": f"<issue>\n{row['problem_statement']}</issue>\nAnswer with a diff."}]}
    (folder / "prompt.json").write_text(json.dumps(prompt))
    return {"row": row, "url": url, "folder": folder, "run": tmp_path}


def stage(instance, answer, provider, server, attempts=1, **config):
    """Run the patch stage, then the repair stage, on a first answer; returns the repair record."""
    folder, run = instance["folder"], instance["run"]
    (folder / "response.json").write_text(json.dumps({"instance_id": INSTANCE, "status": "ok", "answer": answer}))
    config = run_config(**{"base_url": f"{server.url}/v1" if provider == "openai" else server.url,
                           "retry_backoff": 0.01, "request_timeout": 5, "max_attempts": 2, "provider_prices": True,
                           **config})
    settings = api_settings(provider, config, run)
    settings["api_key"] = "sk-test"
    model = {"openai": "gpt-4o", "anthropic": "claude-sonnet-4-6"}[provider]
    (folder / "context.json").write_text(json.dumps({"files": []}))
    repos = {"repo_cache": str(run / "cache"), "repo_url": instance["url"]}
    inputs = {"response": folder / "response.json", "context": folder / "context.json", "prompt": folder / "prompt.json",
              "instances": run / "instances.jsonl", "index": run / "index.json",
              "patch": folder / "patch.json", "diff": folder / "patch.diff"}
    patch.run_stage(INSTANCE, inputs, {"diff": folder / "patch.diff", "record": folder / "patch.json"},
                    run / "patch.log", repos)
    outputs = {"diff": folder / "repair.diff", "record": folder / "repair.json", "requests": folder / "repair"}
    return repair.run_stage(INSTANCE, inputs, outputs, run / "repair.log",
                            {"provider": provider, "model": model, "settings": settings, "attempts": attempts,
                             "repos": repos})


def ledger(instance):
    path = instance["run"] / "spend.jsonl"
    return costs.read_ledger(path) if path.exists() else []


def not_applying(row):
    """The reference patch with a removed line that is not in the file."""
    return row["patch"].replace("-        return math.pi * self.radius\n", "-        return math.tau * self.radius\n")


def test_a_patch_that_does_not_apply_is_mended_by_the_model(instance):
    row, folder = instance["row"], instance["folder"]
    with FakeModelServer([row]) as server:  # it answers with the reference patch
        record = stage(instance, not_applying(row), "openai", server)
    assert_valid(record, "repair")
    assert (record["status"], record["answer"], record["applies"]) == ("valid", "repair-1", True)
    assert (folder / "repair.diff").read_text() == record_diff(folder)
    assert "+        return 2 * math.pi * self.radius" in record_diff(folder)
    [attempt] = record["attempts"]
    assert {k: attempt[k] for k in ("number", "prompt", "response", "status", "reason")} == {
        "number": 1, "prompt": "repair/1.prompt.json", "response": "repair/1.response.json", "status": "valid",
        "reason": None}
    prompt = json.loads((folder / "repair" / "1.prompt.json").read_text())
    response = json.loads((folder / "repair" / "1.response.json").read_text())
    assert_valid(prompt, "prompt")
    assert_valid(response, "response")
    assert [m["role"] for m in prompt["messages"]] == ["system", "user", "assistant", "user"]
    assert prompt["messages"][2]["content"] == not_applying(row)
    request = prompt["messages"][3]["content"]
    assert request.startswith("Your patch does not apply to the repository at its base commit.")
    assert "$ git apply --verbose patch.diff" in request and "$ patch --batch --fuzz=5 -p1 -i patch.diff" in request
    assert "- geometry/shapes.py hunk 1 (stated at line 23): its old lines are nowhere in the file" in request
    # the real code around the failed hunk, numbered as the style-3 prompt numbers it
    assert "geometry/shapes.py at the base commit:\n[start of geometry/shapes.py]\n" in request
    assert "26         return math.pi * self.radius\n" in request
    # its cost is in the budget's ledger and in the record
    [spent] = ledger(instance)
    assert spent["instance_id"] == INSTANCE and spent["cost_usd"] == response["cost_usd"] == attempt["cost_usd"] > 0
    assert "repair 1: valid" in (instance["run"] / "repair.log").read_text()


def record_diff(folder):
    return (folder / "repair.diff").read_text()


def test_answers_that_stay_bad_keep_the_first_verdict(instance):
    row, folder = instance["row"], instance["folder"]
    with FakeModelServer([row]) as server:
        server.answers[INSTANCE] = [not_applying(row).replace("math.tau", "math.e"), "Sorry, I see no problem."]
        server.faults[INSTANCE] = [None, None, "refusal"]
        record = stage(instance, not_applying(row), "anthropic", server, attempts=3)
        requests = server.requests_for(INSTANCE)
    assert_valid(record, "repair")
    assert (record["status"], record["reason"], record["answer"]) == ("invalid", "does_not_apply", "response")
    assert record["rejected_patch"] == not_applying(row)
    assert [(a["status"], a["reason"]) for a in record["attempts"]] == [
        ("invalid", "does_not_apply"), ("empty", "no_diff"), ("empty", "generation_failed")]
    assert (folder / "repair.diff").read_text() == ""
    # each request continues the conversation: the second shows both earlier answers
    assert len(requests) == 3
    second = requests[1]["body"]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user", "assistant", "user"]
    assert "math.e" in second[3]["content"] and second[4]["content"].startswith("Your patch does not apply")
    assert requests[2]["body"]["messages"][-1]["content"].startswith("Your answer holds no patch.")
    assert len(ledger(instance)) == 3
    for number in (1, 2, 3):
        assert_valid(json.loads((folder / "repair" / f"{number}.response.json").read_text()), "response")


def test_a_patch_that_breaks_python_goes_back_and_the_mended_one_is_kept(instance):
    row = instance["row"]
    broken = row["patch"].replace("+        return 2 * math.pi * self.radius", "+        return 2 * (math.pi * self.radius")
    with FakeModelServer([row]) as server:
        record = stage(instance, broken, "openai", server)
        request = server.requests_for(INSTANCE)[0]["body"]["messages"][-1]["content"]
    assert (record["status"], record["answer"], record["syntax_errors"]) == ("valid", "repair-1", [])
    assert request.startswith("Your patch applies, but a Python file it changes no longer compiles:")
    assert "- geometry/shapes.py, line 26: '(' was never closed" in request
    assert "geometry/shapes.py after your patch:" in request


def test_a_breaking_patch_is_kept_when_the_repair_does_no_better(instance):
    row = instance["row"]
    broken = row["patch"].replace("+        return 2 * math.pi * self.radius", "+        return 2 * (math.pi * self.radius")
    with FakeModelServer([row]) as server:
        server.answers[INSTANCE] = [not_applying(row)]
        record = stage(instance, broken, "openai", server)
    assert (record["status"], record["answer"]) == ("valid", "response")
    assert record["syntax_errors"] == ["geometry/shapes.py, line 26: '(' was never closed"]
    assert record["attempts"][0]["reason"] == "does_not_apply"


def test_edit_blocks_are_asked_for_again_as_edit_blocks(instance):
    row = instance["row"]
    bad = ("geometry/shapes.py\n<<<<<<< SEARCH\n        return math.tau * self.radius\n=======\n"
           "        return 2 * math.pi * self.radius\n>>>>>>> REPLACE\n")
    with FakeModelServer([row]) as server:
        server.answers[INSTANCE] = [fixture_repos.edit_blocks(row["patch"])]
        record = stage(instance, bad, "openai", server)
        request = server.requests_for(INSTANCE)[0]["body"]["messages"][-1]["content"]
    assert (record["status"], record["source"], record["answer"]) == ("valid", "search_replace", "repair-1")
    assert request.startswith("The patch in your answer cannot be used:")
    assert "Answer with all your edit blocks again" in request
    assert "        return math.pi * self.radius\n" in request and "[start of geometry/shapes.py]" in request


def test_a_spent_budget_fails_the_job_and_writes_no_verdict(instance):
    row, folder = instance["row"], instance["folder"]
    (instance["run"] / "spend.jsonl").write_text(json.dumps({"instance_id": "other", "cost_usd": 2.0}) + "\n")
    with FakeModelServer([row]) as server:
        with pytest.raises(patch.PatchStageError) as error:
            stage(instance, not_applying(row), "openai", server, max_cost=1.0)
        assert server.requests == []
    assert f"{INSTANCE}: self-repair could not ask the model: the budget is spent" in str(error.value)
    assert "repair_attempts=0 turns self-repair off" in str(error.value)
    assert not (folder / "repair.json").exists() and not (folder / "repair.diff").exists()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_an_empty_repair_answer_is_followed_by_a_request_the_api_takes(instance, provider):
    row, folder = instance["row"], instance["folder"]
    with FakeModelServer([row]) as server:
        server.faults[INSTANCE] = ["empty"]  # the first repair answer is empty; the second mends the patch
        record = stage(instance, not_applying(row), provider, server, attempts=2)
        requests = server.requests_for(INSTANCE)
    assert [(a["status"], a["reason"]) for a in record["attempts"]] == [("empty", "empty_answer"), ("valid", None)]
    assert (record["status"], record["answer"]) == ("valid", "repair-2")
    # the second request alternates user and assistant turns, none of them empty
    second = [m for m in requests[1]["body"]["messages"] if m["role"] != "system"]
    assert [m["role"] for m in second] == ["user", "assistant", "user", "assistant", "user"]
    assert second[3]["content"] == repair.EMPTY_ANSWER and second[4]["content"].startswith("Your answer holds no patch.")
    assert json.loads((folder / "repair" / "2.prompt.json").read_text())["messages"][-2]["content"] == repair.EMPTY_ANSWER


def test_the_loopback_server_refuses_what_the_messages_api_refuses():
    import anthropic

    with FakeModelServer([]) as server:
        client = anthropic.Anthropic(api_key="sk-test", base_url=server.url, max_retries=0)
        for messages, refusal in [
            ([{"role": "user", "content": "Fix it."}, {"role": "assistant", "content": ""},
              {"role": "user", "content": "Again."}], "all messages must have non-empty content"),
            ([{"role": "user", "content": "Fix it."}, {"role": "user", "content": "Again."}],
             'found multiple "user" roles in a row'),
            ([{"role": "assistant", "content": "Hello."}], 'first message must use the "user" role')]:
            with pytest.raises(anthropic.BadRequestError, match=refusal):
                client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=messages)
        with pytest.raises(anthropic.BadRequestError, match="temperature: Extra inputs are not permitted"):
            client.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "Hi"}],
                                   extra_body={"temperature": 0.0})
        # the final assistant turn may be empty
        client.messages.create(model="claude-sonnet-4-6", max_tokens=100,
                               messages=[{"role": "user", "content": "Fix it."}, {"role": "assistant", "content": ""}])

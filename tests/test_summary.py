import json

import pytest

from scripts import summary

from conftest import assert_valid

pytestmark = pytest.mark.unit

DIFF = "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a = 1\n+a = 2\n"
RUN_INFO = {"run_id": "r", "mode": "generate", "dataset": "lite", "split": "test", "provider": "gold",
            "model": "gold", "context": "none", "evaluation": "none"}


def write_instance(run_dir, instance_id, response, patch):
    folder = run_dir / "instances" / instance_id
    folder.mkdir(parents=True)
    (folder / "response.json").write_text(json.dumps(response))
    (folder / "patch.json").write_text(json.dumps(patch))


def response(instance_id, status="ok", reason=None, cost=0.0, latency=1.0, tokens=(0, 0)):
    return {"instance_id": instance_id, "status": status, "failure_reason": reason, "failure_detail": reason and "why",
            "cost_usd": cost, "latency_s": latency, "stop_reason": None if reason else "end",
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1], "cached_input_tokens": tokens[0] // 2},
            "attempts": [{}] * (2 if cost else 1)}


def patch(instance_id, status="valid", reason=None, problems=()):
    return {"instance_id": instance_id, "status": status, "reason": reason, "problems": list(problems)}


def test_summary_counts_every_outcome(tmp_path):
    rows = [{"instance_id": i, "repo": repo} for i, repo in
            [("a-1", "o/a"), ("a-2", "o/a"), ("b-1", "o/b"), ("b-2", "o/b"), ("b-3", "o/b")]]
    write_instance(tmp_path, "a-1", {**response("a-1", cost=0.5, latency=2.0, tokens=(100, 10)),
                                     "dropped_parameters": ["temperature", "reasoning_effort"]}, patch("a-1"))
    write_instance(tmp_path, "a-2", {**response("a-2", cost=0.25, latency=4.0, tokens=(50, 5)),
                                     "dropped_parameters": ["temperature"]},
                   patch("a-2", "invalid", "invalid_diff", ["hunk 1 of x.py does not parse"]))
    write_instance(tmp_path, "b-1", response("b-1", latency=1.0), patch("b-1", "empty", "no_diff"))
    write_instance(tmp_path, "b-2", response("b-2", "failed", "no_answer_recorded", latency=0.0),
                   patch("b-2", "empty", "generation_failed"))
    write_instance(tmp_path, "b-3", response("b-3", latency=3.0), patch("b-3"))
    predictions = [{"instance_id": i, "model_name_or_path": "m", "model_patch": "diff" if i in ("a-1", "b-3") else ""}
                   for i in ("a-1", "a-2", "b-1", "b-2", "b-3")]
    record = summary.summarise(rows, predictions, str(tmp_path), RUN_INFO)
    assert_valid(record, "summary")
    counts = record["counts"]
    assert counts["selected"] == 5
    # answers made without a setting the model refused, by setting (a response.json without the key counts none)
    assert counts["generation"] == {"ok": 4, "failed": 1, "by_reason": {"no_answer_recorded": 1},
                                    "dropped_parameters": {"temperature": 2, "reasoning_effort": 1}}
    assert counts["patch"] == {"valid": 2, "empty": 2, "invalid": 1,
                               "by_reason": {"invalid_diff": 1, "no_diff": 1, "generation_failed": 1},
                               "mended_by_apply_check": 0, "mended_by_model": 0}
    assert counts["predictions"] == {"total": 5, "non_empty": 2, "not_a_diff": 0}
    assert record["cost"] == {"total_usd": 0.75, "answers_usd": 0.75, "repairs_usd": 0.0, "other_usd": 0.0,
                              "mean_usd": 0.15, "input_tokens": 150, "cached_input_tokens": 75, "output_tokens": 15,
                              "cache_write_tokens": 0, "reasoning_tokens": 0, "cache_saving_usd": 0.0,
                              "unknown_cost_instances": []}
    assert record["latency_s"] == {"p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0}
    per_instance = {i["instance_id"]: i for i in record["per_instance"]}
    assert per_instance["a-1"] == {"instance_id": "a-1", "status": "ok", "stop_reason": "end", "cost_usd": 0.5,
                                   "input_tokens": 100, "output_tokens": 10, "latency_s": 2.0, "attempts": 2}
    assert per_instance["b-2"]["status"] == "failed"
    assert record["per_repo"] == [{"repo": "o/a", "selected": 2, "with_patch": 1},
                                  {"repo": "o/b", "selected": 3, "with_patch": 1}]
    # a failed generation is reported at its own stage, not again as an empty patch
    assert [(f["instance_id"], f["stage"], f["reason"]) for f in record["failures"]] == [
        ("a-2", "patch", "invalid_diff"), ("b-1", "patch", "no_diff"), ("b-2", "generate", "no_answer_recorded")]
    assert record["failures"][0]["detail"] == "hunk 1 of x.py does not parse"
    assert record["failures"][2]["file"].endswith("instances/b-2/response.json")

    markdown = summary.render_markdown(record)
    assert "# Run r" in markdown
    assert "| patch | invalid_diff | 1 |" in markdown
    assert "| generate | answered without temperature (the model refused it) | 2 |" in markdown
    assert "| o/b | 3 | 1 |" in markdown
    assert "| b-2 | generate | no_answer_recorded |" in markdown
    assert "## Costliest instances" in markdown
    assert markdown.index("| a-1 | 0.5000 | 100/10 | 2.0 | 2 |") < markdown.index("| a-2 | 0.2500 |")


def test_cost_counts_self_repair_and_every_request_of_the_ledger(tmp_path):
    from scripts import costs

    rows = [{"instance_id": i, "repo": "o/a"} for i in ("a-1", "a-2", "a-3")]
    write_instance(tmp_path, "a-1", response("a-1", cost=0.5), patch("a-1", "invalid", "does_not_apply"))
    repaired = dict(patch("a-1"), answer="2", cost_usd=0.1875,
                    attempts=[{"number": 1, "cost_usd": 0.125}, {"number": 2, "cost_usd": 0.0625}])
    (tmp_path / "instances" / "a-1" / "repair.json").write_text(json.dumps(repaired))
    write_instance(tmp_path, "a-2", response("a-2", cost=0.25), patch("a-2"))
    ledger = tmp_path / "spend.jsonl"
    for instance, usd in [("a-1", 0.5), ("a-2", 0.25), ("a-1", 0.125), ("a-1", 0.0625), ("a-3", 0.03125)]:
        costs.settle(ledger, costs.reserve(ledger, instance, usd, None), "settled", usd)
    costs.reserve(ledger, "a-3", 0.5, None)  # a-3's job was killed mid-request: it counts at its worst case
    record = summary.summarise(rows, [], str(tmp_path), RUN_INFO)
    assert_valid(record, "summary")
    assert record["cost"]["total_usd"] == costs.spent(ledger) == 1.46875
    assert (record["cost"]["answers_usd"], record["cost"]["repairs_usd"], record["cost"]["other_usd"]) == (
        0.75, 0.1875, 0.53125)
    assert record["cost"]["mean_usd"] == 0.46875  # (answers + repairs) / 2 answered instances
    assert {i["instance_id"]: i["cost_usd"] for i in record["per_instance"]} == {"a-1": 0.6875, "a-2": 0.25}
    markdown = summary.render_markdown(record)
    assert ("- cost: 1.4688 USD: answers 0.7500, self-repair 0.1875, requests of jobs that wrote nothing 0.5312 "
            "(0.4688 per answered instance)") in markdown


def test_summary_of_given_predictions_reads_no_instance_files(tmp_path):
    rows = [{"instance_id": "a-1", "repo": "o/a"}]
    predictions = [{"instance_id": "a-1", "model_name_or_path": "m", "model_patch": DIFF}]
    record = summary.summarise(rows, predictions, str(tmp_path / "absent"), {**RUN_INFO, "mode": "predictions"})
    assert_valid(record, "summary")
    assert record["counts"]["generation"] is None and record["counts"]["patch"] is None
    assert record["latency_s"] is None
    assert "| predictions | with a patch | 1 |" in summary.render_markdown(record)


def test_given_patches_that_are_not_diffs_are_named_and_not_counted(tmp_path):
    given = {"a-1": DIFF, "a-2": "I would change a to 2 in x.py.", "a-3": "```python\na = 2\n```\n",
             "a-4": f"Here is the fix:\n```diff\n{DIFF}```\n", "a-5": ""}
    rows = [{"instance_id": i, "repo": "o/a"} for i in given]
    predictions = [{"instance_id": i, "model_name_or_path": "m1" if i == "a-1" else "m2", "model_patch": patch}
                   for i, patch in given.items()]
    run_info = {**RUN_INFO, "mode": "predictions", "provider": "predictions file mine.jsonl", "model": None}
    record = summary.summarise(rows, predictions, str(tmp_path), run_info)
    assert_valid(record, "summary")
    assert record["counts"]["predictions"] == {"total": 5, "non_empty": 2, "not_a_diff": 2}
    assert record["per_repo"] == [{"repo": "o/a", "selected": 5, "with_patch": 2}]
    assert ("patch extracted", 2) in [(s["stage"], s["instances"]) for s in record["funnel"]]
    no_header = "no file header ('--- a/...' and '+++ b/...') was found"
    assert record["failures"] == [
        {"instance_id": i, "stage": "predictions", "reason": "not a diff", "detail": no_header,
         "file": f"{tmp_path}/predictions.jsonl"} for i in ("a-2", "a-3")]
    assert record["model"] == "2 models: m1, m2"
    markdown = summary.render_markdown(record)
    assert "provider: predictions file mine.jsonl, model: 2 models: m1, m2" in markdown
    assert "predictions: 5 (2 with a patch, 2 not a diff)" in markdown
    assert "| predictions | not a diff | 2 |" in markdown
    assert f"| a-2 | predictions | not a diff | {tmp_path}/predictions.jsonl |" in markdown

    one_model = summary.summarise(rows, [{**p, "model_name_or_path": "m2"} for p in predictions], str(tmp_path), run_info)
    assert one_model["model"] == "m2"


def test_percentile():
    assert summary.percentile([5.0], 0.9) == 5.0
    assert summary.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5) == 5
    assert summary.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == 9


def test_summary_of_an_evaluated_run_gives_the_resolved_rate(tmp_path):
    rows = [{"instance_id": i, "repo": repo} for i, repo in [("a-1", "o/a"), ("a-2", "o/a"), ("b-1", "o/b")]]
    predictions = [{"instance_id": i, "model_name_or_path": "m", "model_patch": DIFF} for i in ("a-1", "a-2", "b-1")]
    folder = tmp_path / "instances" / "a-2"
    folder.mkdir(parents=True)
    (folder / "evaluation.json").write_text(json.dumps({"status": "timeout", "reason": "the tests ran longer than 9 s"}))
    evaluation = {"resolved_ids": ["a-1", "b-1"], "completed_instances": 2, "error_ids": ["a-2"],
                  "patch_failed_ids": [], "build_failed_ids": [], "timeout_ids": ["a-2"],
                  "status_counts": {"resolved": 2, "unresolved": 0, "empty_patch": 0, "patch_failed": 0,
                                    "build_failed": 0, "timeout": 1, "error": 0}}
    record = summary.summarise(rows, predictions, str(tmp_path), {**RUN_INFO, "mode": "predictions",
                                                                   "evaluation": "docker"}, evaluation)
    assert_valid(record, "summary")
    assert record["resolution"] == {"resolved": 2, "selected": 3, "rate": 0.6667, "completed": 2,
                                    "by_status": evaluation["status_counts"]}
    assert [(r["repo"], r["resolved"], r["resolved_rate"]) for r in record["per_repo"]] == [("o/a", 1, 0.5), ("o/b", 1, 1.0)]
    assert record["failures"] == [{"instance_id": "a-2", "stage": "evaluate", "reason": "timeout",
                                   "detail": "the tests ran longer than 9 s", "file": str(folder / "evaluation.json")}]
    markdown = summary.render_markdown(record)
    assert "- resolved: 2 of 3 (66.7%)" in markdown
    assert "| o/a | 2 | 2 | 1 (50.0%) |" in markdown and "| evaluate | timeout | 1 |" in markdown


def test_summary_of_a_partial_run_names_the_missing_instances(tmp_path):
    rows = [{"instance_id": i, "repo": "o/a"} for i in ("a-1", "a-2", "a-3")]
    write_instance(tmp_path, "a-1", response("a-1"), patch("a-1"))
    folder = tmp_path / "instances" / "a-2"  # answered, but its patch job has not run
    folder.mkdir(parents=True)
    (folder / "response.json").write_text(json.dumps(response("a-2")))
    # a-3's generation failed on the machinery: its log ends with the cause
    (tmp_path / "logs" / "a-3").mkdir(parents=True)
    (tmp_path / "logs" / "a-3" / "generate.log").write_text(
        "Traceback ...\ninfrastructure fault: provider_unreachable: the API did not answer\n")
    predictions = [{"instance_id": "a-1", "model_name_or_path": "m", "model_patch": "diff"}]
    record = summary.summarise(rows, predictions, str(tmp_path), RUN_INFO)
    assert_valid(record, "summary")
    assert record["missing"] == [
        {"instance_id": "a-2", "stage": "patch", "file": str(tmp_path / "instances" / "a-2" / "patch.json")},
        {"instance_id": "a-3", "stage": "generate", "file": str(tmp_path / "instances" / "a-3" / "response.json"),
         "infrastructure_fault": "provider_unreachable"}]
    assert [(s["stage"], s["instances"]) for s in record["funnel"]] == [
        ("selected", 3), ("answered", 2), ("patch extracted", 1), ("patch valid", 1), ("applied", None),
        ("resolved", None)]
    markdown = summary.render_markdown(record)
    missing = markdown[markdown.index("## Missing"):]
    assert "`snakemake --cores N`" in missing
    assert f"| a-3 | generate | provider_unreachable | {tmp_path}/instances/a-3/response.json |" in missing
    assert f"| a-2 | patch |  | {tmp_path}/instances/a-2/patch.json |" in missing
    assert "| applied | no data: not evaluated (evaluation=none) nor checked (apply_check=false) | |" in markdown
    assert "| resolved | no data: not evaluated (evaluation=none) | |" in markdown
    assert "| patch valid | 1 | 33.3% |" in markdown
    for name in ("funnel", "repositories", "cost"):
        assert f"](figures/{name}.png)" in markdown


def test_funnel_takes_applied_from_the_evaluation_or_the_patch_stage_check(tmp_path):
    rows = [{"instance_id": i, "repo": "o/a"} for i in ("a-1", "a-2", "a-3")]
    write_instance(tmp_path, "a-1", response("a-1"), {**patch("a-1"), "applies": True})
    # a well-formed diff that the apply check rejected: lost at "applied", not at "patch valid"
    write_instance(tmp_path, "a-2", response("a-2"),
                   {**patch("a-2", "invalid", "does_not_apply", ["hunk 1 of x.py does not apply"]), "applies": False})
    write_instance(tmp_path, "a-3", response("a-3"), patch("a-3", "empty", "no_diff"))
    predictions = [{"instance_id": i, "model_name_or_path": "m", "model_patch": "diff" if i != "a-3" else ""}
                   for i in ("a-1", "a-2", "a-3")]
    steps = summary.summarise(rows, predictions, str(tmp_path), RUN_INFO)["funnel"]
    assert [s["instances"] for s in steps] == [3, 3, 2, 2, 1, None]

    evaluation = {"resolved_ids": ["a-1"], "completed_instances": 1, "error_ids": ["a-2"], "patch_failed_ids": ["a-2"],
                  "build_failed_ids": [], "timeout_ids": [],
                  "status_counts": {"resolved": 1, "unresolved": 0, "empty_patch": 1, "patch_failed": 1,
                                    "build_failed": 0, "timeout": 0, "error": 0}}
    record = summary.summarise(rows, predictions, str(tmp_path), {**RUN_INFO, "evaluation": "docker"}, evaluation)
    assert_valid(record, "summary")
    assert [s["instances"] for s in record["funnel"]] == [3, 3, 2, 2, 1, 1]
    assert all(s["note"] is None for s in record["funnel"])


def test_unknown_cost_and_cache_saving_are_shown(tmp_path):
    rows = [{"instance_id": i, "repo": "o/a"} for i in ("a-1", "a-2")]
    price = {"input": 3.0, "cached_input": 0.3, "cache_write": 3.75, "output": 15.0, "source": "the prices setting"}
    usage = {"input_tokens": 1_000_000, "cached_input_tokens": 800_000, "cache_write_tokens": 100_000,
             "output_tokens": 1000, "reasoning_tokens": 400}
    cached = dict(response("a-1"), price_per_million=price, usage=usage, cost_usd=summary.costs.cost_usd(usage, price))
    write_instance(tmp_path, "a-1", cached, patch("a-1"))
    write_instance(tmp_path, "a-2", dict(response("a-2"), cost_usd=None), patch("a-2"))
    predictions = [{"instance_id": i, "model_name_or_path": "m", "model_patch": "diff"} for i in ("a-1", "a-2")]
    record = summary.summarise(rows, predictions, str(tmp_path), dict(RUN_INFO, model="my-model"))
    assert_valid(record, "summary")
    # 800k read at 0.3 instead of 3, 100k written at 3.75 instead of 3
    assert record["cost"]["cache_saving_usd"] == round(2.16 - 0.075, 6)
    assert record["cost"]["unknown_cost_instances"] == ["a-2"] and record["cost"]["reasoning_tokens"] == 400
    text = summary.render_markdown(record)
    assert "saving 2.0850 USD" in text and "the cost of 1 answer(s) is unknown, not 0" in text and "my-model" in text


def test_summary_lists_the_environments_broken_here_apart_with_both_rates(tmp_path):
    rows = [{"instance_id": i, "repo": "o/a"} for i in ("a-1", "a-2", "a-3", "a-4")]
    predictions = [{"instance_id": r["instance_id"], "model_name_or_path": "m", "model_patch": DIFF} for r in rows]
    for instance_id, validated in (("a-1", True), ("a-2", False), ("a-3", True)):  # a-4 not validated yet
        folder = tmp_path / "instances" / instance_id
        folder.mkdir(parents=True)
        (folder / "validation.json").write_text(json.dumps(
            {"validated": validated, "reason": None if validated else "the gold patch does not resolve here (unresolved)"}))
    evaluation = {"resolved_ids": ["a-1", "a-2"], "completed_instances": 4, "error_ids": [], "patch_failed_ids": [],
                  "build_failed_ids": [], "timeout_ids": [],
                  "status_counts": {"resolved": 2, "unresolved": 2, "empty_patch": 0, "patch_failed": 0,
                                    "build_failed": 0, "timeout": 0, "error": 0}}
    record = summary.summarise(rows, predictions, str(tmp_path), {**RUN_INFO, "mode": "predictions",
                                                                   "evaluation": "docker"}, evaluation)
    assert_valid(record, "summary")
    assert record["resolution"]["rate"] == 0.5  # the official rate, over every selected instance
    assert record["validation"] == {
        "validated": 2, "environment_broken": 1, "not_validated": 1, "resolved": 1, "rate": 0.5,
        "broken": [{"instance_id": "a-2", "reason": "the gold patch does not resolve here (unresolved)",
                    "resolved": True, "file": f"{tmp_path}/instances/a-2/validation.json"}]}
    markdown = summary.render_markdown(record)
    assert ("- over the instances whose environment the gold patch validated: 1 of 2 (50.0%); environment broken "
            "here: 1 (listed apart below); not validated yet: 1") in markdown
    assert "## Environment broken here" in markdown and "| a-2 | the gold patch does not resolve here (unresolved) | yes |" in markdown
    # without validations there is no such section
    plain = summary.summarise(rows, predictions, str(tmp_path / "none"), {**RUN_INFO, "mode": "predictions",
                                                                         "evaluation": "docker"}, evaluation)
    assert plain["validation"] is None and "Environment broken" not in summary.render_markdown(plain)

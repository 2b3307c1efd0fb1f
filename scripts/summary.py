"""Summary: what a run produced, per stage outcome and per repository, as JSON and Markdown."""
import argparse
import json
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from scripts import compare, costs
from scripts.common import read_json, read_jsonl, stage_fault, write_json_atomic, write_text_atomic
from scripts.predictions import not_diffs

LATENCY_PERCENTILES = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]
# the pictures of the run (the figures rule draws them from summary.json into figures/), with their titles
FIGURES = {"funnel": "Where instances were lost", "repositories": "Resolved rate per repository",
           "cost": "Cost and tokens per instance"}
# evaluate outcomes that give no verdict, by the id list of evaluation.json that holds them
EVALUATION_FAILURES = {"patch_failed": "patch_failed_ids", "build_failed": "build_failed_ids", "timeout": "timeout_ids"}


def percentile(values, fraction):
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def instance_records(run_dir, instance_id):
    """The instance's response and patch records that exist (a partial run may lack them). The
    patch record is the repair stage's when there is one: its verdict is the final one."""
    folder = Path(run_dir) / "instances" / instance_id
    records = {}
    for stage in ("response", "patch", "repair"):
        path = folder / f"{stage}.json"
        if path.is_file():
            records[stage] = read_json(path)
    if "repair" in records:
        records["patch"] = records["repair"]
    return records


def validation(rows, run_dir, resolved_ids):
    """With validate_gold: the instances whose environment the gold patch validated, those where it is broken
    here (their verdicts say nothing of the model), and the resolved rate over the validated ones; None when the
    run has no validation."""
    records = {}
    for row in rows:
        path = Path(run_dir) / "instances" / row["instance_id"] / "validation.json"
        if path.is_file():
            records[row["instance_id"]] = read_json(path)
    if not records:
        return None
    validated = sorted(i for i, r in records.items() if r["validated"])
    resolved = sorted(i for i in validated if i in resolved_ids)
    return {
        "validated": len(validated),
        "environment_broken": len(records) - len(validated),
        "not_validated": len(rows) - len(records),
        "resolved": len(resolved),
        "rate": round(len(resolved) / len(validated), 4) if validated else None,
        "broken": [{"instance_id": i, "reason": r["reason"], "resolved": i in resolved_ids,
                    "file": f"{run_dir}/instances/{i}/validation.json"}
                   for i, r in sorted(records.items()) if not r["validated"]],
    }


def missing_files(rows, records, run_dir, generated, evaluated):
    """Each selected instance that has no result yet, at its first stage without one: its job
    failed or did not run (a partial summary)."""
    missing = []
    for row in rows:
        folder = Path(run_dir) / "instances" / row["instance_id"]
        found = records.get(row["instance_id"], {})
        stages = [("generate", "response", "response" in found), ("patch", "patch", "patch" in found)] if generated else []
        if evaluated:
            stages.append(("evaluate", "evaluation", (folder / "evaluation.json").is_file()))
        first = next(((stage, name) for stage, name, present in stages if not present), None)
        if first:
            missing.append({"instance_id": row["instance_id"], "stage": first[0], "file": str(folder / f"{first[1]}.json")})
            fault = stage_fault(run_dir, row["instance_id"], first[0])
            if fault:
                missing[-1]["infrastructure_fault"] = fault[0]
    return missing


def funnel(rows, responses, patches, patch_by_id, evaluation, generated):
    """How many instances are left after each stage, from selected to resolved. A stage this run
    has no data for is None with a note that says why, rather than a zero."""
    given = "predictions given: nothing generated" if not generated else None
    # a well-formed diff that the apply check rejected counts as valid here, and lost at "applied"
    well_formed = [p for p in patches if p["status"] == "valid" or p["reason"] == "does_not_apply"]
    if evaluation:
        # the harness's verdict: every report but those whose patch did not apply or was empty
        counts = evaluation["status_counts"]
        applied = sum(counts.values()) - counts["patch_failed"] - counts["empty_patch"]
    elif generated and None not in [p.get("applies") for p in well_formed]:
        # the patch stage's apply check (patch.json's applies), when it checked every well-formed patch
        applied = sum(p["applies"] is True for p in well_formed)
    else:
        applied = None
    applied_note = "not evaluated (evaluation=none)" + (" nor checked (apply_check=false)" if generated else "")
    steps = [
        ("selected", len(rows), None),
        ("answered", sum(r["status"] == "ok" for r in responses) if generated else None, given),
        ("patch extracted", sum(p["status"] != "empty" for p in patches) if generated
         else sum(bool(patch) for patch in patch_by_id.values()), None),
        ("patch valid", len(well_formed) if generated else None, given),
        ("applied", applied, applied_note),
        ("resolved", len(evaluation["resolved_ids"]) if evaluation else None, "not evaluated (evaluation=none)"),
    ]
    return [{"stage": stage, "instances": n, "note": note if n is None else None} for stage, n, note in steps]


def summarise(rows, predictions, run_dir, run_info, evaluation=None):
    """The summary record. `rows` are the selected instances; per-instance records are read from run_dir;
    `evaluation` is the run's evaluation.json, when it was evaluated."""
    generated = run_info.get("mode") != "predictions"
    records = {row["instance_id"]: instance_records(run_dir, row["instance_id"]) for row in rows} if generated else {}
    responses = [r["response"] for r in records.values() if "response" in r]
    patches = [r["patch"] for r in records.values() if "patch" in r]
    failures = []
    for instance_id, r in sorted(records.items()):
        folder = f"{run_dir}/instances/{instance_id}"
        response, patch = r.get("response"), r.get("patch")
        if response and response["status"] == "failed":
            failures.append({"instance_id": instance_id, "stage": "generate", "reason": response["failure_reason"],
                             "detail": response.get("failure_detail"), "file": f"{folder}/response.json"})
        elif patch and patch["status"] != "valid":
            failures.append({"instance_id": instance_id, "stage": "patch", "reason": patch["reason"],
                             "detail": "; ".join(patch.get("problems") or []) or None, "file": f"{folder}/patch.json"})

    # given predictions: a model_patch that is not a diff is no patch (it is evaluated as it is)
    not_diff = {} if generated else not_diffs(predictions)
    failures += [{"instance_id": i, "stage": "predictions", "reason": "not a diff", "detail": why,
                  "file": f"{run_dir}/predictions.jsonl"} for i, why in sorted(not_diff.items())]
    if evaluation:
        failures += evaluation_failures(evaluation, run_dir)
    missing = missing_files(rows, records, run_dir, generated, bool(evaluation))

    patch_by_id = {p["instance_id"]: "" if p["instance_id"] in not_diff else p["model_patch"] for p in predictions}
    if not generated:  # the model is the one the given predictions name
        models = sorted({str(p["model_name_or_path"]) for p in predictions})
        run_info = {**run_info, "model": models[0] if len(models) == 1 else
                    f"{len(models)} models: {', '.join(models[:10])}{' ...' if len(models) > 10 else ''}"}
    per_repo = Counter(row["repo"] for row in rows)
    resolved_ids = set(evaluation["resolved_ids"]) if evaluation else set()
    resolved = Counter(row["repo"] for row in rows if row["instance_id"] in resolved_ids)
    with_patch = Counter(row["repo"] for row in rows if patch_by_id.get(row["instance_id"]))
    latencies = [r["latency_s"] for r in responses]
    repair_usd = {i: r["repair"]["cost_usd"] for i, r in records.items() if "repair" in r}
    answers_usd, repairs_usd = sum(r["cost_usd"] or 0.0 for r in responses), sum(repair_usd.values(), 0.0)
    # answers of a model with no known price: their cost is unknown, not 0
    unpriced = sorted(r["instance_id"] for r in responses if r["cost_usd"] is None and r["status"] == "ok")
    ledger = Path(run_dir) / "spend.jsonl"
    # the ledger holds every paid request, those of jobs that wrote nothing too
    total_usd = sum(costs.totals(costs.read_ledger(ledger))) if ledger.is_file() else answers_usd + repairs_usd
    return {
        **run_info,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {
            "selected": len(rows),
            "generation": {
                "ok": sum(r["status"] == "ok" for r in responses),
                "failed": sum(r["status"] == "failed" for r in responses),
                "by_reason": dict(Counter(r["failure_reason"] for r in responses if r["status"] == "failed")),
                # answers made without a setting that the model refused (temperature, reasoning_effort)
                "dropped_parameters": dict(Counter(p for r in responses for p in r.get("dropped_parameters") or [])),
            } if generated else None,
            "patch": {
                "valid": sum(p["status"] == "valid" for p in patches),
                "empty": sum(p["status"] == "empty" for p in patches),
                "invalid": sum(p["status"] == "invalid" for p in patches),
                "by_reason": dict(Counter(p["reason"] for p in patches if p["status"] != "valid")),
                # patches that did not apply as given and that the apply check made apply
                "mended_by_apply_check": sum(p.get("applies") is True and p.get("apply_attempt") is None for p in patches),
                # patches that the patch stage rejected and a repair request's answer replaced
                "mended_by_model": sum(p.get("answer", "response") != "response" for p in patches),
            } if generated else None,
            "predictions": {"total": len(predictions), "non_empty": sum(bool(p) for p in patch_by_id.values()),
                            "not_a_diff": len(not_diff)},
        },
        "cost": {
            "total_usd": round(total_usd, 6),
            "answers_usd": round(answers_usd, 6),
            "repairs_usd": round(repairs_usd, 6),
            "other_usd": round(max(0.0, total_usd - answers_usd - repairs_usd), 6),
            "mean_usd": round((answers_usd + repairs_usd) / len(responses), 6) if responses else 0.0,
            "input_tokens": sum(r["usage"]["input_tokens"] for r in responses),
            "cached_input_tokens": sum(r["usage"].get("cached_input_tokens", 0) for r in responses),
            "cache_write_tokens": sum(r["usage"].get("cache_write_tokens", 0) for r in responses),
            "output_tokens": sum(r["usage"]["output_tokens"] for r in responses),
            "reasoning_tokens": sum(r["usage"].get("reasoning_tokens", 0) for r in responses),
            "cache_saving_usd": round(sum(cache_saving(r) for r in responses), 6),
            "unknown_cost_instances": unpriced,
        },
        "latency_s": {name: percentile(latencies, q) for name, q in LATENCY_PERCENTILES} | {"max": max(latencies)}
        if latencies else None,
        "agent": agent_summary(responses),
        "per_instance": [
            {"instance_id": r["instance_id"], "status": r["status"], "stop_reason": r.get("stop_reason"),
             "cost_usd": round((r["cost_usd"] or 0.0) + repair_usd.get(r["instance_id"], 0.0), 8), "input_tokens": r["usage"]["input_tokens"],
             "output_tokens": r["usage"]["output_tokens"], "latency_s": r["latency_s"],
             "attempts": len(r.get("attempts") or [])}
            for r in sorted(responses, key=lambda r: r["instance_id"])
        ],
        "resolution": {
            "resolved": len(resolved_ids),
            "selected": len(rows),
            "rate": round(len(resolved_ids) / len(rows), 4) if rows else 0.0,
            "completed": evaluation["completed_instances"],
            "by_status": evaluation["status_counts"],
        } if evaluation else None,
        "validation": validation(rows, run_dir, resolved_ids),
        "per_repo": [{"repo": repo, "selected": n, "with_patch": with_patch[repo],
                      **({"resolved": resolved[repo], "resolved_rate": round(resolved[repo] / n, 4)} if evaluation else {})}
                     for repo, n in sorted(per_repo.items())],
        "samples_pass_at_k": samples_pass_at_k(rows, run_dir, int(run_info.get("samples") or 1)),
        "failures": failures,
        "missing": missing,
        "funnel": funnel(rows, responses, patches, patch_by_id, evaluation, generated),
    }


def agent_summary(responses):
    """An agent run's exit statuses, and its steps and cost per instance (median, p90, max); None for another run."""
    agents = [r for r in responses if r.get("agent")]
    if not agents:
        return None
    steps = [r["agent"]["steps"] for r in agents]
    usd = [r["cost_usd"] or 0.0 for r in agents]
    return {"exit_statuses": dict(Counter(r["agent"]["exit_status"] for r in agents)),
            "steps": {"p50": percentile(steps, 0.5), "p90": percentile(steps, 0.9), "max": max(steps)},
            "cost_usd": {"p50": round(percentile(usd, 0.5), 6), "p90": round(percentile(usd, 0.9), 6),
                         "max": round(max(usd), 6)}}


def samples_pass_at_k(rows, run_dir, samples):
    """With several samples per instance: pass@1 (the mean over instances of the share of successful samples,
    with its standard error) and pass@k for k = 1..samples, overall and per repository; None with one sample."""
    if samples < 2:
        return None
    try:
        outcomes, outcome = compare.read_outcomes(run_dir, [row["instance_id"] for row in rows], samples)
    except compare.CompareError as e:  # a partial run: some samples not evaluated yet
        return {"samples": samples, "note": str(e)}
    repos = sorted({row["repo"] for row in rows})
    return {"samples": samples, "outcome": outcome,
            "overall": compare.rate_record(list(outcomes.values())) if rows else None,
            "per_repo": [{"repo": repo, **compare.rate_record([outcomes[row["instance_id"]] for row in rows
                                                               if row["repo"] == repo])} for repo in repos]}


def evaluation_failures(evaluation, run_dir):
    """The evaluated instances without a verdict, with the reason from their evaluation.json."""
    status_of = {i: status for status, key in EVALUATION_FAILURES.items() for i in evaluation[key]}
    status_of.update({i: "error" for i in evaluation["error_ids"] if i not in status_of})
    failures = []
    for instance_id, status in sorted(status_of.items()):
        path = Path(run_dir) / "instances" / instance_id / "evaluation.json"
        failures.append({"instance_id": instance_id, "stage": "evaluate", "reason": status,
                         "detail": read_json(path).get("reason") if path.is_file() else None, "file": str(path)})
    return failures


def cache_saving(response):
    """What the prompt cache saved an answer: its cost with every cached token at the input price, less its cost."""
    price, usage = response.get("price_per_million"), response["usage"]
    if not price or response["cost_usd"] is None:
        return 0.0
    return costs.cost_usd(dict(usage, cached_input_tokens=0, cache_write_tokens=0), price) - costs.cost_usd(usage, price)


def render_markdown(summary):
    counts = summary["counts"]
    lines = [
        f"# Run {summary['run_id']}",
        "",
        f"- dataset: {summary['dataset']} ({summary['split']}), provider: {summary['provider']}, "
        f"model: {summary['model']}, context: {summary['context']}, evaluation: {summary['evaluation']}",
        *([f"- context {summary['context']}: {summary['context_why']}"] if summary.get("context_why") else []),
        f"- selected: {counts['selected']}, predictions: {counts['predictions']['total']} "
        f"({counts['predictions']['non_empty']} with a patch"
        + (f", {counts['predictions']['not_a_diff']} not a diff)" if counts["predictions"]["not_a_diff"] else ")"),
        f"- cost: {summary['cost']['total_usd']:.4f} USD: answers {summary['cost']['answers_usd']:.4f}, self-repair "
        f"{summary['cost']['repairs_usd']:.4f}, requests of jobs that wrote nothing {summary['cost']['other_usd']:.4f} "
        f"({summary['cost']['mean_usd']:.4f} per answered instance); tokens in/out of the answers: "
        f"{summary['cost']['input_tokens']}/{summary['cost']['output_tokens']}",
    ]
    cost = summary["cost"]
    if cost.get("cached_input_tokens") or cost.get("cache_write_tokens") or cost.get("reasoning_tokens"):
        lines.append(f"- prompt cache: {cost['cached_input_tokens']} tokens read, {cost.get('cache_write_tokens', 0)} "
                     f"written, saving {cost.get('cache_saving_usd', 0.0):.4f} USD; reasoning tokens (in the output): "
                     f"{cost.get('reasoning_tokens', 0)}")
    if cost.get("unknown_cost_instances"):
        lines.append(f"- warning: the cost of {len(cost['unknown_cost_instances'])} answer(s) is unknown, not 0: no "
                     f"price is known for model {summary['model']}; give it with --config 'prices={{{summary['model']}: "
                     "{input: X, output: Y}}'")
    if summary.get("resolution"):
        res = summary["resolution"]
        lines.append(f"- resolved: {res['resolved']} of {res['selected']} ({100 * res['rate']:.1f}%)")
    checked = summary.get("validation")
    if checked:
        rate = f" ({100 * checked['rate']:.1f}%)" if checked["rate"] is not None else ""
        lines.append(f"- over the instances whose environment the gold patch validated: {checked['resolved']} of "
                     f"{checked['validated']}{rate}; environment broken here: {checked['environment_broken']} "
                     "(listed apart below)" + (f"; not validated yet: {checked['not_validated']}"
                                               if checked["not_validated"] else ""))
    if summary["latency_s"]:
        lat = summary["latency_s"]
        lines.append(f"- latency per instance: p50 {lat['p50']} s, p90 {lat['p90']} s, p99 {lat['p99']} s, "
                     f"max {lat['max']} s")
    if summary.get("agent"):
        agent = summary["agent"]
        statuses = ", ".join(f"{status} {n}" for status, n in sorted(agent["exit_statuses"].items()))
        lines.append(f"- agent: {statuses}; steps per instance p50 {agent['steps']['p50']}, p90 "
                     f"{agent['steps']['p90']}, max {agent['steps']['max']}; cost per instance p50 "
                     f"{agent['cost_usd']['p50']} USD, p90 {agent['cost_usd']['p90']} USD")
    lines += ["", "## Stages", "", "| stage | outcome | instances |", "|---|---|---|"]
    if counts["generation"]:
        lines.append(f"| generate | answered | {counts['generation']['ok']} |")
        lines += [f"| generate | failed: {k} | {v} |" for k, v in sorted(counts["generation"]["by_reason"].items())]
        lines += [f"| generate | answered without {k} (the model refused it) | {v} |"
                  for k, v in sorted(counts["generation"].get("dropped_parameters", {}).items())]
    if counts["patch"]:
        lines.append(f"| patch | valid | {counts['patch']['valid']} |")
        lines += [f"| patch | {k} | {v} |" for k, v in sorted(counts["patch"]["by_reason"].items())]
        lines.append(f"| patch | mended by the apply check | {counts['patch']['mended_by_apply_check']} |")
        lines.append(f"| repair | mended by the model | {counts['patch']['mended_by_model']} |")
    lines.append(f"| predictions | with a patch | {counts['predictions']['non_empty']} |")
    if counts["predictions"]["not_a_diff"]:
        lines.append(f"| predictions | not a diff | {counts['predictions']['not_a_diff']} |")
    if summary.get("resolution"):
        lines += [f"| evaluate | {k} | {v} |" for k, v in summary["resolution"]["by_status"].items() if v]
        lines += ["", "## Repositories", "", "| repository | selected | with a patch | resolved |", "|---|---|---|---|"]
        lines += [f"| {r['repo']} | {r['selected']} | {r['with_patch']} | {r['resolved']} ({100 * r['resolved_rate']:.1f}%) |"
                  for r in summary["per_repo"]]
    else:
        lines += ["", "## Repositories", "", "| repository | selected | with a patch |", "|---|---|---|"]
        lines += [f"| {r['repo']} | {r['selected']} | {r['with_patch']} |" for r in summary["per_repo"]]
    lines += render_pass_at_k(summary.get("samples_pass_at_k"))
    lines += render_funnel(summary)
    costly = sorted(summary["per_instance"], key=lambda i: -i["cost_usd"])[:10]
    if costly and costly[0]["cost_usd"] > 0:
        lines += ["", "## Costliest instances", "", "| instance | cost (USD) | tokens in/out | latency (s) | attempts |",
                  "|---|---|---|---|---|"]
        lines += [f"| {i['instance_id']} | {i['cost_usd']:.4f} | {i['input_tokens']}/{i['output_tokens']} | "
                  f"{i['latency_s']} | {i['attempts']} |" for i in costly]
    if checked and checked["broken"]:
        lines += ["", "## Environment broken here", "",
                  "The gold patch does not resolve these instances on this machine, or they resolve with no patch: "
                  "their verdicts say nothing of the model, and the rate over the validated instances leaves them "
                  "out.", "", "| instance | why | the model's patch resolved | file |", "|---|---|---|---|"]
        lines += [f"| {b['instance_id']} | {b['reason']} | {'yes' if b['resolved'] else 'no'} | {b['file']} |"
                  for b in checked["broken"]]
    if summary["failures"]:
        lines += ["", "## Instances without a usable patch or a verdict", "", "| instance | stage | reason | file |", "|---|---|---|---|"]
        lines += [f"| {f['instance_id']} | {f['stage']} | {f['reason']} | {f['file']} |" for f in summary["failures"]]
    if summary["missing"]:
        lines += ["", "## Missing", "",
                  f"Instances with no result yet at the stage named ({len(summary['missing'])}): its job failed "
                  "(its log is logs/<id>/<stage>.log) or did not run. Run the same command again "
                  "(`snakemake --cores N`, with the same `--config`) to make them; what is done is kept.",
                  "", "| instance | stage | infrastructure fault (a rerun retries it) | file |", "|---|---|---|---|"]
        lines += [f"| {m['instance_id']} | {m['stage']} | {m.get('infrastructure_fault', '')} | {m['file']} |"
                  for m in summary["missing"]]
    return "\n".join(lines) + "\n"


def render_pass_at_k(stats):
    if not stats:
        return []
    lines = ["", f"## pass@k over {stats['samples']} samples", ""]
    if "note" in stats:
        return lines + [f"Not computed: {stats['note']}"]
    ks = range(1, stats["samples"] + 1)
    what = "resolved" if stats["outcome"] == "resolved" else "a valid patch (not evaluated)"
    lines += [f"Outcome: {what}. pass@1 is the mean over instances of the share of successful samples (± its "
              "standard error over instances); pass@k is the unbiased estimate 1 - C(n-c, k)/C(n, k) of each "
              "instance (n samples, c successes), averaged over instances.", "",
              "| scope | instances | pass@1 | " + " | ".join(f"pass@{k}" for k in ks) + " |",
              "|---|---|---|" + "---|" * len(ks)]
    scopes = [("all", stats["overall"])] + [(r["repo"], r) for r in stats["per_repo"]]
    lines += [f"| {scope} | {r['instances']} | {100 * r['pass@1']:.1f}% ± {100 * r['se']:.1f} | "
              + " | ".join(f"{100 * r['pass@k'][str(k)]:.1f}%" for k in ks) + " |" for scope, r in scopes if r]
    return lines


def render_funnel(summary):
    selected = summary["counts"]["selected"]
    lines = ["", "## Where instances were lost", "", "| stage | instances | of the selected |", "|---|---|---|"]
    for step in summary["funnel"]:
        n = step["instances"]
        if n is None:
            lines.append(f"| {step['stage']} | no data: {step['note']} | |")
        else:
            lines.append(f"| {step['stage']} | {n} | {100 * n / max(selected, 1):.1f}% |")
    lines += ["", "## Figures", "", "Drawn from summary.json by the figures rule into figures/."]
    for name, title in FIGURES.items():
        lines += ["", f"![{title}](figures/{name}.png)"]
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", required=True)
    parser.add_argument("--predictions", required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--run-info", required=True, help="JSON object of the run's settings")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-md", required=True)
    parser.add_argument("--evaluation", help="the run's evaluation.json, when it was evaluated")
    args = parser.parse_args(argv)
    summary = summarise(read_jsonl(args.instances), read_jsonl(args.predictions), args.run_dir, json.loads(args.run_info),
                        read_json(args.evaluation) if args.evaluation else None)
    write_json_atomic(args.out_json, summary)
    write_text_atomic(args.out_md, render_markdown(summary))


if __name__ == "__main__":
    main()

"""Estimate: what the generation of a run will cost, worked out before any request.

From each prompt's real token count and the model's price, two figures: `low` assumes
an answer of `answer_tokens` (a typical single-call answer with a diff), `high` an answer
of max_output_tokens, the most a request may write. With samples=k each instance is asked k
times; a sample that already has a response.json newer than its prompt is not counted: it will not
be asked again. Self-repair requests
(repair_attempts) come on top of these, and only for patches that do not apply. The code context's share of
the prompts (its files' tokens, as the prompts show them) and of their cost is given beside.
"""
from pathlib import Path

from scripts import costs, providers
from scripts.common import append_log, read_json, sample_folder, write_json_atomic


class CostAboveWarning(Exception):
    """The estimate is above cost_warn and the user has not confirmed: nothing is sent."""


def estimate(prompt_tokens, model, price, answer_tokens, max_output_tokens, instances=None, prompt_cache=False,
             context_tokens=None):
    """The estimate record for a list of prompt token counts (one per request to make) of instances
    (default: one request each). prompt_cache: each prompt is written to the prompt cache, at its write price.
    context_tokens: the code context's tokens in each of those prompts (default: none)."""
    context_tokens = context_tokens or [0] * len(prompt_tokens)
    record = {
        "model": model,
        "instances": len(prompt_tokens) if instances is None else instances,
        "answers": len(prompt_tokens),
        "prompt_tokens": sum(prompt_tokens),
        "context_tokens": sum(context_tokens),
        "answer_tokens": {"low": answer_tokens, "high": max_output_tokens},
        "price": price,
        "prompt_cache": prompt_cache,
        "low_usd": None,
        "high_usd": None,
        "input_usd": None,
        "context_usd": None,
    }
    if price is not None:
        inputs = [costs.cost_usd({"input_tokens": tokens, "output_tokens": 0,
                                  "cache_write_tokens": tokens if prompt_cache else 0}, price) for tokens in prompt_tokens]
        record["input_usd"] = round(sum(inputs), 8)
        # a request's input cost split by its tokens (a long-context tier prices all of them alike)
        record["context_usd"] = round(sum(cost * context / tokens for cost, context, tokens
                                          in zip(inputs, context_tokens, prompt_tokens, strict=True) if tokens), 8)
        for name, per_answer in record["answer_tokens"].items():
            # request by request: a long-context tier prices a whole request by its own size
            record[f"{name}_usd"] = round(sum(costs.cost_usd({"input_tokens": tokens, "output_tokens": per_answer,
                                                              "cache_write_tokens": tokens if prompt_cache else 0}, price)
                                              for tokens in prompt_tokens), 8)
    return record


def context_text(record):
    """The code context's share of the prompts: " The code context: 11,800 of 13,200 input tokens per answer,
    0.31 of 0.36 USD." ("" for a record without it, or with no request to make)."""
    answers = record.get("answers", record["instances"])
    if "context_tokens" not in record or not answers:
        return ""
    text = (f" The code context: {round(record['context_tokens'] / answers):,} of "
            f"{round(record['prompt_tokens'] / answers):,} input tokens per answer")
    if record.get("context_usd") is not None:
        text += f", {record['context_usd']:.2f} of {record['input_usd']:.2f} USD"
    return text + "."


def describe(record):
    """One line for the terminal."""
    answers = record.get("answers", record["instances"])
    asked = f"{record['instances']} instances" + (f", {answers} answers," if answers != record["instances"] else "")
    head = f"Cost estimate for {asked} to ask ({record['prompt_tokens']:,} prompt tokens"
    if record["low_usd"] is None:
        return (f"{head}): no price is known for model {record['model']}, so it cannot be estimated and its "
                f"cost is unknown; give one with --config 'prices={{{record['model']}: {{input: X, output: Y}}}}'."
                + context_text(record))
    return (f"{head}, answers of {record['answer_tokens']['low']:,} to {record['answer_tokens']['high']:,} tokens "
            f"at {record['price']['input']:g}/{record['price']['output']:g} USD per million in/out, "
            + (f"each prompt written to the prompt cache at {record['price'].get('cache_write', record['price']['input']):g}, "
               if record.get("prompt_cache") else "")
            + f"{record['price'].get('source', 'the prices setting')}): "
            f"{record['low_usd']:.2f} to {record['high_usd']:.2f} USD." + context_text(record))


def check(record, cost_warn, confirmed, text=None):
    """Raise CostAboveWarning when the high figure passes cost_warn and the run is not confirmed."""
    if confirmed or record["high_usd"] is None or cost_warn is None or record["high_usd"] <= cost_warn:
        return
    raise CostAboveWarning(
        f"{text or describe(record)} That is above cost_warn={cost_warn:g} USD, so no request was sent. To go on, "
        "run again with --config confirm_cost=true (max_cost caps the spend), or select fewer instances with "
        "--config count=N."
    )


def context_tokens(context_path, prompt):
    """The tokens of the code context's files that the prompt shows (not those it dropped); 0 with no context."""
    if not context_path.exists():
        return 0
    dropped = set(prompt.get("dropped_files") or [])
    return sum(f["tokens"] for f in read_json(context_path)["files"] if f["path"] not in dropped)


def prompts_to_ask(run_dir, instance_ids, samples=1, prompts_dir=None):
    """Token counts of the prompts of the samples that have no response yet (one per request), of the code
    context in each, the number of instances they belong to, and the ids whose prompt is missing. prompts_dir: the
    run folder that holds the prompts and contexts, when another one does (models=[...])."""
    tokens, context, instances, missing = [], [], 0, []
    for instance_id in instance_ids:
        folder = Path(run_dir) / "instances" / instance_id
        prompt = Path(prompts_dir or run_dir) / "instances" / instance_id / "prompt.json"
        if not prompt.exists():
            missing.append(instance_id)
            continue
        # answered, and the answer is not older than its prompt: not asked again
        to_ask = [s for s in range(1, samples + 1)
                  if not ((response := folder / sample_folder(s) / "response.json").exists()
                          and response.stat().st_mtime >= prompt.stat().st_mtime)]
        if to_ask:
            record = read_json(prompt)
            tokens += [record["tokens"]] * len(to_ask)
            context += [context_tokens(prompt.with_name("context.json"), record)] * len(to_ask)
            instances += 1
    return tokens, context, instances, missing


def for_run(run_dir, instance_ids, model, settings, prompts_dir=None):
    """The estimate of the instances still to ask, and the ids whose prompt is not built yet."""
    tokens, context, instances, missing = prompts_to_ask(run_dir, instance_ids, settings.get("samples", 1),
                                                         prompts_dir)
    price = costs.price_for(settings["provider"], model, settings["prices"], batch=settings.get("batch", False),
                            database=settings["database_prices"])
    record = estimate(tokens, model, price, settings["answer_tokens"],
                      providers.output_limit(settings["provider"], model, settings), instances,
                      settings.get("prompt_cache", False), context)
    return record, missing


def show(text, log_path):
    """A line of the stage: printed, and added to its log when it has one."""
    print(text, flush=True)
    if log_path:
        append_log(log_path, text)


def run(run_dir, instance_ids, model, settings, out_path=None, log_path=None):
    """The stage: estimate the instances still to ask, print it, stop above cost_warn, write estimate.json.
    settings: provider, prices, answer_tokens, max_output_tokens, cost_warn, confirm_cost."""
    record, _ = for_run(run_dir, instance_ids, model, settings)
    record["samples"] = settings.get("samples", 1)
    show(describe(record), log_path)
    check(record, settings["cost_warn"], settings["confirm_cost"])
    if out_path:
        write_json_atomic(out_path, record)
    return record


def run_models(runs, instance_ids, prompts_dir, out_paths, log_path=None):
    """The stage for models=[...]: the estimate of each model, runs of (run_dir, model, settings), from the prompts
    of prompts_dir; printed with their sum, which cost_warn bounds; each model's record written to its out path."""
    records = []
    for run_dir, model, settings in runs:
        record, _ = for_run(run_dir, instance_ids, model, settings, prompts_dir)
        record["samples"] = settings.get("samples", 1)
        show(f"{run_dir}: {describe(record)}", log_path)
        records.append(record)
    total = {key: round(sum(r[key] for r in records), 8) for key in ("low_usd", "high_usd")}
    text = f"Cost estimate of the {len(records)} models: {total['low_usd']:.2f} to {total['high_usd']:.2f} USD."
    show(text, log_path)
    check(total, runs[0][2]["cost_warn"], runs[0][2]["confirm_cost"], text)
    for record, out_path in zip(records, out_paths, strict=True):
        write_json_atomic(out_path, record)
    return records

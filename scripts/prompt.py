"""Prompt: turn an instance's context into the chat messages sent to the model.

A template is a YAML file with `user` (and optionally `system` and `name`) strings whose
$placeholders are filled from the context: $instance_id $repo $base_commit
$problem_statement $code. `line_numbers: false` shows the code without line numbers
(search/replace edits must quote lines exactly). The prompt is counted with the context's
tokenizer; if it exceeds the context's budget (a template longer than the context stage
allowed for), the lowest-ranked files are dropped until it fits. build_prompt and load_template are
the stage's own, which the generate stage calls to rebuild a prompt with less code context; the layout
of a file is shared with the context stage and the apply check (scripts/layout.py).
"""
import functools
import string
from pathlib import Path

import yaml

from scripts.common import append_log, read_json, write_json_atomic
from scripts.layout import render_file
from scripts.tokens import count_tokens, describe, tokenizer_of

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "style3.yaml"
NO_CODE = "(No code is given: work out from the issue which files to change.)"


class TemplateError(Exception):
    pass


def load_template(path):
    path = Path(path)
    return dict(_parsed_template(path, path.stat().st_mtime_ns if path.exists() else None))


@functools.lru_cache(maxsize=8)
def _parsed_template(path, mtime):  # read once per run, not once per instance
    try:
        template = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TemplateError(f"prompt template {path} cannot be read: {e}") from e
    if not isinstance(template, dict) or not isinstance(template.get("user"), str):
        raise TemplateError(f"prompt template {path} must be a YAML mapping with a `user` string.")
    template.setdefault("name", path.stem)
    return template


def render_code(files, line_numbers=True):
    """Files in the style-3 layout: each between start and end markers, lines numbered."""
    if not files:
        return NO_CODE
    return "\n".join(render_file(f, line_numbers) for f in files)


def render_messages(context, template, files):
    values = {
        "instance_id": context["instance_id"],
        "repo": context["repo"],
        "base_commit": context["base_commit"],
        "problem_statement": context["problem_statement"].strip(),
        "code": render_code(files, template.get("line_numbers", True)),
    }
    messages = []
    try:
        if template.get("system"):
            messages.append({"role": "system", "content": string.Template(template["system"]).substitute(values)})
        messages.append({"role": "user", "content": string.Template(template["user"]).substitute(values)})
    except (KeyError, ValueError) as e:
        raise TemplateError(
            f"prompt template {template['name']} has an unknown or malformed placeholder ({e}); "
            f"use only ${', $'.join(values)} and write a literal $ as $$."
        ) from e
    return messages


def build_prompt(context, template):
    tokenizer = tokenizer_of(context.get("token_counter"))
    limit = (context.get("budget") or {}).get("context_tokens")
    files, dropped = list(context["files"]), []
    while True:
        messages = render_messages(context, template, files)
        tokens = sum(count_tokens(m["content"], tokenizer) for m in messages)
        if limit is None or tokens <= limit or not files:
            break
        dropped.insert(0, files.pop()["path"])
    record = {
        "instance_id": context["instance_id"],
        "template": template["name"],
        "messages": messages,
        "tokens": tokens,
        "token_counter": describe(tokenizer),
    }
    if dropped:
        record["dropped_files"] = dropped
    return record


def run_stage(instance_id, input, output, log_path, settings=None):
    """The stage as its rule calls it, like every per-instance stage: write output[0], prompt.json, from the
    context and template of input (the instance's id is the context's; no setting but the template)."""
    return run(input["context"], input["template"], output[0], log_path)


def run(context_path, template_path, out_path, log_path=None):
    """The stage: read context.json and the template, write prompt.json."""
    prompt = build_prompt(read_json(context_path), load_template(template_path))
    write_json_atomic(out_path, prompt)
    append_log(log_path, f"prompt: {prompt['instance_id']}: {prompt['tokens']} tokens, template {prompt['template']}")
    return prompt


"""Prompt: turn an instance's context into the chat messages sent to the model.

A template is a YAML file with `user` (and optionally `system` and `name`) strings whose
$placeholders are filled from the context: $instance_id $repo $base_commit
$problem_statement $code.
"""
import argparse
import string
from pathlib import Path

import yaml

from scripts.common import read_json, write_json_atomic
from scripts.context import TOKEN_COUNTER, count_tokens

DEFAULT_TEMPLATE = Path(__file__).parent / "templates" / "style3.yaml"
NO_CODE = "(No code is given: work out from the issue which files to change.)"


class TemplateError(Exception):
    pass


def load_template(path):
    path = Path(path)
    try:
        template = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TemplateError(f"prompt template {path} cannot be read: {e}") from e
    if not isinstance(template, dict) or not isinstance(template.get("user"), str):
        raise TemplateError(f"prompt template {path} must be a YAML mapping with a `user` string.")
    template.setdefault("name", path.stem)
    return template


def render_code(files):
    """Files in the style-3 layout: every line numbered, between start and end markers."""
    if not files:
        return NO_CODE
    blocks = []
    for f in files:
        lines = f["content"].splitlines()
        numbered = "\n".join(f"{f.get('first_line', 1) + n} {line}" for n, line in enumerate(lines))
        blocks.append(f"[start of {f['path']}]\n{numbered}\n[end of {f['path']}]")
    return "\n".join(blocks)


def build_prompt(context, template):
    values = {
        "instance_id": context["instance_id"],
        "repo": context["repo"],
        "base_commit": context["base_commit"],
        "problem_statement": context["problem_statement"].strip(),
        "code": render_code(context["files"]),
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
    return {
        "instance_id": context["instance_id"],
        "template": template["name"],
        "messages": messages,
        "tokens": sum(count_tokens(m["content"]) for m in messages),
        "token_counter": TOKEN_COUNTER,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--context", required=True)
    parser.add_argument("--template", default=str(DEFAULT_TEMPLATE))
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        prompt = build_prompt(read_json(args.context), load_template(args.template))
    except TemplateError as e:
        raise SystemExit(f"prompt: {e}")
    write_json_atomic(args.out, prompt)


if __name__ == "__main__":
    main()

"""What each rule file holds: rules/common.smk the input functions alone, which run when Snakemake asks for a
job's inputs, never when the workflow is read."""
import ast
import re

import pytest

from conftest import PROJECT

pytestmark = pytest.mark.unit


def test_common_rules_define_functions_and_run_nothing_when_read():
    tree = ast.parse((PROJECT / "rules" / "common.smk").read_text(encoding="utf-8"))  # no rule, include or directive
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Import", "ImportFrom", "FunctionDef", "ClassDef"}, kinds
    assert "FunctionDef" in kinds


def test_each_rule_is_in_the_file_of_its_name_or_of_its_stage():
    defined = {}
    for path in (PROJECT / "rules").glob("*.smk"):
        for line in path.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if len(words) == 2 and words[0] in ("rule", "checkpoint") and words[1].endswith(":"):
                defined.setdefault(words[1][:-1], set()).add(path.name)
    assert defined["compare"] == {"compare.smk"}
    assert defined["estimate"] == {"estimate.smk", "across_models.smk"}  # a run of one model, and of several


def test_every_per_instance_stage_is_called_the_same_way():
    text = "".join(path.read_text(encoding="utf-8") for path in sorted((PROJECT / "rules").glob("*.smk")))
    calls = re.findall(r"\b([a-z]+)\.(\w+)\(\s*wildcards\.id,\s*([^\n]*)", text)
    assert sorted(module for module, _, _ in calls) == ["agent", "context", "generate", "patch", "prompt", "repair"]
    for module, function, args in calls:
        assert (function, args[:len("input, output, log[0]")]) == ("run_stage", "input, output, log[0]"), module

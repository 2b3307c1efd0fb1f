"""What each rule file holds: rules/common.smk the input functions alone, which run when Snakemake asks for a
job's inputs, never when the workflow is read."""
import ast

from conftest import PROJECT


def test_common_rules_define_functions_and_run_nothing_when_read():
    tree = ast.parse((PROJECT / "rules" / "common.smk").read_text(encoding="utf-8"))  # no rule, include or directive
    kinds = {type(node).__name__ for node in tree.body}
    assert kinds <= {"Import", "ImportFrom", "FunctionDef", "ClassDef"}, kinds
    assert "FunctionDef" in kinds

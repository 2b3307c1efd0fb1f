"""The modules of scripts/ import one another without a circle, counting the imports inside functions (which
hide a circle until the function runs)."""
import ast

import pytest

from conftest import PROJECT

pytestmark = pytest.mark.unit


def imports_of(path):
    """The scripts modules that the module at path imports, anywhere in it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "scripts":
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scripts."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("scripts."))
    return names


def circles(graph):
    """Every module that reaches itself, with the path it takes."""
    found = []
    for start in sorted(graph):
        paths = [[start, name] for name in sorted(graph[start])]
        seen = set()
        while paths:
            path = paths.pop()
            if path[-1] == start:
                found.append(" -> ".join(path))
                break
            if path[-1] in seen:
                continue
            seen.add(path[-1])
            paths += [path + [name] for name in sorted(graph.get(path[-1], ()))]
    return found


def test_no_module_of_scripts_imports_itself_through_others():
    modules = {path.stem: path for path in (PROJECT / "scripts").glob("*.py") if path.stem != "__init__"}
    graph = {name: imports_of(path) & set(modules) for name, path in modules.items()}
    assert graph["live"]  # the graph is read: the view imports the records
    assert circles(graph) == []


def test_a_circle_is_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a", "b -> c -> a -> b",
                                                                        "c -> a -> b -> c"]


def test_the_layout_of_files_is_shared_not_taken_from_the_prompt_stage():
    modules = {path.stem: path for path in (PROJECT / "scripts").glob("*.py")}
    for name in ("context", "apply"):
        assert imports_of(modules[name]) & {"prompt", "generate", "patch", "repair"} == set(), name
        assert "layout" in imports_of(modules[name])

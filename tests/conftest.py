import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
DATA = PROJECT.parent / "shared" / "data"
LITE_TEST = DATA / "swebench_lite_test.jsonl"
LITE_DEV = DATA / "swebench_lite_dev.jsonl"


def read_rows(path, count=None):
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:count] if count else rows


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def snakemake(workdir, *args, env=None, check=True, umask=-1):
    """Run the real snakemake on the project's Snakefile with results under workdir (and umask, if given).
    Snakemake's own output (a block per job, which jobs_run reads) unless args choose the logger."""
    view = [] if any(a.startswith("--logger") for a in args) else ["--logger-swebench-jobs"]
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"),
               "--directory", str(workdir), "--cores", "2", *view, *args]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SWEBENCH_")}
    full_env["SWEBENCH_EVALUATION"] = "none"  # tests of evaluation ask for it with --config or env
    # The SWE-bench repositories are not reachable offline; tests of the check ask for it with --config.
    full_env["SWEBENCH_APPLY_CHECK"] = "false"
    # The loopback model server stands for the providers' own APIs, priced from the database; tests of a
    # server that is not ask for provider_prices=false with --config.
    full_env["SWEBENCH_PROVIDER_PRICES"] = "true"
    # the logger plugin of this checkout, before any installed from another one
    full_env["PYTHONPATH"] = os.pathsep.join([str(PROJECT / "logger" / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    full_env.update(env or {})
    result = subprocess.run(command, capture_output=True, text=True, env=full_env, umask=umask)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def jobs_run(result):
    """Names of the rules whose jobs ran, one per job, from snakemake's output."""
    text = result.stdout + result.stderr
    return sorted(line.split("Rule: ")[1].rstrip(")") for line in text.splitlines() if "(Rule: " in line)


@pytest.fixture
def lite_rows():
    return read_rows(LITE_TEST)


def assert_valid(record, schema_name):
    """Validate a record against schemas/<schema_name>.schema.json."""
    import jsonschema

    schema = json.loads((PROJECT / "schemas" / f"{schema_name}.schema.json").read_text())
    jsonschema.validate(record, schema)


def snapshot(folder):
    """Every file under folder with its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(Path(folder).rglob("*")) if path.is_file()}
def run_config(**overrides):
    """The defaults of config.yaml with overrides, as a checked config holds them."""
    import yaml

    return {**yaml.safe_load((PROJECT / "config.yaml").read_text()), **overrides}


@pytest.fixture(scope="session")
def registry_ports():
    """Two loopback ports for the tests' image registries, which every engine pulls from over plain HTTP."""
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return first.getsockname()[1], second.getsockname()[1]


@pytest.fixture(scope="session")
def podman(tmp_path_factory, registry_ports):
    """podman's Docker-compatible API on a socket of its own, for the session; yields its DOCKER_HOST."""
    from swebench_images import podman_service

    with podman_service(tmp_path_factory.mktemp("podman"), [f"127.0.0.1:{p}" for p in registry_ports]) as host:
        yield host


@pytest.fixture(scope="session")
def engine(request):
    """The engine the harness runs on (swebench_images.Engine): Docker, unless a test asks for each
    with @pytest.mark.parametrize("engine", swebench_images.ENGINES, indirect=True)."""
    from swebench_images import Engine

    name = getattr(request, "param", "docker")
    return Engine(name, request.getfixturevalue("podman") if name == "podman" else None)


KINDS = ("unit", "workflow", "docker", "podman", "slurm", "real_instances")  # pytest.ini's markers


def pytest_collection_modifyitems(config, items):
    """Every test says what it needs, so that `pytest -m unit` is the fast part and nothing slips into it."""
    unmarked = [item.nodeid for item in items if not any(item.get_closest_marker(kind) for kind in KINDS)]
    if unmarked:
        raise pytest.UsageError(f"Tests without a marker of {', '.join(KINDS)} (pytest.ini): {', '.join(unmarked)}")

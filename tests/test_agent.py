"""agent=swebench: mini-swe-agent's loop in the instance's real image, its model asked through the project's clients
(the real openai and anthropic libraries) at the scripted loopback server of tests/agent_server.py, run by the real
snakemake. The images are the real psf/requests instance images of tests/real_instances.py."""
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

import docker
import pytest
import real_instances
from agent_server import AgentServer, apply_command, submit_steps

from conftest import LITE_TEST, PROJECT, assert_valid, jobs_run, read_rows, snakemake, write_rows

INSTANCE = "psf__requests-863"
TEST = "python -m pytest tests/test_requests.py -x -q -k hook 2>&1 | tail -3"
FIXED = ["requests/models.py"]
PRICE = "prices={m: {input: 1.0, output: 2.0}}"  # USD per million tokens


def real(test):
    """A test of the real snakemake on a real instance image in Docker."""
    for mark in (pytest.mark.real_instances, pytest.mark.docker, pytest.mark.workflow, pytest.mark.timeout(1200)):
        test = mark(test)
    return test


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """The rows of INSTANCE and EVALUATED, their real instance images built where the daemon lacks them."""
    found = {r["instance_id"]: r for r in read_rows(LITE_TEST) if r["instance_id"] in (INSTANCE, EVALUATED)}
    real_instances.ensure_instances(docker.from_env(timeout=3600), list(found.values()),
                                    tmp_path_factory.mktemp("mirrors"))
    return found


@pytest.fixture(scope="module")
def row(rows):
    return rows[INSTANCE]


# psf__requests-1963's fix is in requests/sessions.py; a change of a comment there fixes nothing
EVALUATED = "psf__requests-1963"
COMMENT_FIX = "sed -i 's/            # Release the connection back into the pool./            # Release the connection./' requests/sessions.py"


def agent_run(tmp_path, server, rows, *extra, env=None, check=True, popen=False):
    tmp_path.mkdir(exist_ok=True)
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    config = ["--config", f"dataset={dataset}", "provider=openai", "model=m", f"base_url={server.url}/v1",
              "agent=swebench", PRICE, "provider_prices=false", *extra]
    env = {"OPENAI_API_KEY": "sk-agent-test-key", **(env or {})}
    if popen:  # the same command as conftest.snakemake, left running
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(PROJECT / "Snakefile"), "--directory",
                   str(tmp_path), "--cores", "2", "--logger-swebench-jobs", *config]
        full = {k: v for k, v in os.environ.items() if not k.startswith("SWEBENCH_")}
        full.update(SWEBENCH_EVALUATION="none", SWEBENCH_APPLY_CHECK="false", **env)
        return subprocess.Popen(command, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    return snakemake(tmp_path, *config, env=env, check=check)


def folder(tmp_path, run="openai-m"):
    return tmp_path / "results" / run / "instances" / INSTANCE


def answered_steps(server):
    return sorted(r["step"] for r in server.requests_for(INSTANCE) if r["answered"])


def container(here, run="openai-m"):
    """The name of the container of the trajectory written to here (an instance's folder): only this test's."""
    from scripts.agent import container_name

    return container_name(run, here.name, 1, here)


def containers(here):
    return [c.name for c in docker.from_env().containers.list(all=True) if c.name == container(here)]


@real
@pytest.mark.parametrize("fix, verdict", [("right", "resolved"), ("wrong", "unresolved")])
def test_an_agent_run_is_evaluated_by_the_harness(tmp_path, rows, fix, verdict):
    row = rows[EVALUATED]
    steps = submit_steps(apply_command(row["patch"]) if fix == "right" else COMMENT_FIX,
                         "python -m pytest test_requests.py -x -q -k redirect 2>&1 | tail -3", ["requests/sessions.py"])
    with AgentServer({EVALUATED: steps}, [row]) as server:
        result = agent_run(tmp_path, server, [row], "evaluation=docker", "min_free_disk_gb=1", "eval_timeout=600")
    assert jobs_run(result).count("agent") == 1
    here = tmp_path / "results" / "openai-m" / "instances" / EVALUATED
    evaluation = json.loads((here / "evaluation.json").read_text())
    assert evaluation["status"] == verdict
    trajectory = json.loads((here / "trajectory.json").read_text())
    assert trajectory["trajectory_format"] == "mini-swe-agent-1.1"
    assert trajectory["info"]["exit_status"] == "Submitted"
    assert "requests/sessions.py" in trajectory["info"]["submission"]
    assert_valid(trajectory, "agent")
    response = json.loads((here / "response.json").read_text())
    assert_valid(response, "response")
    assert response["agent"] == {"exit_status": "Submitted", "steps": 5, "config": "swebench"}
    prediction = json.loads((tmp_path / "results" / "openai-m" / "predictions.jsonl").read_text().splitlines()[0])
    assert "a/requests/sessions.py" in prediction["model_patch"]
    assert sorted(r["step"] for r in server.requests if r["answered"]) == [0, 1, 2, 3, 4]
    summary = json.loads((tmp_path / "results" / "openai-m" / "summary.json").read_text())
    assert summary["agent"]["exit_statuses"] == {"Submitted": 1} and summary["agent"]["steps"]["p90"] == 5
    assert summary["agent"]["cost_usd"]["p50"] == response["cost_usd"] > 0
    assert "- agent: Submitted 1; steps per instance p50 5" in (tmp_path / "results/openai-m/summary.md").read_text()
    # the messages mini-swe-agent's own model sends with this config: its system and instance templates, its bash
    # tool, parallel tool calls, and tool messages that answer each call with its observation template
    first, last = server.requests[0]["body"], server.requests[-1]["body"]
    from minisweagent.models.utils.actions_toolcall import BASH_TOOL

    assert first["tools"] == [BASH_TOOL] and first["parallel_tool_calls"] is True
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["messages"][0]["content"].startswith("You are a helpful assistant that can interact with a computer")
    assert "<pr_description>" in first["messages"][1]["content"] and row["problem_statement"][:100] in \
        first["messages"][1]["content"]
    tool = [m for m in last["messages"] if m["role"] == "tool"][-1]
    assert tool["tool_call_id"] == "call_3_0" and tool["content"].startswith("<returncode>0</returncode>\n<output>")
    assert all("extra" not in m for m in last["messages"])
    # no key in any file of the run
    for path in (tmp_path / "results").rglob("*"):
        assert not path.is_file() or b"sk-agent-test-key" not in path.read_bytes(), path
    assert not containers(here)  # removed when the job ended


@real
@pytest.mark.usefixtures("row")
def test_a_killed_agent_resumes_from_its_last_step_without_asking_again(tmp_path, row):
    steps = submit_steps(apply_command(row["patch"]), TEST, FIXED)
    steps.insert(2, ["sleep 30"])  # step 3: a long command, during which snakemake is killed
    with AgentServer({INSTANCE: steps}, [row]) as server:
        partial = folder(tmp_path) / "agent.partial.json"
        process = agent_run(tmp_path, server, [row], popen=True)
        try:
            deadline = time.monotonic() + 300
            while not (partial.exists() and json.loads(partial.read_text())["n_calls"] == 3):
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(1)  # the command of step 3 runs
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert answered_steps(server) == [0, 1, 2]
        assert not (folder(tmp_path) / "trajectory.json").exists()
        assert containers(folder(tmp_path))  # the killed job's container is still there
        saved = json.loads(partial.read_text())
        assert saved["messages"][-1]["role"] == "assistant" and "register_hook" in saved["diff"]
        agent_run(tmp_path, server, [row], "--unlock")  # snakemake's lock, left by the killed process
        agent_run(tmp_path, server, [row], "--rerun-incomplete")
        assert answered_steps(server) == [0, 1, 2, 3, 4, 5]  # every step asked once
        # an uninterrupted run of the same script, for its diff
        agent_run(tmp_path / "whole", server, [row])
    resumed = json.loads((folder(tmp_path) / "response.json").read_text())
    whole = json.loads((folder(tmp_path / "whole") / "response.json").read_text())
    assert resumed["answer"] == whole["answer"] and "register_hook" in resumed["answer"]
    trajectory = json.loads((folder(tmp_path) / "trajectory.json").read_text())
    assert trajectory["info"]["exit_status"] == "Submitted" and trajectory["info"]["model_stats"]["api_calls"] == 6
    assert [m["role"] for m in trajectory["messages"]] == [
        m["role"] for m in json.loads((folder(tmp_path / "whole") / "trajectory.json").read_text())["messages"]]
    assert not partial.exists()
    assert not containers(folder(tmp_path))  # the stale one removed by the rerun, its own when it ended


@real
@pytest.mark.usefixtures("row")
def test_max_cost_stops_an_agent_mid_trajectory_and_a_higher_one_goes_on(tmp_path, row):
    with AgentServer({INSTANCE: submit_steps(apply_command(row["patch"]), TEST, FIXED)}, [row]) as server:
        # each step costs about 0.002 USD and reserves about 0.023 (8000 output tokens at 2 USD per million): the
        # fourth does not fit
        stopped = agent_run(tmp_path, server, [row], "max_cost=0.028", "max_output_tokens=8000", check=False)
        assert stopped.returncode != 0
        asked = answered_steps(server)
        assert asked == [0, 1, 2] and len(server.requests_for(INSTANCE)) == 3  # none sent past it
        ledger = [json.loads(line) for line in (tmp_path / "results/openai-m/spend.jsonl").read_text().splitlines()]
        assert ledger[-1]["state"] == "refused"
        partial = json.loads((folder(tmp_path) / "agent.partial.json").read_text())
        assert partial["n_calls"] == len(asked)
        assert not (folder(tmp_path) / "trajectory.json").exists()
        assert "The budget max_cost=0.028 USD stopped the run" in stopped.stderr
        agent_run(tmp_path, server, [row], "max_cost=1", "max_output_tokens=8000")
        assert answered_steps(server) == [0, 1, 2, 3, 4]
    assert json.loads((folder(tmp_path) / "trajectory.json").read_text())["info"]["exit_status"] == "Submitted"


@real
@pytest.mark.usefixtures("row")
def test_the_step_limit_and_repeated_format_errors_are_the_agents_result(tmp_path, row):
    script = {INSTANCE: [["echo one"], [apply_command(row["patch"])], ["echo three"]]}
    with AgentServer(script, [row]) as server:
        result = agent_run(tmp_path, server, [row], "agent_step_limit=2")
        assert "patch" in jobs_run(result)
        assert answered_steps(server) == [0, 1]
    trajectory = json.loads((folder(tmp_path) / "trajectory.json").read_text())
    assert trajectory["info"]["exit_status"] == "LimitsExceeded"
    patch = json.loads((folder(tmp_path) / "patch.json").read_text())
    assert patch["status"] == "valid" and patch["files"] == FIXED  # the diff it left goes on

    with AgentServer({INSTANCE: ["no_tool_call", "unknown_tool", "no_tool_call"]}, [row]) as server:
        agent_run(tmp_path / "format", server, [row])
        assert answered_steps(server) == [0, 1, 2]
        third = server.requests[2]["body"]["messages"]
    trajectory = json.loads((folder(tmp_path / "format") / "trajectory.json").read_text())
    assert trajectory["info"]["exit_status"] == "RepeatedFormatError"
    # mini-swe-agent's format error messages go back to the model as user messages
    assert [m["role"] for m in third] == ["system", "user", "user", "user"]
    assert "No tool calls found in the response" in third[2]["content"]
    assert "Unknown tool 'python'" in third[3]["content"]
    patch = json.loads((folder(tmp_path / "format") / "patch.json").read_text())
    assert patch["reason"] == "empty_answer"


@real
@pytest.mark.usefixtures("row")
def test_anthropic_messages_carry_the_same_conversation(tmp_path, row):
    with AgentServer({INSTANCE: submit_steps(apply_command(row["patch"]), TEST, FIXED)}, [row]) as server:
        dataset = write_rows(tmp_path / "rows.jsonl", [row])
        snakemake(tmp_path, "--config", f"dataset={dataset}", "provider=anthropic", "model=m",
                  f"base_url={server.url}", "agent=swebench", PRICE, "provider_prices=false",
                  env={"ANTHROPIC_API_KEY": "sk-ant-test"})
        assert answered_steps(server) == [0, 1, 2, 3, 4]
        last = server.requests[-1]["body"]
    assert last["system"].startswith("You are a helpful assistant") and last["tools"][0]["name"] == "bash"
    # the Messages API requires max_tokens: the model's own limit, here (a model not listed) max_output_tokens
    assert last["max_tokens"] == 16384 and "temperature" not in last
    assert last["messages"][-1]["content"][0]["type"] == "tool_result"
    response = json.loads((folder(tmp_path, "anthropic-m") / "response.json").read_text())
    assert "register_hook" in response["answer"] and response["agent"]["exit_status"] == "Submitted"



@real
def test_a_registry_that_refuses_the_image_is_a_fault_and_asks_nothing(tmp_path, row, registry_ports):
    from test_evaluate_docker import FailingRegistry

    port = registry_ports[1]
    with AgentServer({INSTANCE: submit_steps(apply_command(row["patch"]), TEST, FIXED)}, [row]) as server:
        with FailingRegistry(port, 429) as failing:
            failed = agent_run(tmp_path, server, [row], f"image_namespace=127.0.0.1:{port}/swebench", check=False)
        assert failed.returncode != 0 and failing.pulls  # the daemon asked, and was refused
        assert not server.requests  # no model request before the container runs
    here = folder(tmp_path)
    assert not (here / "trajectory.json").exists() and not (here / "response.json").exists()
    log = tmp_path / "results" / "openai-m" / "logs" / INSTANCE / "agent.log"
    last = log.read_text().strip().splitlines()[-1]
    assert "infrastructure fault: registry_rate_limit: " in last and "toomanyrequests" in last, last
    assert "1 instance failed for one cause: registry_rate_limit" in failed.stderr


@pytest.mark.workflow
@pytest.mark.parametrize("change, message", [
    ({"provider": "gold"}, "asks a model at every step, and provider=gold asks none"),
    ({"provider": "openai", "batch": True}, "set batch=false"),
    ({"provider": "openai", "agent": "no-such-config"}, "agent=no-such-config: no such mini-swe-agent config"),
])
def test_a_bad_agent_setting_stops_the_run_before_any_job(tmp_path, change, message):
    dataset = write_rows(tmp_path / "rows.jsonl", read_rows(LITE_TEST, 1))
    config = {"dataset": dataset, "agent": "swebench", "provider": "openai", "model": "m", "evaluation": "none"}
    result = snakemake(tmp_path, "-n", "--config", *(f"{k}={v}" for k, v in {**config, **change}.items()),
                       check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.unit
def test_importing_the_agent_stage_loads_no_litellm_and_leaves_home_alone(tmp_path):
    """mini-swe-agent prints a banner and reads (and makes) a config folder in the user's home when it is imported;
    the stage keeps both out, and imports no litellm."""
    code = ("import os, sys, scripts.agent; print(sorted(m for m in ('litellm', 'openai') if m in sys.modules)); "
            "print(os.environ['MSWEA_GLOBAL_CONFIG_DIR'])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MSWEA_", "XDG_"))}
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env={**env, "HOME": str(tmp_path)},
                            capture_output=True, text=True, check=True)
    loaded, config_dir = result.stdout.splitlines()
    assert loaded == "[]" and result.stderr == ""
    assert not any(tmp_path.iterdir())
    assert not os.path.exists(config_dir)  # an empty folder of its own, removed when the process ends


@pytest.mark.unit
def test_a_chat_conversation_becomes_anthropic_messages_with_tool_blocks():
    from scripts.providers import anthropic_messages

    calls = [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls"}'}},
             {"id": "c2", "type": "function", "function": {"name": "bash", "arguments": '{"command": "pwd"}'}}]
    system, messages = anthropic_messages([
        {"role": "system", "content": "S"}, {"role": "user", "content": "task"},
        {"role": "assistant", "content": "thinking", "tool_calls": calls, "extra": {"cost": 1}},
        {"role": "tool", "tool_call_id": "c1", "content": "a"}, {"role": "tool", "tool_call_id": "c2", "content": "b"},
        {"role": "user", "content": "format error"}])
    assert system == "S"
    assert messages == [
        {"role": "user", "content": "task"},
        {"role": "assistant", "content": [{"type": "text", "text": "thinking"},
                                          {"type": "tool_use", "id": "c1", "name": "bash", "input": {"command": "ls"}},
                                          {"type": "tool_use", "id": "c2", "name": "bash", "input": {"command": "pwd"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "a"},
                                     {"type": "tool_result", "tool_use_id": "c2", "content": "b"}]},
        {"role": "user", "content": "format error"}]


@real
def test_a_lost_container_or_provider_is_a_fault_and_the_rerun_resumes(tmp_path, row):
    steps = submit_steps(apply_command(row["patch"]), TEST, FIXED)
    steps.insert(2, ["sleep 20"])  # step 3: its container is removed while it runs
    with AgentServer({INSTANCE: steps}, [row]) as server:
        partial = folder(tmp_path) / "agent.partial.json"
        log = tmp_path / "results" / "openai-m" / "logs" / INSTANCE / "agent.log"

        def remove_the_container():
            deadline = time.monotonic() + 300
            while not (partial.exists() and json.loads(partial.read_text())["n_calls"] == 3):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(1)
            for name in containers(folder(tmp_path)):
                docker.from_env().containers.get(name).remove(force=True)

        import threading

        remover = threading.Thread(target=remove_the_container)
        remover.start()
        failed = agent_run(tmp_path, server, [row], check=False)
        remover.join()
        assert failed.returncode != 0 and not (folder(tmp_path) / "trajectory.json").exists()
        assert "infrastructure fault: docker_daemon: " in log.read_text().strip().splitlines()[-1]
        assert json.loads(partial.read_text())["n_calls"] == 3  # the lost step's answer is kept
        # the provider fails twice on step 5, the most a job tries: a fault, then the rerun goes on from step 5
        server.faults[(INSTANCE, 4)] = ["500", "500"]
        failed = agent_run(tmp_path, server, [row], "max_attempts=2", "retry_backoff=0.01", check=False)
        assert failed.returncode != 0
        assert "infrastructure fault: provider_unreachable: " in log.read_text().strip().splitlines()[-1]
        assert json.loads(partial.read_text())["n_calls"] == 4
        agent_run(tmp_path, server, [row], "max_attempts=2")
        assert answered_steps(server) == [0, 1, 2, 3, 4, 5]  # every answer asked once
        assert [r["step"] for r in server.requests_for(INSTANCE) if not r["answered"]] == [4, 4]
    trajectory = json.loads((folder(tmp_path) / "trajectory.json").read_text())
    assert trajectory["info"]["exit_status"] == "Submitted" and "register_hook" in trajectory["info"]["diff"]


@real
def test_the_wall_time_limit_ends_a_trajectory(tmp_path, row):
    with AgentServer({INSTANCE: [["sleep 3"], ["echo two"]]}, [row]) as server:
        agent_run(tmp_path, server, [row], "agent_wall_time_limit=2")
        assert answered_steps(server) == [0]
    trajectory = json.loads((folder(tmp_path) / "trajectory.json").read_text())
    assert trajectory["info"]["exit_status"] == "TimeExceeded"
    assert trajectory["info"]["config"]["agent"]["wall_time_limit_seconds"] == 2


@pytest.mark.podman
@pytest.mark.real_instances
@pytest.mark.workflow
@pytest.mark.timeout(1200)
def test_podman_runs_the_agents_containers(tmp_path, row):
    image = "docker.io/swebench/sweb.eval.x86_64.psf_1776_requests-863:latest"
    if subprocess.run(["podman", "image", "exists", image]).returncode != 0:  # podman's own storage lacks it
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
        subprocess.run(["podman", "load"], input=saved, capture_output=True, check=True)
    # containers get the limits of this machine (rootful podman's own are more than a container here may set), as
    # tests/swebench_images.py's podman service gives them
    nofile, nproc = resource.getrlimit(resource.RLIMIT_NOFILE)[1], min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 16384)
    conf = tmp_path / "containers.conf"
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n')
    with AgentServer({INSTANCE: submit_steps(apply_command(row["patch"]), TEST, FIXED)}, [row]) as server:
        agent_run(tmp_path / "run", server, [row], "agent_engine=podman", env={"CONTAINERS_CONF": str(conf)})
        assert answered_steps(server) == [0, 1, 2, 3, 4]
    trajectory = json.loads((folder(tmp_path / "run") / "trajectory.json").read_text())
    assert trajectory["info"]["exit_status"] == "Submitted" and "register_hook" in trajectory["info"]["diff"]
    assert trajectory["info"]["config"]["environment"]["executable"] == "podman"
    names = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True,
                           check=True).stdout
    assert container(folder(tmp_path / "run")) not in names.split()


# mini-swe-agent's own batch runner on one instance, its LitellmModel pointed at the loopback server: litellm offline
MINI_RUNNER = """
import json, sys
from pathlib import Path
from minisweagent.config import get_config_from_spec
from minisweagent.run.benchmarks.swebench import DEFAULT_CONFIG_FILE, process_instance
from minisweagent.run.benchmarks.utils.batch_progress import RunBatchProgressManager
from minisweagent.utils.serialize import recursive_merge

row, url, out = json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
config = recursive_merge(get_config_from_spec(DEFAULT_CONFIG_FILE), {"model": {
    "model_name": "openai/m", "model_kwargs": {"api_base": url, "api_key": "sk-mini"}}})
process_instance(row, out, config, RunBatchProgressManager(1, out / "exit_statuses.yaml"))
"""


@real
def test_minis_own_batch_runner_sends_the_same_conversation(tmp_path, row):
    steps = submit_steps(apply_command(row["patch"]), TEST, FIXED)
    with AgentServer({INSTANCE: steps}, [row]) as server:
        env = {**os.environ, "HOME": str(tmp_path), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "MSWEA_COST_TRACKING": "ignore_errors", "MSWEA_SILENT_STARTUP": "1",
               "MSWEA_GLOBAL_CONFIG_DIR": str(tmp_path / "mswea")}
        subprocess.run([sys.executable, "-c", MINI_RUNNER, json.dumps(row), f"{server.url}/v1", str(tmp_path)],
                       env=env, check=True, capture_output=True)
        theirs = [r["body"] for r in server.requests]
        server.requests.clear()
        agent_run(tmp_path / "ours", server, [row])
        ours = [r["body"] for r in server.requests]
    mini = json.loads((tmp_path / INSTANCE / f"{INSTANCE}.traj.json").read_text())
    assert mini["info"]["exit_status"] == "Submitted" and len(theirs) == len(ours) == 5
    # every request of the trajectory, whole: model, messages, tools, parallel_tool_calls, and no temperature and no
    # output limit, which mini's swebench config does not set. litellm adds nothing to the body here that is not the
    # model's input, so no field is left out of the comparison (its headers, user agent and key are not compared).
    assert [r for r in theirs if set(r) != {"model", "messages", "tools", "parallel_tool_calls"}] == []
    assert ours == theirs


@real
def test_samples_and_several_models_each_run_their_own_agents(tmp_path, row):
    with AgentServer({INSTANCE: submit_steps(apply_command(row["patch"]), TEST, FIXED)}, [row]) as server:
        dataset = write_rows(tmp_path / "rows.jsonl", [row])
        result = snakemake(tmp_path, "--config", f"dataset={dataset}", "agent=swebench", f"base_url={server.url}/v1",
                           "provider=openai",
                           "models=[{provider: openai, model: m}, {provider: openai, model: m2, temperature: 0.5}]",
                           "samples=2", "prices={m: {input: 1, output: 2}, m2: {input: 1, output: 2}}",
                           "provider_prices=false", env={"OPENAI_API_KEY": "sk-test"})
        assert len(server.requests) == 4 * 5  # two models, two samples, five steps each
        # the temperature an entry gives is sent; none where none is given
        assert {(r["body"]["model"], r["body"].get("temperature")) for r in server.requests} == {("m", None),
                                                                                                ("m2", 0.5)}
    assert "compare" in jobs_run(result)
    for run in ("openai-m", "openai-m2"):
        for sample in ("", "samples/2/"):
            here = folder(tmp_path, run) / sample
            assert json.loads((here / "trajectory.json").read_text())["info"]["exit_status"] == "Submitted"
            assert json.loads((here / "patch.json").read_text())["status"] == "valid"
        assert (tmp_path / "results" / run / "samples/2/predictions.jsonl").exists()
    assert (tmp_path / "results/compare/openai-m-vs-openai-m2/compare.json").exists()


@real
def test_a_changed_agent_config_keeps_the_paid_trajectory_unless_overwrite(tmp_path, row):
    from minisweagent.config import get_config_path

    own = tmp_path / "my-swebench.yaml"
    own.write_text(get_config_path("swebench").read_text())
    with AgentServer({INSTANCE: submit_steps(apply_command(row["patch"]), TEST, FIXED)}, [row]) as server:
        agent_run(tmp_path, server, [row])
        first = (folder(tmp_path) / "trajectory.json").read_bytes()
        # made without a temperature: one given now would ask again, so the run stops before any job
        stopped = agent_run(tmp_path, server, [row], "temperature=0.0", check=False)
        assert stopped.returncode != 0 and "temperature=None (now 0.0)" in stopped.stderr
        stopped = agent_run(tmp_path, server, [row], f"agent={own}", check=False)
        assert stopped.returncode != 0 and "holds answers paid for with agent='swebench'" in stopped.stderr
        assert len(server.requests) == 5  # nothing asked
        agent_run(tmp_path, server, [row], f"agent={own}", "overwrite=true")
        assert len(server.requests) == 10
    aside = list(folder(tmp_path).glob("trajectory.overwritten-*.json"))
    assert len(aside) == 1 and aside[0].read_bytes() == first
    assert json.loads((folder(tmp_path) / "response.json").read_text())["agent"]["config"] == str(own)


@real
def test_a_saved_state_of_other_settings_is_set_aside_not_resumed(tmp_path, row):
    from minisweagent.config import get_config_path

    own = tmp_path / "my-swebench.yaml"
    own.write_text(get_config_path("swebench").read_text())
    with AgentServer({INSTANCE: submit_steps(apply_command(row["patch"]), TEST, FIXED)}, [row]) as server:
        # max_cost stops it after three steps (test_max_cost_stops_an_agent_mid_trajectory_and_a_higher_one_goes_on)
        agent_run(tmp_path, server, [row], "max_cost=0.028", "max_output_tokens=8000", check=False)
        assert answered_steps(server) == [0, 1, 2]
        agent_run(tmp_path, server, [row], f"agent={own}", "overwrite=true", "max_output_tokens=8000")
        assert answered_steps(server) == [0, 0, 1, 1, 2, 2, 3, 4]  # the new config's trajectory from its start
    aside = list(folder(tmp_path).glob("agent.partial.overwritten-*.json"))
    assert len(aside) == 1 and json.loads(aside[0].read_text())["n_calls"] == 3
    assert json.loads((folder(tmp_path) / "trajectory.json").read_text())["info"]["model_stats"]["api_calls"] == 5


@pytest.mark.unit
def test_the_live_view_shows_an_agents_steps(tmp_path):
    import io

    from rich.console import Console

    from scripts import live

    run = tmp_path / "results" / "r"
    (run / "instances" / "b__b-2").mkdir(parents=True)
    (run / "instances.index.json").write_text(json.dumps({"a__a-1": 0, "b__b-2": 1}))
    (run / "run.json").write_text(json.dumps({"stages": ["agent", "patch"], "max_cost": None, "samples": 1}))
    (run / "spend.jsonl").write_text("".join(json.dumps(
        {"instance_id": "a__a-1", "request": f"r{n}", "state": "settled", "reserved_usd": 0.1, "cost_usd": 0.01,
         "at": "2026-01-01T00:00:00+00:00"}) + "\n" for n in range(3)))
    (run / "instances" / "b__b-2" / "trajectory.json").write_text(json.dumps(
        {"info": {"exit_status": "LimitsExceeded", "model_stats": {"api_calls": 250, "instance_cost": 1.5}}}))
    snap = live.snapshot(run)
    assert snap["stages"] == {"agent": {"LimitsExceeded": 1}, "patch": {}}
    screen = Console(file=io.StringIO(), width=200)
    screen.print(live.view(snap, "ETA measuring", 10, jobs=[("agent", "a__a-1", time.time())]))
    assert re.search(r"^ agent +a__a-1 +\d+ s +step 3", screen.file.getvalue(), re.M), screen.file.getvalue()
    assert live.stage_outcome(run, "agent", "b__b-2") == "agent b__b-2: LimitsExceeded after 250 steps, 1.5000 USD"


@real
def test_the_responses_api_carries_the_same_conversation(tmp_path, row):
    with AgentServer({INSTANCE: submit_steps(apply_command(row["patch"]), TEST, FIXED)}, [row]) as server:
        agent_run(tmp_path, server, [row], "openai_api=responses")
        assert answered_steps(server) == [0, 1, 2, 3, 4]
        last = server.requests[-1]
    assert last["path"] == "/v1/responses" and last["body"]["store"] is False
    # as mini's request: no temperature and no output limit that the user did not set
    assert "temperature" not in last["body"] and "max_output_tokens" not in last["body"]
    assert last["body"]["instructions"].startswith("You are a helpful assistant")
    assert last["body"]["tools"][0]["name"] == "bash" and last["body"]["parallel_tool_calls"] is True
    kinds = [item.get("type") or item["role"] for item in last["body"]["input"]]
    assert kinds[:5] == ["user", "assistant", "function_call", "function_call", "function_call_output"]
    response = json.loads((folder(tmp_path) / "response.json").read_text())
    assert "register_hook" in response["answer"] and response["agent"]["exit_status"] == "Submitted"

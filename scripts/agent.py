"""The agent stage (agent=<config>): mini-swe-agent's loop in the instance's own container, our model side.

mini-swe-agent (pinned in requirements.txt) gives the loop (DefaultAgent), its config (templates, step and cost
limits, the bash tool and the observation messages) and its DockerEnvironment; this module gives the model: every
step is one request through scripts/providers.py, reserved in the run's budget (costs.Budget) before it is sent,
retried as the generate stage retries. No request goes through litellm.

Writes trajectory.json (mini-swe-agent's trajectory format, which its inspector reads) and response.json, the
answer the patch stage takes: the diff the agent left in /testbed against the base commit, new files included.
After every step the conversation, the counters and the working tree's diff are written to agent.partial.json; a
job killed mid-trajectory resumes from there on its rerun, in a fresh container with the diff applied, and asks no
answer it already has again. A limit (steps, cost, wall time, format errors) is the agent's result; a container
or provider that fails, or the run's max_cost, fails the job and keeps the partial state.
"""
import atexit
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from scripts import costs, providers
from scripts.common import fault_line, instance_log, now, read_json, read_row, set_aside, write_json_atomic

# mini-swe-agent reads a global config (an .env file that sets environment variables) from the user's config
# folder when it is imported, and prints a banner: neither is wanted in a run, so it reads an empty folder of
# its own and stays quiet. Set before the first import of minisweagent.
os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")
if "MSWEA_GLOBAL_CONFIG_DIR" not in os.environ:
    os.environ["MSWEA_GLOBAL_CONFIG_DIR"] = tempfile.mkdtemp(prefix="swebench-runner-mswea-")
    atexit.register(shutil.rmtree, os.environ["MSWEA_GLOBAL_CONFIG_DIR"], True)

from minisweagent.agents.default import DefaultAgent  # noqa: E402
from minisweagent.config import get_config_from_spec, get_config_path  # noqa: E402
from minisweagent.environments.docker import DockerEnvironment  # noqa: E402
from minisweagent.exceptions import FormatError  # noqa: E402
from minisweagent.models.utils.actions_toolcall import (  # noqa: E402
    BASH_TOOL,
    format_toolcall_observation_messages,
    parse_toolcall_actions,
)

PARTIAL = "agent.partial.json"


class AgentFault(Exception):
    """A fault of the machinery (container, engine, registry, provider, budget): the job fails, the partial state
    is kept, and a rerun resumes. cause: the fault line's cause, None for a spent budget."""

    def __init__(self, cause, message):
        super().__init__(message)
        self.cause = cause


class AgentConfigError(Exception):
    pass


def load_config(spec, overrides):
    """mini-swe-agent's config of spec (a name such as swebench, or a path to a YAML file), with the run's limits:
    overrides {step_limit, cost_limit, wall_time_limit_seconds}, None leaving the config's."""
    try:
        config = get_config_from_spec(str(get_config_path(spec)))
    except (FileNotFoundError, OSError) as error:
        raise AgentConfigError(f"agent={spec}: no such mini-swe-agent config ({error}). Give the name of one of "
                               "its configs (swebench) or the path of a YAML config.") from None
    if "agent" not in config or "system_template" not in config["agent"]:
        raise AgentConfigError(f"agent={spec}: {get_config_path(spec)} has no agent.system_template: it is no "
                               "mini-swe-agent config")
    config["agent"].update({k: v for k, v in overrides.items() if v is not None})
    return config


def instance_image(row, image_settings):
    """The instance image the harness evaluates row in (scripts/images.py), or the name the harness gives the image
    it builds locally (image_namespace empty): the agent works where its patch is evaluated."""
    from scripts import images

    name = images.image_name(row, image_settings)
    if name:
        return name
    from swebench.harness.test_spec.test_spec import make_test_spec

    return make_test_spec(row, namespace=None).instance_image_key


def container_name(run_id, instance_id, sample, folder):
    """The container of one trajectory: named by run, instance and sample, and by the folder it writes to (a
    digest of its absolute path), so that runs of the same run_id in other folders on one engine never share it."""
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:8]
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", f"swebench-runner-{run_id}-{instance_id}-s{sample}-{digest}")


def ensure_image(image, engine):
    """Pull image unless the engine has it, through evaluate's pull and its reading of the registry's errors."""
    import docker
    import requests

    from scripts.evaluate import DOCKER_TIMEOUT, EvaluationFault, pull

    if engine_run(engine, "image", "inspect", image).returncode == 0:
        return
    try:
        pull(docker.from_env(timeout=DOCKER_TIMEOUT), image)
    except EvaluationFault as error:
        raise AgentFault(error.cause, str(error)) from None
    except (docker.errors.DockerException, requests.RequestException) as error:
        raise AgentFault("docker_daemon", f"pulling {image}: {error}") from None


def engine_run(engine, *args, timeout=120):
    return subprocess.run([engine, *args], capture_output=True, text=True, timeout=timeout)


def remove_container(engine, name):
    engine_run(engine, "rm", "-f", name)


def engine_fault(text):
    """The AgentFault of an engine's error text (the causes of scripts/evaluate.py); docker_daemon by default."""
    from scripts.evaluate import find_fault

    found = find_fault(text)
    return AgentFault(found[0] if found else "docker_daemon", " ".join(text.split())[:400])


class Container(DockerEnvironment):
    """mini-swe-agent's DockerEnvironment in a container named by run, instance and sample (a stale one of a
    killed job removed first), removed when the job ends; a command that finds the container gone is a fault,
    not an observation for the model."""

    def __init__(self, name, **kwargs):
        self.name = name
        super().__init__(**kwargs)

    def _start_container(self):
        remove_container(self.config.executable, self.name)
        result = engine_run(self.config.executable, "run", "-d", "--name", self.name, "-w", self.config.cwd,
                            *self.config.run_args, self.config.image, "sleep", self.config.container_timeout,
                            timeout=self.config.pull_timeout)
        if result.returncode != 0:
            raise engine_fault(f"starting {self.config.image}: {result.stderr or result.stdout}")
        self.container_id = result.stdout.strip()

    def running(self):
        result = engine_run(self.config.executable, "inspect", "-f", "{{.State.Running}}", self.name)
        return result.returncode == 0 and result.stdout.strip() == "true"

    def execute(self, action, cwd="", *, timeout=None):
        output = super().execute(action, cwd, timeout=timeout)
        if output["returncode"] != 0 and not self.running():
            raise engine_fault(f"the container {self.name} is gone: {output['output'][-300:]} No such container")
        return output

    def shell(self, command, stdin=b"", timeout=120):
        """Run a command of ours (not the agent's) in /testbed; its output, or an AgentFault."""
        result = subprocess.run([self.config.executable, "exec", "-i", "-w", self.config.cwd, self.container_id,
                                 "bash", "-c", command], input=stdin, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            text = result.stderr.decode("utf-8", "replace")
            if not self.running():
                raise engine_fault(f"the container {self.name} is gone: {text} No such container")
            raise AgentFault("docker_daemon", f"{command[:80]}... failed in the container: {text[-300:]}")
        return result.stdout.decode("utf-8", "replace")

    def untracked(self):
        """The files the image has that git does not track (build output...): never part of the agent's diff."""
        return self.shell("git ls-files --others --exclude-standard --directory -z")

    def diff(self, base, untracked):
        """The working tree's diff against base, new files included (but not those of untracked), through an
        index of its own so that the agent's own index (what it staged) is left as it was."""
        leave_out = ("[ ! -s $paths ] || git rm -r -q --cached --ignore-unmatch --pathspec-from-file=$paths "
                     "--pathspec-file-nul")
        return self.shell(f"index=$(mktemp) && paths=$(mktemp) && cat > $paths && cp .git/index $index && "
                          f"export GIT_INDEX_FILE=$index && git add -A && {leave_out} && "
                          f"git diff --cached --binary {base} && rm -f $index $paths", stdin=untracked.encode())

    def apply(self, diff):
        if diff.strip():
            self.shell("git apply --binary -", stdin=diff.encode())

    def cleanup(self):
        if getattr(self, "container_id", None) is not None:
            remove_container(self.config.executable, self.name)
            self.container_id = None


class ProjectModel:
    """mini-swe-agent's Model protocol over scripts/providers.py: the same system, instance, tool and observation
    messages as its LitellmModel with the same config, each request reserved in the run's budget first."""

    def __init__(self, provider, model, settings, instance_id, sample, log, options=None, **config):
        self.provider, self.model, self.settings = provider, model, settings
        self.instance_id, self.sample, self.log = instance_id, sample, log
        self.options = options or {}
        self.config = SimpleNamespace(**{"model_name": model, "format_error_template": "{{ error }}",
                                         "observation_template": "", **config})
        try:
            self.budget = costs.Budget(settings, provider, model, log=log)
        except costs.UnknownPrice as error:
            raise AgentFault(None, str(error)) from None
        self.usage = {"input_tokens": 0, "output_tokens": 0, "cached_input_tokens": 0, "cache_write_tokens": 0,
                      "reasoning_tokens": 0}

    def query(self, messages, **kwargs):
        answer, cost = self.ask(messages)
        for key in self.usage:
            self.usage[key] += answer.usage.get(key, 0)
        extra = {"response": answer.raw, "cost": cost, "usage": answer.usage, "timestamp": time.time()}
        try:
            actions = parse_toolcall_actions(
                [SimpleNamespace(id=c["id"], function=SimpleNamespace(**c["function"]))
                 for c in answer.message.get("tool_calls") or []],
                format_error_template=self.config.format_error_template,
                template_kwargs={"finish_reason": answer.raw_stop_reason})
        except FormatError as error:  # as LitellmModel: the reply is not kept, its cost and response go with the error
            error.messages[0]["extra"].update(extra)
            raise
        return {**answer.message, "extra": {"actions": actions, **extra}}

    def ask(self, messages):
        """(Answer, its cost) of one step, retried on transient faults as the generate stage retries."""
        from scripts.generate import backoff_seconds, quota_marker, quota_stop, redact

        sent = [providers.chat_message(m) for m in messages]
        # the worst case counts every byte of the messages, their tool calls and the tool's definition
        sizing = [{"content": str(m)} for m in sent] + [{"content": str(BASH_TOOL)}]
        last = None
        for number in range(1, self.settings["max_attempts"] + 1):
            stopped = quota_stop(self.settings)
            if stopped:
                raise AgentFault(None, f"stopped, no request sent: {stopped}")
            try:
                with self.budget.request(self.instance_id, sizing, self.sample) as paid:
                    answer = providers.ask_tools(self.provider, sent, self.model, self.settings, [BASH_TOOL],
                                                 self.options)
                    return answer, paid.answered(answer.usage)
            except costs.BudgetSpent as error:
                raise AgentFault(None, str(error)) from None
            except providers.QuotaExhausted as error:
                message = redact(str(error), self.settings)
                write_json_atomic(quota_marker(self.settings), {"provider": self.provider, "error": message, "at": now()})
                raise AgentFault(None, f"{self.provider} says the account has no credit left ({message})") from None
            except providers.Transient as error:
                last = redact(str(error), self.settings)
                wait = error.retry_after if error.retry_after is not None else backoff_seconds(number, self.settings)
                if wait > providers.MAX_RETRY_AFTER_S:
                    raise AgentFault("provider_asks_to_wait", f"{self.provider} asks to wait {wait:.0f} s") from None
                self.log(f"attempt {number}: {last}; waiting {wait:.1f} s")
                if number < self.settings["max_attempts"]:
                    time.sleep(wait)
            except (providers.ContextTooLong, providers.Rejected) as error:
                raise AgentFault(None, f"{self.provider} rejected the request: {redact(str(error), self.settings)}"
                                 ) from None
        raise AgentFault("provider_unreachable", f"no answer after {self.settings['max_attempts']} attempt(s); last "
                                                 f"error: {last}")

    def format_message(self, **kwargs):
        return kwargs

    def format_observation_messages(self, message, outputs, template_vars=None):
        return format_toolcall_observation_messages(
            actions=message.get("extra", {}).get("actions", []), outputs=outputs,
            observation_template=self.config.observation_template, template_vars=template_vars)

    def get_template_vars(self, **kwargs):
        return dict(vars(self.config))

    def serialize(self):
        return {"info": {"config": {"model": {**vars(self.config), "provider": self.provider},
                                    "model_type": f"{type(self).__module__}.{type(self).__name__}"}}}


class ResumableAgent(DefaultAgent):
    """DefaultAgent that writes its state after every step and every paid answer (save_partial), and that picks
    up a saved state: restored, it starts from the saved conversation instead of a new one."""

    def __init__(self, model, env, *, partial_path, restored=None, made_with=None, **kwargs):
        super().__init__(model, env, **kwargs)
        self.partial_path, self.restored, self.made_with = Path(partial_path), restored, made_with
        self.fault, self.diff, self.pending = None, "", None
        self.untracked = env.untracked()  # before the saved diff is applied: the image's own
        if restored:
            self.cost, self.n_calls = restored["cost"], restored["n_calls"]
            self.n_consecutive_format_errors = restored["n_consecutive_format_errors"]
            self._start_time = time.time() - restored["elapsed_s"]
            self.diff = restored["diff"]
            last = restored["messages"][-1]
            if last.get("role") == "assistant" and last.get("extra", {}).get("actions"):
                self.pending = last  # paid for, its commands not yet run (or their output not yet kept)

    def add_messages(self, *messages):
        if self.restored and not self.messages:  # run() starts a new conversation: the saved one instead
            self.messages = list(self.restored["messages"])
            self.restored = None
            return []
        return super().add_messages(*messages)

    def step(self):
        if self.pending is not None:
            message, self.pending = self.pending, None
            return self.execute_actions(message)
        return super().step()

    def query(self):
        message = super().query()
        self.save_partial(diff=False)  # the paid answer is kept before its commands run
        return message

    def handle_uncaught_exception(self, error):
        if isinstance(error, AgentFault):  # the machinery's, not the agent's: no exit message, the state is kept
            self.fault = error
            return []
        return super().handle_uncaught_exception(error)

    def save(self, path, *extra_dicts):
        if self.fault is None and self.messages and self.messages[-1].get("role") != "exit":
            self.save_partial()
        return self.serialize(*extra_dicts)

    def save_partial(self, diff=True):
        if diff:
            self.diff = self.env.diff("HEAD", self.untracked)
        write_json_atomic(self.partial_path, {
            "messages": self.messages, "cost": self.cost, "n_calls": self.n_calls,
            "n_consecutive_format_errors": self.n_consecutive_format_errors,
            "elapsed_s": time.time() - self._start_time, "diff": self.diff, "usage": self.model.usage,
            "made_with": self.made_with, "saved_at": now()})


def run_stage(instance_id, input, output, log_path, settings):
    """The stage as its rule calls it: write output.trajectory and output.response for one instance and sample.
    settings: provider, model, settings (the request settings), agent (config, limits, engine, namespace, run_id)."""
    return run(instance_id, input, settings["provider"], settings["model"], settings["settings"], settings["agent"],
               output["trajectory"], output["response"], log_path)


def run(instance_id, input, provider, model, settings, agent, trajectory_path, response_path, log_path):
    with instance_log(log_path, instance_id) as log:
        partial = Path(trajectory_path).with_name(PARTIAL)
        if Path(trajectory_path).exists():  # a paid trajectory asked again: kept, or set aside with overwrite
            from scripts.generate import GenerationFailed, keep_paid_answers

            try:
                keep_paid_answers([trajectory_path, response_path], settings["overwrite"], log)
            except GenerationFailed as error:
                raise AgentFault(None, str(error)) from None
        try:
            record, trajectory = run_agent(read_row(input["instances"], input["index"], instance_id), provider,
                                           model, settings, agent, partial, log)
        except AgentFault as error:
            log(f"error: {error}")
            if error.cause:
                log(fault_line(error.cause, f"{error}; a rerun retries it"))
            raise AgentFault(error.cause, f"{instance_id}: {error} (log: {log_path})") from None
        write_json_atomic(trajectory_path, trajectory)
        write_json_atomic(response_path, record)
        partial.unlink(missing_ok=True)
        log(f"agent {record['agent']['exit_status']} after {record['agent']['steps']} steps, "
            f"{record['cost_usd'] or 0:.6f} USD, diff of {len(record['answer'] or '')} characters")
    return record


def run_agent(row, provider, model, settings, agent, partial, log):
    """(response record, trajectory) of the agent on row; AgentFault on a fault of the machinery."""
    config = load_config(agent["config"], agent["limits"])
    engine = agent["engine"]
    restored = read_json(partial) if partial.exists() else None
    if restored and restored.get("made_with") != agent.get("made_with"):
        # made with other settings (overwrite=true lets such a run start): kept aside, the trajectory starts anew
        aside = set_aside(partial, "overwritten", time.strftime("%Y%m%dT%H%M%S"))
        log(f"the saved state of step {restored['n_calls']} was made with other settings: kept as {aside.name}")
        restored = None
    if restored:
        log(f"resuming from step {restored['n_calls']} ({partial})")
    image = instance_image(row, agent["images"])
    ensure_image(image, engine)
    env_config = {k: v for k, v in config.get("environment", {}).items() if k != "environment_class"}
    env = Container(container_name(agent["run_id"], row["instance_id"], settings.get("sample", 1), partial.parent),
                    **{**env_config, "image": image, "executable": engine})
    started, started_at = time.monotonic(), now()
    try:
        model_config = {k: v for k, v in config.get("model", {}).items()
                        if k in ("observation_template", "format_error_template")}
        options = {k: v for k, v in config.get("model", {}).get("model_kwargs", {}).items()
                   if k == "parallel_tool_calls"}
        project_model = ProjectModel(provider, model, settings, row["instance_id"], settings.get("sample", 1), log,
                                     options, **model_config)
        loop = ResumableAgent(project_model, env, partial_path=partial, restored=restored,
                              made_with=agent.get("made_with"),
                              **{k: v for k, v in config["agent"].items() if k != "output_path"})
        if restored:
            env.apply(restored["diff"])
            project_model.usage = restored["usage"]
        try:
            info = loop.run(row["problem_statement"])
        except AgentFault:
            raise
        except Exception as error:  # the agent's own failure (e.g. its templates): the state is kept
            raise AgentFault(None, f"the agent loop failed: {type(error).__name__}: {error}") from error
        diff = env.diff(row["base_commit"], loop.untracked)
    finally:
        env.cleanup()
    trajectory = loop.serialize({"instance_id": row["instance_id"], "info": {"diff": diff}})
    record = {
        "instance_id": row["instance_id"], "provider": provider, "model": model, "status": "ok",
        "failure_reason": None, "failure_detail": None, "answer": diff, "stop_reason": "end",
        "raw_stop_reason": info.get("exit_status"), "usage": project_model.usage,
        "cost_usd": round(loop.cost, 8) if project_model.budget.price else None,
        "price_per_million": project_model.budget.price, "max_output_tokens": providers.output_limit(
            provider, model, settings), "latency_s": round(time.monotonic() - started, 3),
        # the job's one attempt (each step's own retries are in the log)
        "attempts": [{"started_at": started_at, "latency_s": round(time.monotonic() - started, 3), "error": None,
                      "status": None, "wait_s": 0.0}], "dropped_context_files": [], "dropped_parameters": [],
        "agent": {"exit_status": info.get("exit_status"), "steps": loop.n_calls, "config": agent["config"]},
        "created_at": now()}
    return record, trajectory

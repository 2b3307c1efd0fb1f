"""A loopback model server that plays a scripted agent over tool calls: OpenAI Chat Completions (`tools`,
`tool_calls`, `tool` messages), the OpenAI Responses API (`function_call` and `function_call_output` items) and
Anthropic Messages (`tools`, `tool_use`, `tool_result`). It rejects what the real
APIs reject (a tool message that answers no earlier call, a call left unanswered, a missing required field), with
their error bodies, and counts every request per instance.

The script of an instance (found by its problem statement in the first user message) is a list of steps; a step is
a list of bash commands (one tool call each), or "no_tool_call" (an answer of text only: a format error), or
"unknown_tool". The step a request asks for is read from the conversation: one per assistant message or format
error message after the task, so that a conversation resumed elsewhere gets its next step, and the same conversation
sent twice gets the same one."""
import json
import threading
import time

from loopback import LoopbackServer, QuietHandler

CHAT_PARAMS = {"model", "messages", "tools", "tool_choice", "parallel_tool_calls", "max_tokens",
               "max_completion_tokens", "temperature", "top_p", "stop", "seed", "reasoning_effort", "user", "n",
               "response_format", "metadata", "store", "stream", "stream_options", "service_tier"}
CHAT_ROLES = {"system", "developer", "user", "assistant", "tool"}
RESPONSES_PARAMS = {"model", "input", "instructions", "max_output_tokens", "reasoning", "temperature", "top_p", "store",
                    "metadata", "text", "tools", "tool_choice", "parallel_tool_calls", "truncation", "user", "stream"}
MESSAGES_PARAMS = {"model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "thinking",
                   "tools", "tool_choice", "service_tier"}


def apply_command(patch):
    return f"git apply <<'EOF'\n{patch}EOF"


def submit_steps(fix_command, test_command, files):
    """The steps of an agent that looks around, writes a fix (fix_command), runs the failing test, writes patch.txt
    and submits, as mini-swe-agent's swebench config asks."""
    return [
        ["git status --short && ls", "git log --oneline -1"],
        [fix_command],
        [test_command],
        [f"git diff -- {' '.join(files)} > patch.txt"],
        ["echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && cat patch.txt"],
    ]


class AgentServer(LoopbackServer):
    def __init__(self, scripts=None, rows=()):
        self.scripts = dict(scripts or {})  # instance_id -> steps
        self.rows = list(rows)
        self.requests = []  # every request: {"path", "body", "instance_id", "step", "answered"}
        self.lock = threading.Lock()
        self.hold = {}  # instance_id -> threading.Event the answer of a step waits for (step number: the key's)
        self.faults = {}  # (instance_id, step) -> list of faults, one per request of that step ("429", "500")
        super().__init__(self._handler())

    def instance_for(self, text):
        found = [row for row in self.rows if row["problem_statement"][:200] in text]
        return found[0]["instance_id"] if found else None

    def requests_for(self, instance_id):
        return [r for r in self.requests if r["instance_id"] == instance_id]

    @staticmethod
    def chat_problem(body):
        """The 400 api.openai.com gives this body, or None."""
        for name in ("model", "messages"):
            if name not in body:
                return f"Missing required parameter: '{name}'.", name
        unknown = sorted(set(body) - CHAT_PARAMS)
        if unknown:
            return f"Unrecognized request argument supplied: {unknown[0]}", None
        for index, tool in enumerate(body.get("tools") or []):
            if tool.get("type") != "function" or "name" not in (tool.get("function") or {}):
                return f"Missing required parameter: 'tools[{index}].function.name'.", f"tools[{index}].function.name"
        open_calls = set()
        for index, message in enumerate(body["messages"]):
            role = message.get("role")
            if role not in CHAT_ROLES:
                return (f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', "
                        "'tool', and 'developer'.", f"messages[{index}].role")
            if role == "tool":
                if "tool_call_id" not in message:
                    return f"Missing required parameter: 'messages[{index}].tool_call_id'.", \
                        f"messages[{index}].tool_call_id"
                if message["tool_call_id"] not in open_calls:
                    return ("Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                            "with 'tool_calls'.", f"messages.[{index}].role")
                open_calls.discard(message["tool_call_id"])
                continue
            if open_calls:
                return ("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                        f"'tool_call_id'. The following tool_call_ids did not have response messages: "
                        f"{', '.join(sorted(open_calls))}", f"messages.[{index}].role")
            if role == "assistant":
                open_calls = {call["id"] for call in message.get("tool_calls") or []}
            elif "content" not in message:
                return f"Missing required parameter: 'messages[{index}].content'.", f"messages[{index}].content"
        return None

    @staticmethod
    def responses_problem(body):
        """The 400 api.openai.com gives this Responses API body, or None."""
        for name in ("model", "input"):
            if name not in body:
                return f"Missing required parameter: '{name}'.", name
        unknown = sorted(set(body) - RESPONSES_PARAMS)
        if unknown:
            return f"Unknown parameter: '{unknown[0]}'.", unknown[0]
        for index, tool in enumerate(body.get("tools") or []):
            if "name" not in tool:
                return f"Missing required parameter: 'tools[{index}].name'.", f"tools[{index}].name"
        calls = set()
        for index, item in enumerate(body["input"]):
            if item.get("type") == "function_call":
                calls.add(item["call_id"])
            elif item.get("type") == "function_call_output" and item.get("call_id") not in calls:
                return (f"No tool call found for function call output with call_id {item.get('call_id')}.",
                        f"input[{index}]")
        return None

    @staticmethod
    def messages_problem(body):
        """The 400 api.anthropic.com gives this body, or None."""
        for name in ("model", "messages", "max_tokens"):
            if name not in body:
                return f"{name}: Field required"
        unknown = sorted(set(body) - MESSAGES_PARAMS)
        if unknown:
            return f"{unknown[0]}: Extra inputs are not permitted"
        open_calls = set()
        for index, message in enumerate(body["messages"]):
            blocks = message["content"] if isinstance(message["content"], list) else []
            results = {b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"}
            if results - open_calls:
                return (f"messages.{index}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{sorted(results - open_calls)[0]}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message.")
            if open_calls - results:
                return (f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                        f"{sorted(open_calls - results)[0]}. Each `tool_use` block must have a corresponding "
                        "`tool_result` block in the next message.")
            open_calls = {b["id"] for b in blocks if b.get("type") == "tool_use"} if message["role"] == "assistant" \
                else set()
        return None

    def _handler(self):
        server = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                anthropic = self.path.endswith("/messages")
                responses = self.path.endswith("/responses")
                problem = (server.messages_problem(body) if anthropic else server.responses_problem(body) if responses
                           else server.chat_problem(body))
                messages = body.get("input" if responses else "messages") or []
                first_user = next((m for m in messages if m.get("role") == "user"), {})
                text = first_user.get("content") if isinstance(first_user.get("content"), str) else json.dumps(
                    first_user.get("content"))
                instance_id = server.instance_for(text or "")
                # the steps taken: the conversation after the task, one assistant reply or format error each
                after = messages[1:] if anthropic or responses else messages[2:]
                step = sum(m.get("role") == "assistant" or (m.get("role") == "user" and isinstance(m["content"], str))
                           for m in after)
                logged = {"path": self.path, "body": body, "instance_id": instance_id, "step": step,
                          "answered": False, "at": time.monotonic()}
                with server.lock:
                    server.requests.append(logged)
                    faults = server.faults.get((instance_id, step)) or []
                    fault = faults.pop(0) if faults else None
                if problem:
                    message, param = problem if isinstance(problem, tuple) else (problem, None)
                    return self.error(400, message, anthropic, param)
                if fault:
                    return self.error(int(fault), "Rate limit reached." if fault == "429" else "Server error.",
                                      anthropic, headers={"retry-after": "0"} if fault == "429" else {})
                hold = server.hold.get((instance_id, step))
                if hold is not None:
                    hold.wait(60)
                steps = server.scripts.get(instance_id) or []
                action = steps[step] if step < len(steps) else ["echo nothing left to do"]
                thought = f"Step {step + 1}: I run the next command."
                calls = []
                if action == "unknown_tool":
                    calls = [("python", {"code": "print(1)"})]
                elif action != "no_tool_call":
                    calls = [("bash", {"command": command}) for command in action]
                usage_in = len(json.dumps(messages)) // 4
                usage_out = 20 + sum(len(json.dumps(args)) for _, args in calls) // 4
                logged["answered"] = True
                ids = [f"call_{step}_{n}" for n in range(len(calls))]
                if responses:
                    output = [{"type": "message", "id": f"msg_{step}", "status": "completed", "role": "assistant",
                               "content": [{"type": "output_text", "text": thought, "annotations": []}]}]
                    output += [{"type": "function_call", "id": f"fc_{i}", "call_id": i, "name": name,
                                "arguments": json.dumps(args), "status": "completed"}
                               for i, (name, args) in zip(ids, calls, strict=True)]
                    payload = {"id": f"resp_{step}", "object": "response", "created_at": time.time(),
                               "model": body["model"], "status": "completed", "incomplete_details": None,
                               "error": None, "instructions": body.get("instructions"), "output": output,
                               "parallel_tool_calls": body.get("parallel_tool_calls", True), "tool_choice": "auto",
                               "tools": body.get("tools") or [], "temperature": body.get("temperature"),
                               "top_p": 1.0, "usage": {"input_tokens": usage_in, "output_tokens": usage_out,
                                                       "total_tokens": usage_in + usage_out,
                                                       "input_tokens_details": {"cached_tokens": 0},
                                                       "output_tokens_details": {"reasoning_tokens": 0}}}
                elif anthropic:
                    content = [{"type": "text", "text": thought}] + [
                        {"type": "tool_use", "id": i.replace("call", "toolu"), "name": name, "input": args}
                        for i, (name, args) in zip(ids, calls, strict=True)]
                    payload = {"id": f"msg_{step}", "type": "message", "role": "assistant", "model": body["model"],
                               "content": content, "stop_reason": "tool_use" if calls else "end_turn",
                               "stop_sequence": None,
                               "usage": {"input_tokens": usage_in, "output_tokens": usage_out,
                                         "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}
                else:
                    message = {"role": "assistant", "content": thought, "refusal": None, "annotations": [],
                               **({"tool_calls": [{"id": i, "type": "function", "function": {
                                   "name": name, "arguments": json.dumps(args)}} for i, (name, args) in zip(ids, calls, strict=True)]}
                                  if calls else {})}
                    payload = {"id": f"chatcmpl-{step}", "object": "chat.completion", "created": int(time.time()),
                               "model": body["model"],
                               "choices": [{"index": 0, "message": message, "logprobs": None,
                                            "finish_reason": "tool_calls" if calls else "stop"}],
                               "usage": {"prompt_tokens": usage_in, "completion_tokens": usage_out,
                                         "total_tokens": usage_in + usage_out}}
                self.send(200, json.dumps(payload).encode(), {})

            def error(self, status, message, anthropic, param=None, headers=None):
                kind = {400: "invalid_request_error", 429: "rate_limit_error"}.get(status, "api_error")
                payload = ({"type": "error", "error": {"type": kind, "message": message}} if anthropic else
                           {"error": {"message": message, "type": kind, "param": param, "code": None}})
                return self.send(status, json.dumps(payload).encode(), headers or {})

            def send(self, status, data, headers):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler

"""Model providers behind the generate stage: one request, through the official client libraries.

`ask(provider, messages, model, settings)` makes one attempt and returns an Answer, or
raises one of the errors below so that the generate stage can decide what follows:
Transient (retry after a wait), ContextTooLong (retry with less code context),
Rejected (the request itself is wrong: stop the job, retrying cannot help),
QuotaExhausted (the account has no credit left: stop all generation).
Clients are made once per process and shared by the threads that run generate jobs.
"""
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml

DEFAULT_MODELS = {"openai": "gpt-5.4-mini", "anthropic": "claude-sonnet-4-6"}
KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
CONTEXT_ERROR = re.compile(
    r"context[ _]length|context window|prompt is too long|maximum context|too many (input )?tokens", re.I
)


@dataclass
class Answer:
    text: str
    stop_reason: str  # end, max_tokens, refusal, content_filter, or the provider's own word
    raw_stop_reason: str
    usage: dict = field(default_factory=dict)  # input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
    # reasoning_tokens (within output_tokens)
    dropped_parameters: list = field(default_factory=list)  # answer settings the model refused, left out of the request
    message: dict = None  # with tools (ask_tools): the assistant's message in Chat Completions form, tool_calls included
    raw: dict = None  # with tools: the provider's whole response, as JSON


class Transient(Exception):
    def __init__(self, message, retry_after=None, status=None, sent=True):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.sent = sent  # False: no connection was made, so the request surely was not billed


def never_connected(error):
    """Whether the client's error comes from a connection that was never made (refused, or timed out connecting)."""
    while error is not None:
        if isinstance(error, ConnectionRefusedError) or type(error).__name__ in ("ConnectError", "ConnectTimeout"):
            return True
        error = error.__cause__ or error.__context__
    return False


class ContextTooLong(Exception):
    pass


class Rejected(Exception):
    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class QuotaExhausted(Rejected):
    """OpenAI's insufficient_quota (a 429 that never passes) or Anthropic's billing error: no request can pass."""


class OutputLimitTooHigh(Rejected):
    def __init__(self, message, limit):
        super().__init__(message)
        self.limit = limit


# The output limits of models, from the providers' model pages (the price database has none); a model not
# here gets max_output_tokens, and the 400 that says it is too high teaches its limit (OUTPUT_LIMIT_ERROR).
OUTPUT_LIMITS = yaml.safe_load((Path(__file__).parent / "output_limits.yaml").read_text(encoding="utf-8"))
OUTPUT_LIMIT_ERROR = re.compile(r"supports at most (\d+) completion tokens|> (\d+), which is the maximum allowed "
                                r"number of output tokens", re.I)
# OpenAI models that only the Responses API serves: the -pro and codex families, deep research, computer use
RESPONSES_ONLY = re.compile(r"(^|-)pro(-\d{4}-\d{2}-\d{2})?$|codex|deep-research|computer-use")
QUOTA_ERROR = re.compile(r"insufficient_quota|credit balance is too low|exceeded your current quota", re.I)
# The longest Retry-After a job waits for, as the openai client does (MAX_RETRY_AFTER_DELAY): a server that asks
# for more is not retried by the job, and a rerun asks again.
MAX_RETRY_AFTER_S = 120.0

_clients = {}
_unsupported = {}  # (provider, base_url, model) -> request parameters the server refused
_learned_limits = {}  # (provider, base_url, model) -> the output limit a 400 named
_lock = threading.Lock()


def client_for(provider, settings):
    key = (provider, settings.get("base_url"), settings["request_timeout"])
    with _lock:
        if key not in _clients:
            if provider == "openai":
                import openai as library

                make = library.OpenAI
            else:
                import anthropic as library

                make = library.Anthropic
            _clients[key] = make(
                api_key=settings["api_key"], base_url=settings.get("base_url") or None,
                timeout=settings["request_timeout"], max_retries=0,  # the generate stage retries and records
            )
        return _clients[key]


def retry_after_seconds(headers):
    """The wait a 429 or 503 asks for, from retry-after-ms or retry-after (seconds or a date)."""
    if headers is None:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            from datetime import datetime, timezone
            from email.utils import parsedate_to_datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


def classify(error, library):
    """Turn a client library's exception into Transient, ContextTooLong or Rejected."""
    if isinstance(error, (library.APITimeoutError, library.APIConnectionError)):
        return Transient(f"{type(error).__name__}: {error}", sent=not never_connected(error))
    if isinstance(error, library.APIStatusError):
        status, message = error.status_code, f"{type(error).__name__} {error.status_code}: {error.message}"
        body = error.body if isinstance(error.body, dict) else {}
        kind = (body.get("error") or {}).get("type") if isinstance(body.get("error"), dict) else body.get("type")
        if getattr(error, "code", None) == "insufficient_quota" or kind == "billing_error" or (
                status in (400, 402, 403, 429) and QUOTA_ERROR.search(str(error.message))):
            return QuotaExhausted(message)
        limit = OUTPUT_LIMIT_ERROR.search(str(error.message)) if status == 400 else None
        if limit:
            return OutputLimitTooHigh(message, int(next(g for g in limit.groups() if g)))
        # The server's x-should-retry decides, whatever the status, as the client libraries' own retries do
        should_retry = error.response.headers.get("x-should-retry")
        if should_retry == "true" or (should_retry != "false" and (status in (408, 409, 429) or status >= 500)):
            return Transient(message, retry_after_seconds(error.response.headers), status)
        if status in (400, 413) and CONTEXT_ERROR.search(str(error.message)):
            return ContextTooLong(message)
        return Rejected(message + (" (the server says not to retry it: x-should-retry: false)"
                                   if should_retry == "false" else ""), status)
    if isinstance(error, (library.APIResponseValidationError, json.JSONDecodeError)):
        return Transient(f"malformed response: {type(error).__name__}: {error}")
    if isinstance(error, library.APIError):  # an error event in the middle of a streamed answer
        return Transient(f"the answer broke off: {type(error).__name__}: {error}")
    return None


# stream: OpenAI streams some models only to verified organizations, and says so with a 400 on `stream`
ADAPTABLE = ("temperature", "max_tokens", "max_completion_tokens", "reasoning_effort", "reasoning", "stream")


def refused_parameter(error):
    """The request parameter a 400 says the model does not take, or not with the value given. OpenAI names it
    in `param`, a field inside a parameter by its path (reasoning.effort: the parameter reasoning)."""
    param = re.split(r"[.\[]", getattr(error, "param", None) or "")[0]
    if param in ADAPTABLE:
        return param
    match = re.search(r"'(temperature|max_tokens|max_completion_tokens|reasoning_effort|reasoning|stream)[.\[']",
                      str(getattr(error, "message", "")))
    return match.group(1) if match else None


def output_limit(provider, model, settings):
    """max_output_tokens, at most the model's own limit when it is known (listed, or named by an earlier 400)."""
    known = own_output_limit(provider, model, settings)
    return settings["max_output_tokens"] if known is None else min(settings["max_output_tokens"], known)


def own_output_limit(provider, model, settings):
    """The model's own output limit (learned from a 400, or listed in output_limits.yaml); None when not known."""
    with _lock:
        learned = _learned_limits.get((provider, settings.get("base_url"), model))
    return learned or OUTPUT_LIMITS.get(provider, {}).get(model)


def learn_output_limit(provider, model, settings, limit):
    with _lock:
        _learned_limits[(provider, settings.get("base_url"), model)] = limit


def openai_request(messages, model, settings, unsupported):
    request = {"model": model, "messages": messages}
    # api.openai.com wants max_completion_tokens (reasoning models refuse max_tokens); most
    # compatible servers know only max_tokens. A refusal swaps one for the other.
    limit = "max_tokens" if settings.get("base_url") else "max_completion_tokens"
    if limit in unsupported:
        limit = "max_completion_tokens" if limit == "max_tokens" else "max_tokens"
    request[limit] = output_limit("openai", model, settings)
    if settings.get("temperature") is not None and "temperature" not in unsupported:
        request["temperature"] = settings["temperature"]
    if settings.get("reasoning_effort") and "reasoning_effort" not in unsupported:
        request["reasoning_effort"] = settings["reasoning_effort"]
    return request


def uses_responses(model, settings):
    """Whether a request to this model goes to the Responses API: openai_api=responses, or by itself for the
    models that Chat Completions does not serve."""
    api = settings.get("openai_api") or "auto"
    return api == "responses" or (api == "auto" and RESPONSES_ONLY.search(model) is not None)


def responses_request(messages, model, settings, unsupported):
    request = {"model": model, "input": [m for m in messages if m["role"] != "system"],
               "max_output_tokens": output_limit("openai", model, settings),
               "store": False}  # nothing is kept on the provider's side
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    if system:
        request["instructions"] = system
    if settings.get("temperature") is not None and "temperature" not in unsupported:
        request["temperature"] = settings["temperature"]
    if settings.get("reasoning_effort") and "reasoning" not in unsupported:
        request["reasoning"] = {"effort": settings["reasoning_effort"]}
    return request


def read_completion(completion):
    if not completion.choices:
        raise Transient("malformed response: no choices")
    choice = completion.choices[0]
    message = choice.message
    raw_stop = choice.finish_reason or "unknown"
    stop = "refusal" if getattr(message, "refusal", None) else OPENAI_STOP.get(raw_stop, raw_stop)
    usage = completion.usage
    cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None) or 0
    reasoning = getattr(getattr(usage, "completion_tokens_details", None), "reasoning_tokens", None) or 0
    return Answer(
        text=message.content or getattr(message, "refusal", None) or "",
        stop_reason=stop,
        raw_stop_reason=raw_stop,
        usage={"input_tokens": usage.prompt_tokens if usage else 0,
               "output_tokens": usage.completion_tokens if usage else 0,
               "cached_input_tokens": cached, "cache_write_tokens": 0, "reasoning_tokens": reasoning},
    )


def read_response(response):
    """An Answer from a Responses API response: its message text, why it stopped, its usage."""
    if response.status == "failed":
        raise Transient(f"the response failed: {response.error.message if response.error else 'no reason given'}")
    blocks = [block for item in response.output if item.type == "message" for block in item.content]
    refusal = "".join(block.refusal for block in blocks if block.type == "refusal")
    text = "".join(block.text for block in blocks if block.type == "output_text")
    reason = response.incomplete_details.reason if response.incomplete_details else None
    raw_stop = reason or response.status or "unknown"
    stop = "refusal" if refusal else {"completed": "end", "max_output_tokens": "max_tokens"}.get(raw_stop, raw_stop)
    usage = response.usage
    details = getattr(usage, "input_tokens_details", None)
    return Answer(
        text=text or refusal,
        stop_reason=stop,
        raw_stop_reason=raw_stop,
        usage={"input_tokens": usage.input_tokens if usage else 0,
               "output_tokens": usage.output_tokens if usage else 0,
               "cached_input_tokens": getattr(details, "cached_tokens", 0) or 0,
               "cache_write_tokens": getattr(details, "cache_write_tokens", 0) or 0,
               "reasoning_tokens": getattr(getattr(usage, "output_tokens_details", None), "reasoning_tokens", 0) or 0},
    )


OPENAI_STOP = {"stop": "end", "length": "max_tokens", "content_filter": "content_filter"}


def read_chat_stream(stream):
    """An Answer from a streamed Chat Completion: its chunks put together. The usage comes in the last chunk,
    whose choices are empty (or null, from some compatible servers: why the client's own accumulator is not
    used)."""
    text, refusal, finish, usage = [], [], None, None
    with stream:
        for chunk in stream:
            usage = chunk.usage or usage
            for choice in chunk.choices or []:
                text.append(choice.delta.content or "")
                refusal.append(getattr(choice.delta, "refusal", None) or "")
                finish = choice.finish_reason or finish
    if finish is None:
        raise Transient("the answer broke off: the stream ended before its finish_reason")
    message = SimpleNamespace(content="".join(text), refusal="".join(refusal) or None)
    return read_completion(SimpleNamespace(choices=[SimpleNamespace(message=message, finish_reason=finish)],
                                           usage=usage))


def read_response_stream(stream):
    """An Answer from a streamed Responses API response: the whole response that its last event carries."""
    final = None
    with stream:
        for event in stream:
            if event.type in ("response.completed", "response.incomplete", "response.failed"):
                final = event.response
            elif event.type == "error":
                raise Transient(f"the answer broke off: {event.code}: {event.message}")
    if final is None:
        raise Transient("the answer broke off: the stream ended before the response was complete")
    return read_response(final)


def dropped_settings(settings, unsupported, responses):
    """The answer settings that the request left out because the model refused them."""
    sent_as = {"temperature": "temperature", "reasoning_effort": "reasoning" if responses else "reasoning_effort"}
    return [name for name, param in sent_as.items() if settings.get(name) not in (None, "") and param in unsupported]


def ask_openai(messages, model, settings):
    """One answer, streamed: request_timeout bounds each wait for the next part of the answer, so a long answer
    that keeps coming is not cut off and paid for again. A model that may not stream is asked without."""
    import openai

    client = client_for("openai", settings)
    key = ("openai", settings.get("base_url"), model)
    responses = uses_responses(model, settings)
    build, create, read, read_streamed = (
        (responses_request, client.responses.create, read_response, read_response_stream) if responses
        else (openai_request, client.chat.completions.create, read_completion, read_chat_stream))
    for _ in range(5):  # at most four parameters to adapt
        with _lock:
            unsupported = set(_unsupported.get(key, ()))
        request = build(messages, model, settings, unsupported)
        try:
            if "stream" in unsupported:
                answer = read(create(**request))
            else:
                options = {} if responses else {"stream_options": {"include_usage": True}}
                answer = read_streamed(create(**request, stream=True, **options))
            break
        except openai.BadRequestError as error:
            param = refused_parameter(error)
            if param is None or param in unsupported or isinstance(classify(error, openai), OutputLimitTooHigh):
                raise classify(error, openai) from error
            with _lock:
                _unsupported.setdefault(key, set()).add(param)
        except (openai.OpenAIError, json.JSONDecodeError) as error:  # JSONDecodeError: a body that does not parse
            raise (classify(error, openai) or error) from error
    else:
        raise Rejected(f"{model} refused the request parameters {sorted(unsupported)}")
    answer.dropped_parameters = dropped_settings(settings, unsupported, responses)
    return answer


ANTHROPIC_STOP = {"end_turn": "end", "stop_sequence": "end", "max_tokens": "max_tokens", "refusal": "refusal"}


def anthropic_request(messages, model, settings):
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    request = {"model": model, "max_tokens": output_limit("anthropic", model, settings),
               "messages": [m for m in messages if m["role"] != "system"]}
    if system:
        request["system"] = system
    if settings.get("prompt_cache") and request["messages"]:
        # prompt_cache=true: the system prompt and the first user message (the issue and its code context) come again
        # in the instance's self-repair requests: cached once (at 1.25 times the input price), read at a tenth.
        first = request["messages"][0]
        request["messages"][0] = {**first, "content": [{"type": "text", "text": first["content"],
                                                        "cache_control": {"type": "ephemeral"}}]}
    # The API version of the pinned client (2026-10-21) refuses temperature: the model's own sampling applies.
    return request


def ask_anthropic(messages, model, settings):
    import anthropic

    client = client_for("anthropic", settings)
    try:
        message = client.messages.create(**anthropic_request(messages, model, settings))
    except (anthropic.AnthropicError, json.JSONDecodeError) as error:
        raise (classify(error, anthropic) or error) from error
    return read_message(message)


def read_message(message):
    text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
    raw_stop = message.stop_reason or "unknown"
    usage = message.usage
    cached = getattr(usage, "cache_read_input_tokens", None) or 0
    written = getattr(usage, "cache_creation_input_tokens", None) or 0
    thinking = getattr(getattr(usage, "output_tokens_details", None), "thinking_tokens", None) or 0
    return Answer(
        text=text,
        stop_reason=ANTHROPIC_STOP.get(raw_stop, raw_stop),
        raw_stop_reason=raw_stop,
        # Anthropic counts cache reads and writes apart from input_tokens; here input is the whole prompt.
        usage={"input_tokens": usage.input_tokens + cached + written, "output_tokens": usage.output_tokens,
               "cached_input_tokens": cached, "cache_write_tokens": written, "reasoning_tokens": thinking},
    )


ASK = {"openai": ask_openai, "anthropic": ask_anthropic}


# --- requests with tools (the agent stage): the conversation is kept in Chat Completions form, as mini-swe-agent's
# LitellmModel keeps it, and turned into each provider's own form when sent.


def chat_message(message):
    """A message of the conversation as the Chat Completions API takes it: without the keys only the agent keeps."""
    return {key: value for key, value in message.items() if key != "extra"}


def ask_tools_openai(messages, model, settings, tools, options):
    """One Chat Completions request with tools, not streamed; its assistant message and usage."""
    import openai

    request = {"model": model, "messages": [chat_message(m) for m in messages], "tools": tools, **options}
    if settings.get("send_output_limit", True):
        limit = "max_tokens" if settings.get("base_url") else "max_completion_tokens"
        request[limit] = output_limit("openai", model, settings)
    if settings.get("temperature") is not None:
        request["temperature"] = settings["temperature"]
    if settings.get("reasoning_effort"):
        request["reasoning_effort"] = settings["reasoning_effort"]
    try:
        completion = client_for("openai", settings).chat.completions.create(**request)
    except (openai.OpenAIError, json.JSONDecodeError) as error:
        raise (classify(error, openai) or error) from error
    answer = read_completion(completion)
    message = completion.choices[0].message.model_dump(exclude_none=True)  # as the API sent it, as LitellmModel keeps it
    message.setdefault("content", None)
    return Answer(answer.text, answer.stop_reason, answer.raw_stop_reason, answer.usage, message=message,
                  raw=completion.model_dump(mode="json"))


def anthropic_messages(messages):
    """(system, messages) of a Chat Completions conversation in the Messages API's form: tool calls as tool_use
    blocks, and the tool messages that answer them as tool_result blocks of one user message."""
    system, converted = [], []
    for message in map(chat_message, messages):
        role, content = message["role"], message.get("content")
        if role == "system":
            system.append(content)
        elif role == "tool":
            block = {"type": "tool_result", "tool_use_id": message["tool_call_id"], "content": content or ""}
            if converted and converted[-1]["role"] == "user" and isinstance(converted[-1]["content"], list) and all(
                    b.get("type") == "tool_result" for b in converted[-1]["content"]):
                converted[-1]["content"].append(block)
            else:
                converted.append({"role": "user", "content": [block]})
        elif role == "assistant":
            blocks = [{"type": "text", "text": content}] if content else []
            blocks += [{"type": "tool_use", "id": call["id"], "name": call["function"]["name"],
                        "input": json.loads(call["function"]["arguments"] or "{}")}
                       for call in message.get("tool_calls") or []]
            converted.append({"role": "assistant", "content": blocks})
        else:
            converted.append({"role": "user", "content": content})
    return "\n\n".join(system), converted


def ask_tools_anthropic(messages, model, settings, tools, options):
    """One Messages API request with tools; its answer as a Chat Completions assistant message."""
    import anthropic

    system, converted = anthropic_messages(messages)
    # the Messages API requires max_tokens: without send_output_limit it is the model's own limit (own_output_limit)
    request = {"model": model, "max_tokens": output_limit("anthropic", model, settings), "messages": converted,
               "tools": [{"name": t["function"]["name"], "description": t["function"]["description"],
                          "input_schema": t["function"]["parameters"]} for t in tools]}
    if system:
        request["system"] = system
    if options.get("parallel_tool_calls") is False:
        request["tool_choice"] = {"type": "auto", "disable_parallel_tool_use": True}
    try:
        reply = client_for("anthropic", settings).messages.create(**request)
    except (anthropic.AnthropicError, json.JSONDecodeError) as error:
        raise (classify(error, anthropic) or error) from error
    answer = read_message(reply)
    calls = [{"id": block.id, "type": "function", "function": {"name": block.name, "arguments": json.dumps(block.input)}}
             for block in reply.content if block.type == "tool_use"]
    message = {"role": "assistant", "content": answer.text or None, **({"tool_calls": calls} if calls else {})}
    # the stop reason as Chat Completions names it, which the agent's format error template reads
    stop = {"tool_use": "tool_calls", "max_tokens": "length", "end_turn": "stop"}.get(answer.raw_stop_reason,
                                                                                     answer.raw_stop_reason)
    return Answer(answer.text, answer.stop_reason, stop, answer.usage, message=message,
                  raw=reply.model_dump(mode="json"))


def responses_input(messages):
    """(instructions, input items) of a Chat Completions conversation in the Responses API's form: tool calls as
    function_call items, the tool messages that answer them as function_call_output items."""
    system, items = [], []
    for message in map(chat_message, messages):
        role, content = message["role"], message.get("content")
        if role == "system":
            system.append(content)
        elif role == "tool":
            items.append({"type": "function_call_output", "call_id": message["tool_call_id"], "output": content or ""})
        elif role == "assistant":
            items += [{"role": "assistant", "content": content}] if content else []
            items += [{"type": "function_call", "call_id": call["id"], "name": call["function"]["name"],
                       "arguments": call["function"]["arguments"]} for call in message.get("tool_calls") or []]
        else:
            items.append({"role": "user", "content": content})
    return "\n\n".join(system), items


def ask_tools_responses(messages, model, settings, tools, options):
    """One Responses API request with tools (store=false: the whole conversation is sent each time); its answer as a
    Chat Completions assistant message."""
    import openai

    instructions, items = responses_input(messages)
    request = {"model": model, "input": items, "store": False,
               "tools": [{"type": "function", **t["function"]} for t in tools], **options}
    if settings.get("send_output_limit", True):
        request["max_output_tokens"] = output_limit("openai", model, settings)
    if instructions:
        request["instructions"] = instructions
    if settings.get("temperature") is not None:
        request["temperature"] = settings["temperature"]
    if settings.get("reasoning_effort"):
        request["reasoning"] = {"effort": settings["reasoning_effort"]}
    try:
        response = client_for("openai", settings).responses.create(**request)
    except (openai.OpenAIError, json.JSONDecodeError) as error:
        raise (classify(error, openai) or error) from error
    answer = read_response(response)
    calls = [{"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
             for item in response.output if item.type == "function_call"]
    message = {"role": "assistant", "content": answer.text or None, **({"tool_calls": calls} if calls else {})}
    # the stop reason as Chat Completions names it, which the agent's format error template reads
    stop = "length" if answer.stop_reason == "max_tokens" else "tool_calls" if calls else "stop"
    return Answer(answer.text, answer.stop_reason, stop, answer.usage, message=message,
                  raw=response.model_dump(mode="json"))


ASK_TOOLS = {"openai": ask_tools_openai, "anthropic": ask_tools_anthropic}


def ask_tools(provider, messages, model, settings, tools, options=None):
    """One request of a conversation with tools (Chat Completions form, tools as Chat Completions function tools),
    with the errors of ask(); the Answer's message is the assistant's reply in the same form. OpenAI models go to the
    Responses API as ask() sends them (openai_api)."""
    if provider == "openai" and uses_responses(model, settings):
        return ask_tools_responses(messages, model, settings, tools, options or {})
    return ASK_TOOLS[provider](messages, model, settings, tools, options or {})


def ask(provider, messages, model, settings):
    """One request; a 400 that says the output limit is too high is answered by one retry at the model's limit."""
    try:
        return ASK[provider](messages, model, settings)
    except OutputLimitTooHigh as error:
        if error.limit >= output_limit(provider, model, settings):
            raise
        learn_output_limit(provider, model, settings, error.limit)
        return ASK[provider](messages, model, settings)

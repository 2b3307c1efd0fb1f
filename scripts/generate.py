"""Generate: ask the provider for an answer to the prompt and keep it raw in response.json.

A provider is a function (prompt, row, settings) -> dict with `answer`, `stop_reason`
and `usage`. It raises PermanentFailure for an outcome that retrying cannot change (the
failure is recorded as the instance's result); any other exception is a transient
fault: the job fails, nothing is written, and a rerun tries again.
"""
import argparse
import json
import time
from datetime import datetime, timezone

from scripts.common import read_json, write_json_atomic
from scripts.select import read_row


class PermanentFailure(Exception):
    def __init__(self, reason, detail):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def no_usage():
    return {"input_tokens": 0, "output_tokens": 0}


def gold(prompt, row, settings):
    """The instance's reference patch: checks an evaluation setup end to end."""
    return {"answer": row["patch"], "stop_reason": "gold", "usage": no_usage()}


def find_jsonl_row(path, instance_id):
    """The row of a JSONL file with this instance_id, parsing only lines that mention it."""
    needle = json.dumps(instance_id)
    with open(path, encoding="utf-8") as f:
        for line in f:
            if needle in line:
                row = json.loads(line)
                if row.get("instance_id") == instance_id:
                    return row
    return None


def replay(prompt, row, settings):
    """An earlier answer from settings['replay_file']: its full_output, else its model_patch."""
    recorded = find_jsonl_row(settings["replay_file"], row["instance_id"])
    if recorded is None:
        raise PermanentFailure("no_answer_recorded", f"{settings['replay_file']} has no answer for this instance")
    answer = recorded.get("full_output") or recorded.get("model_patch") or ""
    return {"answer": answer, "stop_reason": "replay", "usage": no_usage()}


PROVIDERS = {"gold": gold, "replay": replay}


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def generate(prompt, row, provider, model, settings):
    """The response record for one instance; raises on a transient fault."""
    started, clock = now(), time.monotonic()
    try:
        result = PROVIDERS[provider](prompt, row, settings)
        status, failure = "ok", None
    except PermanentFailure as e:
        result = {"answer": None, "stop_reason": None, "usage": no_usage()}
        status, failure = "failed", {"reason": e.reason, "detail": e.detail}
    latency = round(time.monotonic() - clock, 3)
    return {
        "instance_id": row["instance_id"],
        "provider": provider,
        "model": model,
        "status": status,
        "failure_reason": failure and failure["reason"],
        "failure_detail": failure and failure["detail"],
        "answer": result["answer"],
        "stop_reason": result["stop_reason"],
        "usage": result["usage"],
        "cost_usd": result.get("cost_usd", 0.0),
        "latency_s": latency,
        "attempts": result.get("attempts") or [{"started_at": started, "latency_s": latency, "error": None}],
        "created_at": now(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--instances", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--provider", choices=sorted(PROVIDERS), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--replay-file")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    row = read_row(args.instances, args.index, args.id)
    settings = {"replay_file": args.replay_file}
    write_json_atomic(args.out, generate(read_json(args.prompt), row, args.provider, args.model, settings))


if __name__ == "__main__":
    main()

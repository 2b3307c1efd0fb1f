"""What answers cost, and the run's budget.

Prices come from prices.yaml beside this file, overridden or extended by the `prices`
setting. The budget is kept in a ledger, results/<run>/spend.jsonl, one line per paid
request, appended under a file lock so that parallel jobs, separate processes and
cluster jobs on a shared filesystem all see one total.
"""
import functools
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import yaml
from filelock import FileLock

PRICE_TABLE = Path(__file__).parent / "prices.yaml"


class BudgetSpent(Exception):
    pass


@functools.cache
def _price_table():
    return yaml.safe_load(PRICE_TABLE.read_text(encoding="utf-8"))


def load_prices(overrides=None):
    return {**_price_table(), **(overrides or {})}


def price_for(model, prices):
    """The price entry of the model, by exact name or else by the longest name it starts with; None if unknown."""
    if model in prices:
        return prices[model]
    prefixes = [name for name in prices if model.startswith(name)]
    return prices[max(prefixes, key=len)] if prefixes else None


def cost_usd(usage, price):
    """USD for one answer's usage at a price in USD per million tokens."""
    cached = usage.get("cached_input_tokens", 0)
    written = usage.get("cache_write_tokens", 0)
    fresh = usage.get("input_tokens", 0) - cached - written
    total = (
        fresh * price["input"]
        + cached * price.get("cached_input", price["input"])
        + written * price.get("cache_write", price["input"])
        + usage.get("output_tokens", 0) * price["output"]
    )
    return round(total / 1_000_000, 8)


def _locked(ledger):
    Path(ledger).parent.mkdir(parents=True, exist_ok=True)
    return FileLock(f"{ledger}.lock")


def spent(ledger):
    path = Path(ledger)
    with _locked(ledger):
        if not path.exists():
            return 0.0
        with open(path, encoding="utf-8") as f:
            return sum(json.loads(line)["cost_usd"] for line in f if line.strip())


def check_budget(ledger, max_cost):
    """Raise BudgetSpent when the recorded spend has reached max_cost (None: no budget)."""
    if max_cost is None:
        return
    total = spent(ledger)
    if total >= max_cost:
        raise BudgetSpent(
            f"the budget is spent: {total:.4f} USD recorded in {ledger} has reached max_cost={max_cost}. "
            "No new request was started and finished instances are kept; to go on, raise it "
            f"(--config max_cost={max(max_cost * 2, total + 1):g}) and run again."
        )


def record_spend(ledger, instance_id, cost):
    line = json.dumps({"instance_id": instance_id, "cost_usd": cost,
                       "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    with _locked(ledger):
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

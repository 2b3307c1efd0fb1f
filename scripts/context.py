"""Context: the code a prompt shows the model, with token counts.

`none` gives the issue text alone. Other strategies add entries to STRATEGIES: each
takes the instance row and returns the list of files that go into the prompt.
"""
import argparse

from scripts.common import write_json_atomic
from scripts.select import read_row

TOKEN_COUNTER = "estimate: 1 token per 4 characters"


def count_tokens(text):
    return (len(text) + 3) // 4


def no_files(row):
    return []


STRATEGIES = {"none": no_files}


def build_context(row, strategy):
    files = STRATEGIES[strategy](row)
    issue_tokens = count_tokens(row["problem_statement"])
    file_tokens = sum(f["tokens"] for f in files)
    return {
        "instance_id": row["instance_id"],
        "repo": row["repo"],
        "base_commit": row["base_commit"],
        "strategy": strategy,
        "problem_statement": row["problem_statement"],
        "files": files,
        "token_counter": TOKEN_COUNTER,
        "tokens": {"problem_statement": issue_tokens, "files": file_tokens, "total": issue_tokens + file_tokens},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="none")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    row = read_row(args.instances, args.index, args.id)
    write_json_atomic(args.out, build_context(row, args.strategy))


if __name__ == "__main__":
    main()

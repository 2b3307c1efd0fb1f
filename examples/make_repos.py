"""Build the example repositories of tiny.jsonl as git bundles under examples/repos/.

The commits have fixed authors and dates, so the same files give the same commit ids on any
machine: the base_commit of each row of tiny.jsonl. The workflow clones a bundle like any
other repository, with repo_url=examples/repos/{repo}.bundle.

    python examples/make_repos.py [--dest DIR]     # prints owner/name and the commit ids
"""
import argparse
import os
import subprocess
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
ENV = {**os.environ, "GIT_AUTHOR_NAME": "Example", "GIT_AUTHOR_EMAIL": "example@example.com",
       "GIT_COMMITTER_NAME": "Example", "GIT_COMMITTER_EMAIL": "example@example.com",
       "GIT_AUTHOR_DATE": "2026-11-25T00:00:00Z", "GIT_COMMITTER_DATE": "2026-11-25T00:00:00Z",
       "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
CALC_BUGGY = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    if a == 0:\n        return b\n    return a * b\n"
# owner/name: the commits, each a message and the files it writes
REPOS = {
    "example/calc": [
        ("calc: add and mul", {"calc.py": CALC_BUGGY, "test_calc.py": "from calc import add, mul\n\n"}),
        ("calc: add adds", {"calc.py": CALC_BUGGY.replace("a - b", "a + b")}),
    ],
    "example/greet": [
        ("greet", {"greet.py": 'def greet(name):\n    return "Hello, !"\n'}),
    ],
}


def git(repo, *args):
    return subprocess.run(["git", *args], cwd=repo, env=ENV, check=True, capture_output=True, text=True).stdout


def build(dest):
    """Write <dest>/<owner>/<name>.bundle for each repository; {owner/name: [commit ids]}."""
    commits = {}
    for name, history in REPOS.items():
        with tempfile.TemporaryDirectory() as work:
            git(work, "init", "-q", "-b", "main")
            commits[name] = []
            for message, files in history:
                for path, text in files.items():
                    Path(work, path).write_text(text)
                git(work, "add", "-A")
                git(work, "commit", "-q", "-m", message)
                commits[name].append(git(work, "rev-parse", "HEAD").strip())
            bundle = Path(dest) / f"{name}.bundle"
            bundle.parent.mkdir(parents=True, exist_ok=True)
            git(work, "bundle", "create", "-q", str(bundle), "main")
    return commits


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", default=str(EXAMPLES / "repos"))
    args = parser.parse_args()
    for name, ids in build(args.dest).items():
        print(name, *ids)


if __name__ == "__main__":
    main()

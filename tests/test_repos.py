"""The repository cache (scripts/repos.py) on repositories the tests build and serve by path."""
import json
import subprocess
import sys
import time

import pytest
from fake_git import BUNDLES, GitServer, serve_repository
from filelock import FileLock
from unidiff import PatchSet

from scripts import common, repos

from conftest import LITE_TEST, PROJECT, read_rows, snakemake, write_rows
from fixture_repos import commit_files, git


@pytest.fixture
def source(tmp_path):
    """A repository at tmp/src/acme/tool with two commits; returns (url template, first, second)."""
    path = tmp_path / "src" / "acme" / "tool"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    first = commit_files(path, {"tool/core.py": "VERSION = 1\n", "README.md": "tool\n"}, "one")
    second = commit_files(path, {"tool/core.py": "VERSION = 2\n"}, "two")
    return f"{tmp_path}/src/{{repo}}", first, second


@pytest.mark.unit
def test_clone_once_then_cached(tmp_path, source):
    url, first, second = source
    cache = tmp_path / "cache"
    mirror, action = repos.ensure_commit(cache, "acme/tool", first, url)
    assert (action, mirror) == ("cloned", cache / "acme__tool.git")
    assert git(mirror, "rev-parse", "--is-bare-repository").strip() == "true"
    assert repos.ensure_commit(cache, "acme/tool", second, url) == (mirror, "cached")
    assert repos.read_files(mirror, first, ["tool/core.py"]) == {"tool/core.py": "VERSION = 1\n"}
    assert repos.read_files(mirror, second, ["tool/core.py"]) == {"tool/core.py": "VERSION = 2\n"}


@pytest.mark.unit
def test_a_commit_made_after_the_clone_is_fetched(tmp_path, source):
    url, first, _ = source
    cache = tmp_path / "cache"
    repos.ensure_commit(cache, "acme/tool", first, url)
    third = commit_files(tmp_path / "src" / "acme" / "tool", {"tool/core.py": "VERSION = 3\n"}, "three")
    mirror, action = repos.ensure_commit(cache, "acme/tool", third, url)
    assert action == "fetched"
    assert repos.read_files(mirror, third, ["tool/core.py"])["tool/core.py"] == "VERSION = 3\n"


@pytest.mark.unit
def test_missing_commit_and_unreachable_repo_are_explained(tmp_path, source):
    url, first, _ = source
    cache = tmp_path / "cache"
    with pytest.raises(repos.RepoError, match=r"commit 0{40} of acme/tool is not in .*src/acme/tool"):
        repos.ensure_commit(cache, "acme/tool", "0" * 40, url)
    with pytest.raises(repos.RepoError, match=r"cannot fetch .*src/acme/nothing"):
        repos.ensure_commit(cache, "acme/nothing", first, url)
    assert not (cache / "acme__nothing.git").exists()
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(repos.RepoError, match="not of the form owner/name"):
        repos.ensure_commit(cache, "../escape", first, url)
    mirror, _ = repos.ensure_commit(cache, "acme/tool", first, url)
    with pytest.raises(repos.RepoError, match="nowhere.py not in commit"):
        repos.read_files(mirror, first, ["nowhere.py"])


@pytest.mark.unit
def test_concurrent_jobs_share_one_mirror(tmp_path, source):
    url, first, _ = source
    cache = tmp_path / "cache"
    cache.mkdir()
    command = [sys.executable, "-m", "scripts.repos", "fetch", "--repo-cache", str(cache), "--repo-url", url,
               "--repo", "acme/tool", "--commit", first]
    # Hold the repository's lock while four jobs start, so that they all wait for it together.
    with FileLock(f"{cache / 'acme__tool.git'}.lock"):
        jobs = [subprocess.Popen(command, cwd=PROJECT, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        time.sleep(1.5)
        assert all(job.poll() is None for job in jobs), "the jobs did not wait for the lock"
    messages = [job.communicate(timeout=60)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 4
    assert sum("cloned" in m for m in messages) == 1
    assert sum("cached" in m for m in messages) == 3
    assert sorted(p.name for p in cache.iterdir()) == ["acme__tool.git", "acme__tool.git.lock"]


@pytest.mark.unit
def test_checkout_writes_the_tree_as_committed(tmp_path):
    path = tmp_path / "src" / "acme" / "attrs"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    # Attributes that would make git archive drop or rewrite files.
    commit = commit_files(path, {".gitattributes": "ignored.txt export-ignore\nversion.py export-subst\n",
                                 "ignored.txt": "still here\n", "version.py": 'REF = "$Format:%H$"\n'}, "attrs")
    mirror, _ = repos.ensure_commit(tmp_path / "cache", "acme/attrs", commit, f"{tmp_path}/src/{{repo}}")
    dest = repos.checkout(mirror, commit, tmp_path / "checkout")
    assert (dest / "ignored.txt").read_text() == "still here\n"
    assert (dest / "version.py").read_text() == 'REF = "$Format:%H$"\n'
    with pytest.raises(repos.RepoError, match="cannot check out"):
        repos.checkout(mirror, "f" * 40, tmp_path / "other")


@pytest.mark.unit
def test_cli_reports_a_fetch_error(tmp_path, source):
    url, first, _ = source
    result = subprocess.run([sys.executable, "-m", "scripts.repos", "checkout", "--repo-cache", str(tmp_path / "c"),
                             "--repo-url", url, "--repo", "acme/missing", "--commit", first, "--dest", str(tmp_path / "d")],
                            cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "repos: cannot fetch" in result.stderr
    assert not (tmp_path / "d").exists()


# --- real repositories (../shared/data/repos/*.bundle) over a loopback smart HTTP server ---

@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """psf/requests and pallets/flask served as GitHub serves them, with three pull request refs each."""
    root = tmp_path_factory.mktemp("served")
    for repo in ("psf/requests", "pallets/flask"):
        serve_repository(root, repo, BUNDLES / f"{repo}.bundle", pull_refs=3)
    return root


def lite_rows_of(repo):
    return [r for r in read_rows(LITE_TEST) if r["repo"] == repo]


def refs(repository):
    return git(repository, "for-each-ref", "--format=%(refname)").split()


@pytest.mark.unit
def test_real_repository_is_a_partial_clone_of_branches_and_tags(tmp_path, served):
    first, second = lite_rows_of("psf/requests")[:2]
    with GitServer(served) as server:
        mirror, action = repos.ensure_commit(tmp_path / "cache", "psf/requests", first["base_commit"],
                                             f"{server.url}/{{repo}}.git")
    assert action == "cloned"
    assert [r for r in refs(served / "psf/requests.git") if r.startswith("refs/pull/")]  # the server has them
    assert refs(mirror) and all(r.startswith(("refs/heads/", "refs/tags/")) for r in refs(mirror))
    assert git(mirror, "config", "remote.origin.partialclonefilter").strip() == "blob:none"
    # Every file of the base commit is there; the files of another commit are not, until it is asked for.
    assert repos.missing_objects(mirror, first["base_commit"]) == []
    assert len(repos.missing_objects(mirror, second["base_commit"])) > 0
    paths = [f.path for f in PatchSet(first["patch"])]
    texts = repos.read_files(mirror, first["base_commit"], paths)
    assert texts == {p: git(served / "psf/requests.git", "show", f"{first['base_commit']}:{p}") for p in paths}
    with GitServer(served) as server:
        url = f"{server.url}/{{repo}}.git"
        assert repos.ensure_commit(tmp_path / "cache", "psf/requests", first["base_commit"], url) == (mirror, "cached")
        assert server.requests == []
        assert repos.ensure_commit(tmp_path / "cache", "psf/requests", second["base_commit"], url) == (mirror, "fetched")
        assert [method for method, _ in server.requests] == ["GET", "POST"]  # the blobs in one request
    assert repos.missing_objects(mirror, second["base_commit"]) == []


@pytest.mark.unit
def test_a_commit_no_branch_holds_is_fetched_by_id(tmp_path, served):
    row = lite_rows_of("pallets/flask")[0]
    pull = git(served / "pallets/flask.git", "rev-parse", "refs/pull/2/head").strip()
    with GitServer(served) as server:
        url = f"{server.url}/{{repo}}.git"
        mirror, _ = repos.ensure_commit(tmp_path / "cache", "pallets/flask", row["base_commit"], url)
        assert not repos.has_commit(mirror, pull)
        assert repos.ensure_commit(tmp_path / "cache", "pallets/flask", pull, url) == (mirror, "fetched")
    assert repos.read_files(mirror, pull, ["PULL_2.txt"]) == {}  # there, and not text
    assert len(repos.read_blobs(mirror, [repos.list_files(mirror, pull)["PULL_2.txt"][0]])[0]) == 100_000
    assert not [r for r in refs(mirror) if r.startswith("refs/pull/")]
    # Other pull requests' commits were not fetched with it.
    assert not repos.has_commit(mirror, git(served / "pallets/flask.git", "rev-parse", "refs/pull/3/head").strip())


@pytest.mark.unit
def test_a_server_that_stops_answering_is_a_fetch_error_within_the_timeout(tmp_path, served):
    row = lite_rows_of("pallets/flask")[0]
    with GitServer(served) as server:
        server.hang.set()
        # the error names the timeout git was given; a git that waited on would end in pytest's own timeout
        with pytest.raises(repos.RepoError, match=r"git clone --bare got no answer within 3 s \(GIT_TIMEOUT\)"):
            repos.ensure_commit(tmp_path / "cache", "pallets/flask", row["base_commit"], f"{server.url}/{{repo}}.git",
                                timeout=3)
    assert list((tmp_path / "cache").iterdir()) == [tmp_path / "cache" / "pallets__flask.git.lock"]


@pytest.mark.workflow
def test_an_unreachable_repository_fails_the_context_job_as_an_infrastructure_fault(tmp_path, served):
    rows = lite_rows_of("pallets/flask")[:3]
    dataset = write_rows(tmp_path / "rows.jsonl", rows)
    with GitServer(tmp_path / "empty") as nowhere:
        # the run's own view (not in a terminal: plain lines), as a user gets it
        result = snakemake(tmp_path, "--logger", "swebench", "--config", f"dataset={dataset}", "context=oracle",
                           f"repo_url={nowhere.url}/{{repo}}.git", check=False)
    assert result.returncode != 0
    printed = result.stdout + result.stderr
    # each failed job is one line: the rule, the instance, the cause and the log; no error block, no traceback
    errors = sorted(line for line in printed.splitlines() if line.startswith("error: "))
    assert errors == [f"error: context {row['instance_id']}: repository_unreachable "
                      f"(log: results/gold/logs/{row['instance_id']}/context.log)" for row in sorted(
                          rows, key=lambda row: row["instance_id"])], printed
    assert "Error in rule" not in printed and "RuleException" not in printed and "File \"" not in printed
    # the end of the run says the one cause once, with the count and the fix; the closing line counts it too
    causes = [line for line in result.stderr.splitlines() if "failed for one cause" in line]
    assert len(causes) == 1
    assert causes[0].startswith(f"3 instances failed for one cause: repository_unreachable (cannot fetch {nowhere.url}")
    assert causes[0].endswith("Check repo_url and the connection (`git ls-remote <url>`), and run again. "
                              "A rerun retries them.")
    assert printed.strip().splitlines()[-1].endswith("; jobs failed: repository_unreachable 3")
    for row in rows:
        log = tmp_path / "results" / "gold" / "logs" / row["instance_id"] / "context.log"
        assert common.infrastructure_fault(log)[0] == "repository_unreachable"
        text = log.read_text()
        assert f"cannot fetch {nowhere.url}/pallets/flask.git" in text
        # the log keeps what the terminal left out: the traceback and Snakemake's error block, above the fault line
        assert "RepoError in file" in text and 'in ensure_commit' in text
        assert "Error in rule context:" in text and f"output: results/gold/instances/{row['instance_id']}/context.json" in text
        assert text.strip().splitlines()[-1].startswith("infrastructure fault: repository_unreachable: ")
    # A rerun, with the repository reachable, retries them.
    with GitServer(served) as server:
        snakemake(tmp_path, "--config", f"dataset={dataset}", "context=oracle", f"repo_url={server.url}/{{repo}}.git")
    for row in rows:
        context = json.loads((tmp_path / "results" / "gold" / "instances" / row["instance_id"] / "context.json").read_text())
        assert [f["path"] for f in context["files"]] == [f.path for f in PatchSet(row["patch"]) if not f.is_added_file]

"""The repository cache (scripts/repos.py) on repositories the tests build and serve by path."""
import subprocess
import sys
import time

import pytest
from filelock import FileLock

from scripts import repos

from conftest import PROJECT
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


def test_clone_once_then_cached(tmp_path, source):
    url, first, second = source
    cache = tmp_path / "cache"
    mirror, action = repos.ensure_commit(cache, "acme/tool", first, url)
    assert (action, mirror) == ("cloned", cache / "acme__tool.git")
    assert git(mirror, "rev-parse", "--is-bare-repository").strip() == "true"
    assert repos.ensure_commit(cache, "acme/tool", second, url) == (mirror, "cached")
    assert repos.read_files(mirror, first, ["tool/core.py"]) == {"tool/core.py": "VERSION = 1\n"}
    assert repos.read_files(mirror, second, ["tool/core.py"]) == {"tool/core.py": "VERSION = 2\n"}


def test_a_commit_made_after_the_clone_is_fetched(tmp_path, source):
    url, first, _ = source
    cache = tmp_path / "cache"
    repos.ensure_commit(cache, "acme/tool", first, url)
    third = commit_files(tmp_path / "src" / "acme" / "tool", {"tool/core.py": "VERSION = 3\n"}, "three")
    mirror, action = repos.ensure_commit(cache, "acme/tool", third, url)
    assert action == "fetched"
    assert repos.read_files(mirror, third, ["tool/core.py"])["tool/core.py"] == "VERSION = 3\n"


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


def test_cli_reports_a_fetch_error(tmp_path, source):
    url, first, _ = source
    result = subprocess.run([sys.executable, "-m", "scripts.repos", "checkout", "--repo-cache", str(tmp_path / "c"),
                             "--repo-url", url, "--repo", "acme/missing", "--commit", first, "--dest", str(tmp_path / "d")],
                            cwd=PROJECT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "repos: cannot fetch" in result.stderr
    assert not (tmp_path / "d").exists()

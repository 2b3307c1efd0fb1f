"""SWE-bench-shaped instance images for the evaluation tests, built without Docker Hub.

A base image comes from `debootstrap --variant=minbase bookworm` and `docker import`; on it
an environment image holds what the harness's eval script for a `psf/requests` row
expects (git, patch, pytest, and a stand-in for conda's `activate` that activates a
virtualenv at /opt/miniconda3/envs/testbed); on that, one image holds /testbed, a small git
repository with a known bug. Every test instance uses that repository (their test patches
differ), so their images are tags of the one image, named as the harness looks for them.
All images are kept by the Docker daemon, so later sessions build nothing.

The harness can also run on podman, through its Docker-compatible API (`podman system
service`): `podman_service` starts one on a socket of its own, and `copy_image` copies
the testbed image from Docker into podman's storage, where it is kept too.
"""
import contextlib
import hashlib
import io
import json
import os
import resource
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import docker

from fixture_repos import git

BASE_IMAGE = "swebench-runner-test/base:bookworm"
# The harness picks the eval script and log parser by repo and version: psf/requests 2.0
# runs `python -m pip install .` and then `pytest -rA <test files>`.
REPO, VERSION = "psf/requests", "2.0"
FIXED_DATE = "2026-01-01T00:00:00+00:00"  # fixed commit dates give the same base_commit every time

ACTIVATE = """\
# Stands in for conda's activate script, which SWE-bench's eval scripts source before `conda activate testbed`.
conda() { if [ "$1" = activate ]; then . "/opt/miniconda3/envs/$2/bin/activate"; fi; }
"""
ENV_DOCKERFILE = f"""\
FROM {BASE_IMAGE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends git patch procps python3 python3-venv python3-pytest \\
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv --system-site-packages /opt/miniconda3/envs/testbed
COPY activate /opt/miniconda3/bin/activate
# `pip install .` of the eval script, offline
ENV PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The harness stops each container with a 15 s grace period, which `tail -f /dev/null` as
# PID 1 never uses (it ignores SIGTERM): the test images are stopped at once instead.
STOPSIGNAL SIGKILL
"""

CALC = """\
def add(a, b):
    return a - b


def mul(a, b):
    return a * b
"""
TESTS = """\
from calc import add, mul


def test_mul():
    assert mul(2, 3) == 6
"""
SETUP = "from setuptools import setup\n\nsetup(name='calc', version='1.0', py_modules=['calc'])\n"
GOLD_PATCH = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,5 +1,5 @@
 def add(a, b):
-    return a - b
+    return a + b
 
 
 def mul(a, b):
"""
WRONG_PATCH = GOLD_PATCH.replace("+    return a + b", "+    return a * b")
MALFORMED_PATCH = GOLD_PATCH.replace("-    return a - b", "-    return b - a")  # its context is not in the file
TEST_PATCH = """\
diff --git a/test_calc.py b/test_calc.py
--- a/test_calc.py
+++ b/test_calc.py
@@ -3,3 +3,7 @@ from calc import add, mul
 
 def test_mul():
     assert mul(2, 3) == 6
+
+
+def test_add():
+    assert add(2, 3) == 5
"""
SLOW_TEST_PATCH = """\
diff --git a/test_calc.py b/test_calc.py
--- a/test_calc.py
+++ b/test_calc.py
@@ -3,3 +3,8 @@ from calc import add, mul
 
 def test_mul():
     assert mul(2, 3) == 6
+
+
+def test_slow():
+    import time
+    time.sleep(600)
"""


def client(host=None):
    """A client of the engine at host (a DOCKER_HOST address), or of the environment's Docker daemon."""
    return docker.DockerClient(base_url=host) if host else docker.from_env()


def image_exists(docker_client, name):
    try:
        docker_client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def debootstrap_image(docker_client, name, suite, include=""):
    """A Debian `suite` image under name, made with debootstrap (about 30 s) and `docker import`, with the
    packages of include (a comma-separated list) unless the daemon has it."""
    if image_exists(docker_client, name):
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", *([f"--include={include}"] if include else []), suite,
                        str(root), "http://deb.debian.org/debian"], check=True, capture_output=True)
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repository, tag = name.split(":")
        docker_client.api.import_image(src=str(tarball), repository=repository, tag=tag)


def ensure_base(docker_client):
    """The Debian base image of the test images."""
    debootstrap_image(docker_client, BASE_IMAGE, "bookworm")


def build(docker_client, files, tag, labels=None):
    """Build an image from a context of {name: text or bytes} files; a failed build raises with the end of its log."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            data = data if isinstance(data, bytes) else data.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    try:
        docker_client.images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True, forcerm=True,
                                   labels=labels or {})
    except docker.errors.BuildError as e:
        log = "".join(line.get("stream", "") + line.get("error", "") for line in e.build_log)
        raise RuntimeError(f"building {tag} failed:\n{log[-4000:]}") from None


def make_repository(path):
    """The repository of /testbed; returns its commit, the same on every machine."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    environment = {"GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
    for name, text in {"calc.py": CALC, "test_calc.py": TESTS, "setup.py": SETUP}.items():
        (path / name).write_text(text)
    git(path, "add", "-A")
    subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "commit", "-qm", "calc"],
                   cwd=path, check=True, env={**environment, "PATH": "/usr/bin:/bin"})
    return git(path, "rev-parse", "HEAD").strip()


def testbed_tarball(repo):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(repo, arcname="testbed")
    return buffer.getvalue()


def ensure_env_image(docker_client):
    """The environment image of the test images, built once per content; its name."""
    ensure_base(docker_client)
    env_tag = "swebench-runner-test/env:" + hashlib.sha256((ENV_DOCKERFILE + ACTIVATE).encode()).hexdigest()[:12]
    if not image_exists(docker_client, env_tag):
        build(docker_client, {"Dockerfile": ENV_DOCKERFILE, "activate": ACTIVATE}, env_tag)
    return env_tag


def ensure_testbed_image(host=None):
    """The image with /testbed, built once per content by Docker and copied to the engine at
    host when that is another; returns (image name, base_commit)."""
    docker_client = client()
    env_tag = ensure_env_image(docker_client)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "testbed"
        base_commit = make_repository(repo)
        testbed_tag = f"swebench-runner-test/testbed:{base_commit[:12]}-{env_tag.rsplit(':', 1)[1]}"
        if not image_exists(docker_client, testbed_tag):
            dockerfile = f"FROM {env_tag}\nADD testbed.tar /\nWORKDIR /testbed\n"
            build(docker_client, {"Dockerfile": dockerfile, "testbed.tar": testbed_tarball(repo)}, testbed_tag)
    if host:
        copy_image(testbed_tag, host)
    return testbed_tag, base_commit


def ensure_harness_build(row_):
    """Make the harness's own build of row_'s instance image (images built locally: image_namespace empty) work
    offline: its base and environment images are the test's, under the names the harness gives them, and git in
    the environment takes a mirror of the test repository in the image for https://github.com/<repo>, which the
    harness's setup_repo.sh clones. Returns the name the harness builds the instance image under."""
    from swebench.harness.test_spec.test_spec import make_test_spec

    spec = make_test_spec(row_, namespace=None)
    docker_client = client()
    env_tag = ensure_env_image(docker_client)
    docker_client.images.get(BASE_IMAGE).tag(*spec.base_image_key.rsplit(":", 1))
    if not image_exists(docker_client, spec.env_image_key):
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "mirror"
            make_repository(repo)
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as tar:
                tar.add(repo, arcname="mirror")
            # setup_repo.sh echoes conda's CONDA_DEFAULT_ENV under `set -u`
            dockerfile = (f"FROM {env_tag}\nADD mirror.tar /\nENV CONDA_DEFAULT_ENV=testbed\n"
                          f"RUN git config --system url./mirror.insteadOf https://github.com/{row_['repo']}\n")
            build(docker_client, {"Dockerfile": dockerfile, "mirror.tar": buffer.getvalue()}, spec.env_image_key)
    return spec.instance_image_key


def copy_image(name, host):
    """Copy the Docker daemon's image name to the engine at host, unless that has it. Podman
    names what it loads under a name without a registry localhost/...; the lookup by that
    short name finds it there."""
    if not image_exists(client(host), name):
        client(host).images.load(client().images.get(name).save(named=True))


def row(instance_id, base_commit, test_patch=TEST_PATCH, fail_to_pass=("test_calc.py::test_add",)):
    """A SWE-bench row for the test repository."""
    return {
        "instance_id": instance_id, "repo": REPO, "version": VERSION, "base_commit": base_commit,
        "environment_setup_commit": base_commit, "patch": GOLD_PATCH, "test_patch": test_patch,
        "problem_statement": "`calc.add` subtracts instead of adding.", "hints_text": "",
        "created_at": "2026-01-01T00:00:00Z",
        "FAIL_TO_PASS": json.dumps(list(fail_to_pass)), "PASS_TO_PASS": json.dumps(["test_calc.py::test_mul"]),
    }


def instance_image(row_, namespace="swebench"):
    """The image name the harness looks for, as the harness computes it."""
    from swebench.harness.test_spec.test_spec import make_test_spec

    return make_test_spec(row_, namespace=namespace).instance_image_key


def tag_instance(testbed_tag, row_, namespace="swebench", host=None):
    """Give the testbed image the name the harness looks for this row's image under."""
    repository, tag = instance_image(row_, namespace).rsplit(":", 1)
    client(host).images.get(testbed_tag).tag(repository, tag)
    return f"{repository}:{tag}"


@contextlib.contextmanager
def podman_service(folder, insecure_registries=()):
    """`podman system service` (podman's Docker-compatible API) on a socket in folder, with
    podman's default storage; yields its DOCKER_HOST address. Podman pulls over plain HTTP only
    from the registries (host:port) listed as insecure, as Docker does from any loopback one."""
    folder = Path(folder)
    registries, log, socket = folder / "registries.conf", folder / "podman.log", folder / "podman.sock"
    registries.write_text("".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in insecure_registries))
    # Rootful podman gives each container 1048576 open files and processes, which it cannot where it
    # lacks CAP_SYS_RESOURCE (in a container, some VMs): containers get its own limits instead,
    # processes set here, as podman lowers a high limit of its own (from 96364 to 32768 on one machine).
    nofile, nproc = resource.getrlimit(resource.RLIMIT_NOFILE)[1], min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 16384)
    containers = folder / "containers.conf"
    containers.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n')
    host = f"unix://{socket}"
    with open(log, "w") as stderr:
        process = subprocess.Popen(["podman", "system", "service", "--time=0", host],
                                   env={**os.environ, "CONTAINERS_REGISTRIES_CONF": str(registries),
                                        "CONTAINERS_CONF": str(containers)},
                                   stdout=subprocess.DEVNULL, stderr=stderr,
                                   preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc)))
    try:
        for _ in range(100):
            if socket.exists() or process.poll() is not None:
                break
            time.sleep(0.1)
        if not socket.exists():
            raise RuntimeError(f"podman system service did not start: {log.read_text()}")
        client(host).ping()
        yield host
    finally:
        process.terminate()
        process.wait()



class Engine(NamedTuple):
    """A container engine the harness runs on: docker, or podman through its Docker-compatible API."""

    name: str
    host: str | None  # its DOCKER_HOST address; None: the environment's Docker daemon

    def client(self):
        return client(self.host)

    @property
    def env(self):
        """What the workflow's environment needs to use this engine."""
        return {"DOCKER_HOST": self.host} if self.host else {}


ENGINES = ("docker", "podman")

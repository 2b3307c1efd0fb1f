"""Real SWE-bench instance images, built here from the git bundles in ../shared/data/repos and
packages from PyPI, so the official harness evaluates real rows without Docker Hub or GitHub.

For each row, as the harness's specification for its repo and version says
(swebench.harness.constants.MAP_REPO_VERSION_TO_SPECS):
- a base image: Debian by `debootstrap` (bullseye has Python 3.9, bookworm 3.11), git and patch;
- an environment image per (repo, version): a virtualenv at /opt/miniconda3/envs/testbed with
  the specification's packages (`packages`, `pip_packages`; a requirements file is read from
  the bundle at environment_setup_commit, as the harness reads it from GitHub), and a
  stand-in for conda's activate script, which the harness's scripts source;
- an instance image per row, under the name the harness looks for: the repository at
  base_commit in /testbed, pre_install and install run in it, as the harness's repo script does.
Evaluation then needs no network: pip installs from the wheels kept in the image.

Base and environment images are named by a hash of what they are built from; an instance
image carries that hash in a label. The daemon keeps them all, so a later run builds nothing.
The functions take a docker-py client (Docker, or podman's Docker-compatible API).
"""
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

import docker

from conftest import DATA
from swebench_images import build, debootstrap_image, image_exists

PREFIX = "swebench-runner-real"
SUITES = {"3.9": "bullseye", "3.11": "bookworm"}  # Debian's python3 of each suite
BASE_PACKAGES = "git,openssl,patch,procps,python3,python3-venv"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # the host's, which trusts what this network needs
LABEL = f"{PREFIX}.key"

# Stands in for conda's activate script: the eval scripts run
# `source /opt/miniconda3/bin/activate; conda activate testbed`.
ACTIVATE = """\
conda() { if [ "$1" = activate ]; then . "/opt/miniconda3/envs/$2/bin/activate"; fi; }
"""
# psf/requests' tests talk to httpbin.org over HTTP and HTTPS (and follow a redirect to
# www.google.co.uk). Docker writes the container's /etc/hosts when the container starts, so
# the names are pointed at a local httpbin (served by gunicorn, which answers keep-alive and
# chunked uploads as httpbin.org does) here, when the eval script activates the environment,
# not in the image. Its certificate is signed by a CA of the image's own, which requests
# trusts through REQUESTS_CA_BUNDLE.
HTTPBIN_HOOK = """\
export REQUESTS_CA_BUNDLE=/opt/httpbin/ca-bundle.crt
if ! grep -q ' httpbin.org ' /etc/hosts 2>/dev/null; then
    echo '127.0.0.1 httpbin.org www.google.co.uk' >> /etc/hosts
    for address in 127.0.0.1:80 127.0.0.1:443; do
        tls=$([ "${address#*:}" = 443 ] && echo --certfile /opt/httpbin/httpbin.org.crt --keyfile /opt/httpbin/httpbin.org.key)
        (cd / && /opt/httpbin/bin/gunicorn --daemon --worker-class gthread --threads 8 --bind "$address" $tls \\
            --error-logfile /var/log/httpbin.log httpbin:app)
    done
    for _ in $(seq 100); do (: </dev/tcp/127.0.0.1/443) 2>/dev/null && (: </dev/tcp/127.0.0.1/80) 2>/dev/null && break; sleep 0.1; done
fi
"""
HTTPBIN_SETUP = " && ".join([
    "python3 -m venv /opt/httpbin", "/opt/httpbin/bin/pip install -q httpbin gunicorn", "cd /opt/httpbin",
    "openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj /CN=httpbin-test-ca -keyout ca.key -out ca.crt",
    "openssl req -newkey rsa:2048 -nodes -subj /CN=httpbin.org -keyout httpbin.org.key -out httpbin.org.csr",
    "printf 'subjectAltName=DNS:httpbin.org' > san.ext",
    "openssl x509 -req -in httpbin.org.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 36500 -extfile san.ext "
    "-out httpbin.org.crt",
    "cat /etc/ssl/certs/ca-certificates.crt ca.crt > ca-bundle.crt",
])
# What pip needs to build a repository without an index: the build backends of the
# repositories' pyproject.toml files, fetched when the environment is built.
BUILD_WHEELS = "setuptools wheel 'setuptools-scm[toml]' flit_core"


def key(*parts):
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def ensure_base(client, python):
    """Debian with Python `python` (3.9 or 3.11), git and patch, by debootstrap; its name."""
    suite = SUITES[python]
    name = f"{PREFIX}/base:{suite}-{key(suite, BASE_PACKAGES)}"
    debootstrap_image(client, name, suite, BASE_PACKAGES)
    return name


def specs(row):
    from swebench.harness.constants import MAP_REPO_VERSION_TO_SPECS

    return MAP_REPO_VERSION_TO_SPECS[row["repo"]][row["version"]]


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def mirror(repo, cache):
    """A mirror of repo's bundle under cache, made once."""
    path = Path(cache) / repo.replace("/", "__")
    if not path.is_dir():
        subprocess.run(["git", "clone", "-q", "--mirror", str(DATA / "repos" / f"{repo}.bundle"), str(path)],
                       check=True, capture_output=True)
        git(path, "config", "uploadpack.allowAnySHA1InWant", "true")
    return path


def requirements(row, repo_mirror):
    """The requirements the harness installs for `packages: requirements.txt`, read from the
    repository at environment_setup_commit as the harness reads them from GitHub: the first
    of MAP_REPO_TO_REQS_PATHS that exists, its `-r` files inlined, editable installs of the
    repository itself and comments left out."""
    from swebench.harness.constants import MAP_REPO_TO_REQS_PATHS

    commit = row["environment_setup_commit"]
    for path in MAP_REPO_TO_REQS_PATHS[row["repo"]]:
        try:
            text = git(repo_mirror, "show", f"{commit}:{path}")
            break
        except subprocess.CalledProcessError:
            continue
    else:
        raise FileNotFoundError(f"{row['repo']} has none of {MAP_REPO_TO_REQS_PATHS[row['repo']]} at {commit}")
    folder = str(Path(path).parent)
    lines, included = [], []
    for line in text.splitlines():
        if line.strip().startswith("-r"):
            included += git(repo_mirror, "show", f"{commit}:{folder}/{line.strip()[2:].strip()}").splitlines()
        else:
            lines.append(line)
    keep = [line for line in included + lines if not line.strip().startswith(("-e .", "#", ".[test"))]
    return "\n".join(keep) + "\n"


def env_recipe(row, repo_mirror, base):
    """(Dockerfile, files) of the environment image of row's repo and version, on base."""
    spec = specs(row)
    packages = spec.get("packages", "")
    steps = ["python3 -m venv /opt/miniconda3/envs/testbed", ". /opt/miniconda3/envs/testbed/bin/activate",
             "python -m pip install -q -U pip setuptools wheel"]
    files = {"activate": ACTIVATE + (HTTPBIN_HOOK if row["repo"] == "psf/requests" else ""),
             "ca-certificates.crt": CA_BUNDLE.read_bytes()}
    if packages == "requirements.txt":
        files["requirements.txt"] = requirements(row, repo_mirror)
        steps.append("python -m pip install -q -r /root/requirements.txt")
    elif packages == "environment.yml":
        raise ValueError(f"{row['repo']} {row['version']}: environment.yml needs conda, which these images lack")
    elif packages:
        steps.append(f"python -m pip install -q {packages}")
    if spec.get("pip_packages"):
        steps.append("python -m pip install -q " + " ".join(f"'{p}'" for p in spec["pip_packages"]))
    steps.append(f"python -m pip download -q -d /opt/wheels {BUILD_WHEELS}")
    httpbin = ""
    if row["repo"] == "psf/requests":  # a venv of its own, so the tests' environment stays the specification's
        httpbin = f"RUN {HTTPBIN_SETUP}\n"
    dockerfile = (
        f"FROM {base}\n"
        "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
        "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "
        "PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore\n"
        + ("COPY requirements.txt /root/requirements.txt\n" if "requirements.txt" in files else "")
        + "RUN " + " && ".join(steps) + "\n"
        + httpbin
        + "COPY activate /opt/miniconda3/bin/activate\n"
    )
    return dockerfile, files


def ensure_env(client, row, repo_mirror):
    """The environment image of row's repo and version; its name."""
    dockerfile, files = env_recipe(row, repo_mirror, ensure_base(client, specs(row)["python"]))
    name = f"{PREFIX}/env:{row['repo'].replace('/', '__')}-{row['version']}-" + key(
        dockerfile, {k: hashlib.sha256(v if isinstance(v, bytes) else v.encode()).hexdigest()
                     for k, v in files.items()})
    if not image_exists(client, name):
        build(client, {"Dockerfile": dockerfile, **files}, name)
    return name


def instance_image_name(row, namespace="swebench"):
    """The name the harness looks for row's instance image under (TestSpec.instance_image_key)."""
    from swebench.harness.test_spec.test_spec import TestSpec

    return TestSpec(row["instance_id"], row["repo"], row["version"], [], [], [], "x86_64", [], [], "py", {},
                    namespace).instance_image_key


def testbed_tarball(repo_mirror, commit):
    """/testbed: a repository holding commit and its history, checked out, without remotes."""
    with tempfile.TemporaryDirectory() as tmp:
        testbed = Path(tmp) / "testbed"
        git(tmp, "init", "-q", str(testbed))
        git(testbed, "fetch", "-q", str(repo_mirror), commit)
        git(testbed, "checkout", "-q", "-b", "main", commit)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(testbed, arcname="testbed")
        return buffer.getvalue()


def ensure_instance(client, row, cache):
    """The instance image of row, under the harness's name; returns the name."""
    repo_mirror = mirror(row["repo"], cache)
    env = ensure_env(client, row, repo_mirror)
    spec = specs(row)
    # as the harness's repo script: pre_install, install, and a commit so that `git diff` shows only the patch
    setup = ["source /opt/miniconda3/bin/activate", "conda activate testbed", *spec.get("pre_install", []),
             spec["install"], "git -c user.email=setup@swebench.config -c user.name=SWE-bench commit -q --allow-empty -am SWE-bench"]
    dockerfile = (
        f"FROM {env}\n"
        "ADD testbed.tar /\n"
        "WORKDIR /testbed\n"
        # The bundles hold no tags, from which setuptools-scm (pytest's build) reads the version
        f"ENV SETUPTOOLS_SCM_PRETEND_VERSION={row['version']}\n"
        f"RUN bash -c {json.dumps(' && '.join(setup))}\n"
        # the evaluation installs the repository again, from the wheels the image holds
        "ENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/opt/wheels\n"
        # The harness stops each container with a 15 s grace period, which `tail -f /dev/null` as
        # PID 1 never uses (it ignores SIGTERM): these containers are stopped at once instead.
        "STOPSIGNAL SIGKILL\n"
    )
    name = instance_image_name(row)
    wanted = key(env, row["base_commit"], dockerfile)
    try:
        earlier = client.images.get(name)
        if earlier.labels.get(LABEL) == wanted:
            return name
    except docker.errors.ImageNotFound:
        earlier = None
    build(client, {"Dockerfile": dockerfile, "testbed.tar": testbed_tarball(repo_mirror, row["base_commit"])}, name,
          {LABEL: wanted})
    if earlier is not None:  # an image of an earlier recipe, which the name no longer holds
        try:
            client.images.remove(earlier.id)
        except docker.errors.APIError:  # another name still holds it, or a container uses it
            pass
    return name


def ensure_instances(client, rows, cache):
    """The instance images of rows, built where missing: {instance_id: image name}."""
    return {row["instance_id"]: ensure_instance(client, row, cache) for row in rows}

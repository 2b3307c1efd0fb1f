"""Images: where each instance's image comes from, the plan of the pulls, and the paced pull of one image.

`image_name(row, settings)` is the one place that names an instance's image: from the setting image_source
(a preset or a template) or, in its short form, image_namespace. `plan` says before the pulls how many images
a run pulls, their size where the registry tells it, the free disk and how long the pulls take at the
registry's limit. `pull_image` pulls one image (for scripts/evaluate.py's pull stage, which writes the
instance's image.json, and its evaluations): at the registry's pace, read from its `ratelimit-limit` /
`ratelimit-remaining` headers, and only while the disk keeps min_free_disk_gb. `release_image` removes it, or an
image the run built (`note_built`), once no evaluation of the run needs it.
"""
import argparse
import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

from scripts.common import now, read_json, read_jsonl, sample_folder, write_json_atomic, write_jsonl_atomic

# The image sources that have a name: Docker Hub's images, named as the harness names them, and Epoch AI's
# re-layered ones on GitHub's registry (the same environments, with layers shared between instances).
PRESETS = {
    "swebench": "docker.io/swebench/sweb.eval.{arch}.{id_1776}:latest",
    "epoch": "ghcr.io/epoch-research/swe-bench.eval.{arch}.{id}:latest",
}
ROW = "row"  # the row's own `image` column
ARCHES = ("x86_64", "arm64")
PLACEHOLDERS = ("id", "id_1776", "arch")
# Where an instance's image was pulled to, beside its other files.
RECORD = "image.json"
# The run's pulls, in its folder: each registry's pace is kept from it (wait_turn).
LEDGER = "images/pulls.jsonl"
# The images a run built (images built locally), one name a line, in its folder (note_built).
BUILT = "images/built.txt"
# For tests only: the free disk (GB) to read instead of the daemon's folder's.
FREE_DISK_VARIABLE = "SWEBENCH_RUNNER_FREE_DISK_GB"
MANIFESTS = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
PLATFORMS = {"x86_64": "amd64", "arm64": "arm64"}
REQUEST_TIMEOUT = 30


class ImageError(Exception):
    """A setting or a row that names no image; its text says how to fix it."""


class PullStopped(Exception):
    """A pull that does not start: `cause` is the cause of scripts.evaluate's ENDINGS (out_of_disk,
    registry_rate_limit), a fault of the machinery that a rerun retries."""

    def __init__(self, cause, message):
        super().__init__(message)
        self.cause = cause


# --- names ---

def qualified(namespace):
    """namespace with its registry, docker.io when it names none (as Docker reads it). Podman
    takes an unqualified name for any image whose name ends the same (localhost/swebench/...,
    another registry's); a qualified name is the one image on both engines."""
    if not namespace:
        return None
    first = namespace.split("/", 1)[0]
    return namespace if "." in first or ":" in first or first == "localhost" else f"docker.io/{namespace}"


def qualified_name(name):
    """An image name with its registry (docker.io/library/ for an official image) and its tag (latest)."""
    name = qualified(name if "/" in name else f"library/{name}")
    return name if ":" in name.rsplit("/", 1)[1] or "@" in name else f"{name}:latest"


def template(settings):
    """The template of image names of settings (image_source, image_namespace); ROW for the rows' own images;
    None when the images are built locally (image_namespace empty and no image_source)."""
    source = settings.get("image_source")
    if source:
        return PRESETS.get(source, source)
    namespace = settings.get("image_namespace")
    return f"{qualified(namespace)}/sweb.eval.{{arch}}.{{id_1776}}:latest" if namespace else None


def check_template(settings):
    """Raise ImageError when image_source is neither a preset nor a template that names each instance."""
    source = settings.get("image_source")
    if not source or source in PRESETS or source == ROW:
        return
    fields = set(re.findall(r"{([^{}]*)}", source))
    unknown = fields - set(PLACEHOLDERS)
    if unknown or not fields & {"id", "id_1776"}:
        raise ImageError(
            f"image_source={source}: give a preset ({', '.join([*PRESETS, ROW])}) or a template of image names "
            "with {id} (django__django-11099) or {id_1776} (django_1776_django-11099) and optionally {arch}, e.g. "
            f"'{PRESETS['epoch']}'" + (f"; {{{'}, {'.join(sorted(unknown))}}} is no placeholder" if unknown else "")
            + ".")


def image_name(row, settings):
    """The image the row's instance is evaluated in (registry, repository and tag), by settings (image_source,
    image_namespace, image_arch); None when images are built locally. The instance id is lower-cased,
    as image names must be (the harness does the same)."""
    pattern = template(settings)
    if pattern is None:
        return None
    if pattern == ROW:
        if not row.get("image"):
            raise ImageError(f"image_source=row, but the row of {row['instance_id']} has no `image` column: choose "
                             f"another image_source ({', '.join(PRESETS)}, or a template).")
        return qualified_name(row["image"])
    instance = row["instance_id"].lower()
    return qualified_name(pattern.format(id=instance, id_1776=instance.replace("__", "_1776_"),
                                         arch=settings.get("image_arch") or "x86_64"))


def names_each_instance(settings):
    """Whether every instance has an image of its own (else some may share one): so has each of those built locally,
    the harness's instance image."""
    pattern = template(settings)
    return pattern is None or (pattern != ROW and bool(re.search(r"{id(_1776)?}", pattern)))


def split(name):
    """(registry, repository, tag or digest) of a qualified image name."""
    registry, rest = name.split("/", 1)
    if "@" in rest:
        repository, reference = rest.split("@", 1)
    else:
        repository, reference = rest.rsplit(":", 1)
    return registry, repository, reference


# --- the registry ---

def registry_url(registry):
    """The address of a registry's v2 API: Docker Hub's is registry-1.docker.io; a loopback registry
    speaks plain HTTP (as Docker allows it to)."""
    if registry == "docker.io":
        return "https://registry-1.docker.io"
    host = registry.rsplit(":", 1)[0]
    loopback = host in ("localhost", "[::1]") or host.startswith("127.")
    return f"{'http' if loopback else 'https'}://{registry}"


def credentials(registry):
    """(user, password) that `docker login` stored for registry (in ~/.docker/config.json or its
    credential helper), or None."""
    import docker.auth

    try:
        found = docker.auth.load_config().resolve_authconfig("docker.io" if registry == "docker.io" else registry)
    except Exception:  # a credential helper that fails: pull without a login, as docker would say
        return None
    if found and found.get("Username") and found.get("Password"):
        return found["Username"], found["Password"]
    if found and found.get("username") and found.get("password"):
        return found["username"], found["password"]
    return None


class Registry:
    """A client of one registry's v2 API for the manifests of its images, with its token."""

    def __init__(self, registry):
        import requests

        self.registry, self.url, self.login = registry, registry_url(registry), credentials(registry)
        self.session = requests.Session()

    def request(self, method, repository, reference, accept=MANIFESTS):
        url = f"{self.url}/v2/{repository}/manifests/{reference}"
        response = self.session.request(method, url, headers={"Accept": accept}, timeout=REQUEST_TIMEOUT)
        if response.status_code == 401:
            self.authenticate(response.headers.get("WWW-Authenticate", ""))
            response = self.session.request(method, url, headers={"Accept": accept}, timeout=REQUEST_TIMEOUT)
        return response

    def authenticate(self, challenge):
        """Answer the registry's challenge: a bearer token from its realm (with the login, where there is one),
        or the login itself."""
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic" and self.login:
            self.session.auth = self.login
        elif scheme.lower() == "bearer":
            fields = dict(re.findall(r'(\w+)="([^"]*)"', rest))
            realm = fields.pop("realm", None)
            if realm:
                answer = self.session.get(realm, params=fields, auth=self.login, timeout=REQUEST_TIMEOUT)
                answer.raise_for_status()
                token = answer.json().get("token") or answer.json().get("access_token")
                self.session.headers["Authorization"] = f"Bearer {token}"

    def head(self, name):
        """What a HEAD of the image's manifest tells (Docker Hub counts it as no pull): its status, digest
        and the registry's limit as (pulls, window in seconds) and the pulls remaining, where it sends them."""
        _, repository, reference = split(name)
        response = self.request("HEAD", repository, reference)
        limit, window = rate_header(response.headers.get("ratelimit-limit"))
        remaining, _ = rate_header(response.headers.get("ratelimit-remaining"))
        return {"status": response.status_code, "digest": response.headers.get("Docker-Content-Digest"),
                "limit": limit, "window": window, "remaining": remaining,
                "retry_after": response.headers.get("Retry-After")}

    def download_size(self, name, arch):
        """The bytes of the image's layers for arch, from its manifests; None where reading a manifest counts as
        a pull (Docker Hub, a registry that sends a rate limit) or the registry does not say."""
        if self.registry == "docker.io" or self.head(name)["limit"] is not None:
            return None
        _, repository, reference = split(name)
        try:
            manifest = self.request("GET", repository, reference)
            if manifest.status_code != 200:
                return None
            body = manifest.json()
            for entry in body.get("manifests", []):  # an index of platforms: the arch's own manifest
                if entry.get("platform", {}).get("architecture") == PLATFORMS[arch]:
                    body = self.request("GET", repository, entry["digest"]).json()
                    break
            layers = body.get("layers")
            return sum(layer["size"] for layer in layers) + body.get("config", {}).get("size", 0) if layers else None
        except Exception:
            return None


def rate_header(value):
    """(count, window in seconds) of a `ratelimit-*` header such as `100;w=21600`; (None, None) without one."""
    match = re.match(r"\s*(\d+)(?:\s*;\s*w=(\d+))?", value or "")
    return (int(match.group(1)), int(match.group(2)) if match.group(2) else None) if match else (None, None)


# --- disk ---

def free_disk_gb(client):
    """The free GB of the Docker daemon's folder, None for a remote daemon (its disk cannot be seen from here)."""
    if os.environ.get(FREE_DISK_VARIABLE):
        return float(os.environ[FREE_DISK_VARIABLE])
    root = client.info()["DockerRootDir"]
    return shutil.disk_usage(root).free / 1e9 if os.path.isdir(root) else None


def check_disk(client, min_free_gb, needed_bytes, what):
    """Raise PullStopped (out_of_disk) when what (a pull, an evaluation) would leave less than min_free_gb."""
    free = free_disk_gb(client)
    needed = (needed_bytes or 0) / 1e9
    if free is not None and free - needed < min_free_gb:
        raise PullStopped("out_of_disk", f"{what} stopped before it started: {free:.1f} GB are free"
                    + (f", it needs {needed:.1f} GB" if needed else "") + f", and min_free_disk_gb={min_free_gb} "
                    "are to stay free; evaluations remove the images they are done with (keep_images=false)")


# --- the pace of the pulls ---

@contextlib.contextmanager
def locked(path):
    """Exclusive use of the pull ledger at path among the run's jobs on this machine."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ledger_entries(path, registry):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [e for e in map(json.loads, f) if e["registry"] == registry]


def turn(entries, limit, window, remaining, at):
    """Seconds to wait before one more pull, from the run's pulls of the registry (entries: its ledger's, each
    with `at` and `done`) and what the registry said (limit per window, remaining); 0 for now, None when no
    pull of this run leaves the window to make room (another client used the registry's pulls)."""
    if limit is None or window is None:
        return 0
    recent = sorted(e["at"] for e in entries if e["at"] > at - window)
    in_flight = sum(1 for e in entries if not e.get("done") and e["at"] > at - window)
    full = len(recent) >= limit or (remaining is not None and remaining - in_flight <= 0)
    if not full:
        return 0
    # the registry's count or ours is at the limit: room comes when our oldest pull in the window leaves it
    wait_for = recent[max(0, len(recent) - limit)] if len(recent) >= limit else (recent[0] if recent else None)
    return None if wait_for is None else max(0.0, wait_for + window - at)


def wait_turn(ledger, registry, name, max_wait, log, clock=time.time, sleep=time.sleep):
    """Wait for the registry's pace and reserve one pull in the ledger; its entry's index, to mark it done.
    Raise PullStopped (registry_rate_limit) when the wait would be longer than max_wait."""
    client = Registry(registry)
    while True:
        with locked(ledger):
            said = client.head(name)
            if said["status"] == 429:
                raise PullStopped("registry_rate_limit", f"toomanyrequests: the registry refused a HEAD of {name} (429)")
            at = clock()
            entries = ledger_entries(ledger, registry)
            wait = turn(entries, said["limit"], said["window"], said["remaining"], at)
            if wait == 0:
                with open(ledger, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"registry": registry, "image": name, "at": at, "done": False}) + "\n")
                return said
        if wait is None or wait > max_wait:
            after = "" if wait is None else f" ({math.ceil(wait)} s from now)"
            raise PullStopped("registry_rate_limit", f"pull rate limit: {registry} allows {said['limit']} pulls per "
                        f"{said['window']} s and {said['remaining']} remain; the next pull of {name} could start "
                        f"later{after} than pull_wait={max_wait} s allows")
        log(f"the registry allows {said['limit']} pulls per {said['window']} s: waiting {wait:.1f} s")
        sleep(wait)


def mark_done(ledger, name, at_least, ended=None):
    """Mark the ledger's entry of name's pull done, at the time it ended: the registry counted it at some time
    between its start and its end, so the run's window of pulls frees no sooner than the registry's."""
    with locked(ledger):
        lines = Path(ledger).read_text(encoding="utf-8").splitlines()
        entries = [json.loads(line) for line in lines]
        for entry in reversed(entries):
            if entry["image"] == name and not entry["done"] and entry["at"] >= at_least:
                entry.update(done=True, at=ended or time.time())
                break
        write_jsonl_atomic(ledger, entries)


# --- one instance's pull ---

def local_image(client, name):
    import docker

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def pull_image(client, name, settings, run_dir, log, pull):
    """Pull name with pull(client, name) at the registry's pace, unless the daemon has it; (the image, whether it
    was pulled here). Raise PullStopped for a disk too full or a registry's limit."""
    image = local_image(client, name)
    if image is not None:
        return image, False
    registry = split(name)[0]
    check_disk(client, settings["min_free_disk_gb"], Registry(registry).download_size(name, settings["image_arch"]),
               f"the pull of {name}")
    ledger = f"{run_dir}/{LEDGER}"
    started = time.time()
    wait_turn(ledger, registry, name, settings["pull_wait"], log)
    try:
        pull(client, name)
    finally:
        mark_done(ledger, name, started - 1)
    return client.images.get(name), True


def record(image, name, pulled):
    digests = [d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or [] if "@" in d]
    return {"image": name, "id": image.id, "digest": digests[0] if digests else None,
            "size_bytes": image.attrs.get("Size"), "pulled": pulled, "at": now()}


# --- the plan ---

def plan(rows, settings, run_dir, client=None):
    """What the run's pulls are: the images of the instances not pulled yet (no image.json) that the daemon does
    not have, their download size where the registry tells it, the free disk, and the registry's limit and how
    long the pulls take at it."""
    import docker

    client = client or docker.from_env(timeout=60)
    # an instance whose image.json is written has had its pull: a rerun pulls only the others
    rows = [row for row in rows if not os.path.exists(f"{run_dir}/instances/{row['instance_id']}/{RECORD}")]
    names = sorted({image_name(row, settings) for row in rows})
    to_pull = [name for name in names if local_image(client, name) is None]
    registries = {}
    for name in to_pull:
        registries.setdefault(split(name)[0], []).append(name)
    record_ = {"images": len(names), "to_pull": len(to_pull), "free_disk_gb": free_disk_gb(client),
               "min_free_disk_gb": settings["min_free_disk_gb"], "registries": []}
    for registry, pulls in sorted(registries.items()):
        entry = {"registry": registry, "to_pull": len(pulls), "download_bytes": None, "sized": 0,
                 "limit": None, "window_s": None, "remaining": None, "seconds": 0}
        try:
            client_ = Registry(registry)
            said = client_.head(pulls[0])
            entry.update(limit=said["limit"], window_s=said["window"], remaining=said["remaining"])
            sizes = [size for size in (client_.download_size(n, settings["image_arch"]) for n in pulls)
                     if size is not None]
            entry.update(download_bytes=sum(sizes) if sizes else None, sized=len(sizes))
        except Exception as e:  # the plan is news, not a gate: the pulls themselves say what is wrong
            entry["error"] = f"{type(e).__name__}: {e}"
        entry["seconds"] = pull_seconds(len(pulls), entry["limit"], entry["window_s"], entry["remaining"])
        record_["registries"].append(entry)
    return record_


def pull_seconds(count, limit, window, remaining):
    """The least time count pulls take at a limit of limit per window with remaining left now (0: no limit)."""
    if not limit or not window:
        return 0
    left = limit if remaining is None else remaining
    beyond = count - left
    return 0 if beyond <= 0 else math.ceil(beyond / limit) * window


def describe(record_):
    """The plan as the user reads it before the pulls."""
    free = record_["free_disk_gb"]
    lines = [f"Images: {record_['to_pull']} of {record_['images']} to pull ("
             f"{record_['images'] - record_['to_pull']} already here); "
             + (f"{free:.1f} GB free where Docker keeps images" if free is not None else "the daemon's disk is remote")
             + f", min_free_disk_gb={record_['min_free_disk_gb']}."]
    for entry in record_["registries"]:
        size = (f"{entry['download_bytes'] / 1e9:.2f} GB to download ({entry['sized']} of {entry['to_pull']} sized)"
                if entry["download_bytes"] is not None else "size not told by the registry"
                + (" (Docker Hub counts each manifest read as a pull)" if entry["registry"] == "docker.io" else ""))
        if entry["limit"]:
            pace = (f"it allows {entry['limit']} pulls per {duration(entry['window_s'])}, {entry['remaining']} left "
                    f"now: the pulls take at least {duration(entry['seconds'])} at that pace"
                    if entry["seconds"] else f"it allows {entry['limit']} pulls per {duration(entry['window_s'])}, "
                    f"{entry['remaining']} left now: enough for all")
        else:
            pace = "it sends no rate limit"
        if entry.get("error"):
            pace = f"it did not answer ({entry['error']})"
        lines.append(f"  {entry['registry']}: {entry['to_pull']} images, {size}; {pace}.")
    if free is not None and any(e["download_bytes"] for e in record_["registries"]):
        needed = sum(e["download_bytes"] or 0 for e in record_["registries"]) / 1e9
        if free - needed < record_["min_free_disk_gb"]:
            lines.append("  The downloads alone would leave less than min_free_disk_gb: pulls stop there (a fault, "
                         "retried by a rerun) until evaluations have removed their images (keep_images=false).")
    return "\n".join(lines)


def duration(seconds):
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:g} s"


# --- clean-up ---

def pulled_by_workflow(run_dir, name):
    """Whether the run at run_dir, or another run beside it (results/*: the models of a run of several), pulled
    the image name: its pull ledger (pull_image) names it. The ledger outlives a job that fails after the pull (on
    a cluster, a group job whose evaluation fails deletes the pull's image.json too)."""
    for path in Path(run_dir).parent.glob(f"*/{LEDGER}"):
        with locked(path):  # pulls beside it write the ledger
            if any(entry["image"] == name for entry in map(json.loads, path.read_text(encoding="utf-8").splitlines())):
                return True
    return False


def note_built(run_dir, name):
    """Note in the run's list of the images it built (images built locally) that it built name: its evaluations'
    clean-up removes it. The list outlives a job that fails after the build, so that its rerun, which finds the
    image on the daemon, still knows it for the run's."""
    path = Path(run_dir) / BUILT
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(name + "\n")


def built_by_workflow(run_dir, name):
    """Whether the run at run_dir, or another run beside it (results/*: the models of a run of several), built the
    image name here (note_built)."""
    return any(name in path.read_text(encoding="utf-8").split() for path in Path(run_dir).parent.glob(f"*/{BUILT}"))


def other_runs(run_dir, instance_id, name, record=RECORD):
    """The other run folders beside run_dir (results/*: the models of a run of several, other runs) whose
    record of the instance's image (record: the pull's image.json, or validation.json for an image built locally)
    names the image name."""
    runs = []
    for folder in sorted(Path(run_dir).parent.iterdir()):
        record_path = folder / "instances" / instance_id / record
        if folder != Path(run_dir) and record_path.is_file() and read_json(record_path)["image"] == name:
            runs.append(folder)
    return runs


def pending_users(name, instance_id, sample, samples, run_dir, ids, settings, record=RECORD):
    """The evaluations (instance, sample) other than this one that still need the image name: their
    evaluation.json is not written yet. Of this run: the instance's samples, and the instances that share the
    image; of the other runs beside it whose record (image.json, or validation.json) of the instance names it:
    their first sample and the others begun."""
    others = [instance_id]
    if not names_each_instance(settings):  # images that instances may share
        others += [i for i in ids if i != instance_id and os.path.exists(f"{run_dir}/instances/{i}/{record}")
                   and read_json(f"{run_dir}/instances/{i}/{record}")["image"] == name]
    waiting = [(i, s) for i in others for s in range(1, samples + 1) if (i, s) != (instance_id, sample)
               and not os.path.exists(f"{run_dir}/instances/{i}/{sample_folder(s)}evaluation.json")]
    for folder in other_runs(run_dir, instance_id, name, record):
        instance = folder / "instances" / instance_id
        begun = [instance] + sorted((instance / "samples").glob("*"))
        waiting += [(f"{folder.name}:{instance_id}", where.name) for where in begun
                    if not (where / "evaluation.json").is_file()]
    return waiting


def release_image(record_path, index, instance_id, sample, samples, settings, log):
    """Remove the image of the instance's record once its evaluations are done (keep_images=false): only an
    image this run pulled (the pull's image.json) or built (images built locally: the validation's
    validation.json), and only when no evaluation of the run still needs it. A failure to remove is
    no failure of the evaluation, which is written."""
    import docker

    entry = read_json(record_path)
    if not entry["image"]:  # no image: the harness has no environment for the instance
        return
    if not (entry.get("pulled") or entry.get("built")):
        log(f"{entry['image']} kept: it was on the daemon before the run")
        return
    run_dir = str(Path(record_path).parents[2])
    ids = [] if names_each_instance(settings) else list(read_json(index))
    waiting = pending_users(entry["image"], instance_id, sample, samples, run_dir, ids, settings,
                            Path(record_path).name)
    if waiting:
        log(f"{entry['image']} kept: {len(waiting)} more evaluations need it (e.g. {waiting[0][0]} sample "
            f"{waiting[0][1]})")
        return
    try:
        docker.from_env(timeout=120).images.remove(entry["image"])
        log(f"{entry['image']} removed: its evaluations are done")
    except docker.errors.ImageNotFound:
        pass
    except (docker.errors.DockerException, OSError) as e:  # e.g. a container of another run still uses it
        log(f"{entry['image']} not removed: {e}")


# --- command line ---

def settings_arguments(parser):
    parser.add_argument("--image-source", default="")
    parser.add_argument("--namespace", default="swebench", help="image namespace; empty to build images locally")
    parser.add_argument("--arch", default="x86_64", choices=ARCHES)
    parser.add_argument("--min-free-disk-gb", type=float, default=0)
    parser.add_argument("--pull-wait", type=float, default=900)


def settings_of(args):
    return {"image_source": args.image_source or None, "image_namespace": args.namespace or None,
            "image_arch": args.arch, "min_free_disk_gb": args.min_free_disk_gb, "pull_wait": args.pull_wait}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    planned = commands.add_parser("plan", help="say what the run's pulls are (each is `scripts.evaluate pull`)")
    planned.add_argument("--instances", required=True)
    planned.add_argument("--index", required=True)
    planned.add_argument("--run-dir", required=True)
    planned.add_argument("--out", required=True)
    settings_arguments(planned)
    args = parser.parse_args(argv)
    settings = settings_of(args)
    record_ = plan(read_jsonl(args.instances), settings, args.run_dir)
    print(describe(record_), file=sys.stderr)
    write_json_atomic(args.out, record_)


if __name__ == "__main__":
    main()

"""scripts/images.py without Docker: the names of the images, the pace of the pulls, the plan's words and the
clean-up's rule."""
import json
from types import SimpleNamespace

import pytest

from scripts import images

ROW = {"instance_id": "django__django-11099", "image": "swebench/sweb.eval.x86_64.django_1776_django-11099:latest"}


@pytest.mark.unit
def test_image_namespaces_are_qualified_with_their_registry():
    # Docker Hub's names, as Docker reads a name without a registry; the others as they are
    assert images.qualified("swebench") == "docker.io/swebench"
    assert images.qualified("someone/mirror") == "docker.io/someone/mirror"
    for namespace in ("docker.io/swebench", "127.0.0.1:5000/swebench", "ghcr.io/org/swebench", "localhost/swebench",
                      "registry:5000/swebench"):
        assert images.qualified(namespace) == namespace
    assert images.qualified(None) is None and images.qualified("") is None


@pytest.mark.unit
def test_the_presets_and_the_short_form_name_every_rows_image():
    name = images.image_name
    assert name(ROW, {"image_namespace": "swebench"}) == f"docker.io/{ROW['image']}"
    assert name(ROW, {"image_source": "swebench", "image_namespace": None}) == f"docker.io/{ROW['image']}"
    assert (name(ROW, {"image_source": "epoch", "image_arch": "arm64"})
            == "ghcr.io/epoch-research/swe-bench.eval.arm64.django__django-11099:latest")
    assert name(ROW, {"image_source": "row"}) == f"docker.io/{ROW['image']}"
    # the user's namespace and source win over the row's own image
    assert (name({**ROW, "image": "elsewhere/x:1"}, {"image_namespace": "127.0.0.1:5000/mirror"})
            == "127.0.0.1:5000/mirror/sweb.eval.x86_64.django_1776_django-11099:latest")
    assert name({**ROW, "image": "elsewhere/x:1"}, {"image_source": "row", "image_namespace": "swebench"}) \
        == "docker.io/elsewhere/x:1"
    # a template: the id in either spelling, lower-cased as image names must be; no tag is latest
    assert (name({"instance_id": "chartjs__Chart.js-10301"}, {"image_source": "reg.example:5000/ns/img.{id_1776}"})
            == "reg.example:5000/ns/img.chartjs_1776_chart.js-10301:latest")
    assert name(ROW, {"image_source": "ubuntu-{id}"}) == "docker.io/library/ubuntu-django__django-11099:latest"
    assert name(ROW, {"image_namespace": None}) is None  # built locally
    with pytest.raises(images.ImageError, match="has no `image` column"):
        name({"instance_id": "a__b-1"}, {"image_source": "row"})


@pytest.mark.unit
@pytest.mark.parametrize("source", ["ghcr.io/x/{arch}", "ghcr.io/x/{instance}-{id}"])
def test_a_template_that_names_no_instance_stops_the_run(source):
    config = {"image_source": source}
    with pytest.raises(images.ImageError, match=r"with \{id\} \(django__django-11099\) or \{id_1776\}"):
        images.check_template(config)
    for good in ("epoch", "row", "swebench", "ghcr.io/x/{arch}.{id}:v1", None):
        images.check_template({"image_source": good})


@pytest.mark.unit
def test_the_rate_limit_headers_are_read():
    assert images.rate_header("100;w=21600") == (100, 21600)
    assert images.rate_header("76;w=21600") == (76, 21600)
    assert images.rate_header("5") == (5, None) and images.rate_header(None) == (None, None)


@pytest.mark.unit
def test_a_pull_waits_for_its_turn_in_the_window():
    done = [{"at": 100.0, "done": True}, {"at": 104.0, "done": True}]
    assert images.turn(done, 2, 10, None, 105.0) == pytest.approx(5.0)  # the oldest leaves the window at 110
    assert images.turn(done, 3, 10, 1, 105.0) == 0  # room in our count and the registry's
    assert images.turn(done[1:], 2, 10, None, 111.0) == 0
    # the registry has none left and a pull of ours is in flight: wait for our oldest in the window
    flying = [{"at": 103.0, "done": False}]
    assert images.turn(flying, 5, 10, 1, 104.0) == pytest.approx(9.0)
    # none left, and none of ours in the window to wait for: someone else used them
    assert images.turn([], 5, 10, 0, 104.0) is None
    assert images.turn([], None, None, None, 0) == 0  # a registry without a limit


@pytest.mark.unit
def test_waiting_past_pull_wait_is_a_rate_limit_fault(tmp_path, monkeypatch):
    said = {"status": 200, "digest": None, "limit": 1, "window": 3600, "remaining": 1, "retry_after": None}
    monkeypatch.setattr(images.Registry, "__init__", lambda self, registry: None)
    monkeypatch.setattr(images.Registry, "head", lambda self, name: said)
    ledger = tmp_path / "pulls.jsonl"
    waits = []
    images.wait_turn(ledger, "r.example", "r.example/a:latest", 60, print, clock=lambda: 1000.0, sleep=waits.append)
    with pytest.raises(images.PullStopped) as e:  # the one pull of the hour is taken, by us
        images.wait_turn(ledger, "r.example", "r.example/b:latest", 60, print, clock=lambda: 1001.0,
                         sleep=waits.append)
    assert e.value.cause == "registry_rate_limit" and "(3599 s from now)" in str(e.value) and waits == []
    # a wait within pull_wait is waited, then the pull goes
    images.mark_done(ledger, "r.example/a:latest", 0, ended=1000.5)
    clock = iter([1001.0, 1000.5 + 3600])
    images.wait_turn(ledger, "r.example", "r.example/b:latest", 4000, print, clock=lambda: next(clock),
                     sleep=waits.append)
    entries = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [e["image"] for e in entries] == ["r.example/a:latest", "r.example/b:latest"] and entries[0]["done"]
    assert waits == [pytest.approx(3599.5)]


@pytest.mark.unit
def test_the_pulls_take_the_windows_beyond_what_remains():
    assert images.pull_seconds(300, 100, 21600, 100) == 2 * 21600
    assert images.pull_seconds(50, 100, 21600, 76) == 0
    assert images.pull_seconds(80, 100, 21600, 76) == 21600
    assert images.pull_seconds(80, None, None, None) == 0


@pytest.mark.unit
def test_the_plan_says_count_size_disk_and_time():
    record = {"images": 300, "to_pull": 298, "free_disk_gb": 120.0, "min_free_disk_gb": 30, "registries": [
        {"registry": "docker.io", "to_pull": 298, "download_bytes": None, "sized": 0, "limit": 100,
         "window_s": 21600, "remaining": 100, "seconds": 2 * 21600}]}
    text = images.describe(record)
    assert text.splitlines()[0] == ("Images: 298 of 300 to pull (2 already here); 120.0 GB free where Docker keeps "
                                    "images, min_free_disk_gb=30.")
    assert ("docker.io: 298 images, size not told by the registry (Docker Hub counts each manifest read as a pull); "
            "it allows 100 pulls per 6.0 h, 100 left now: the pulls take at least 12.0 h at that pace.") in text


@pytest.mark.unit
def test_an_image_is_removed_only_when_no_evaluation_still_needs_it(tmp_path):
    run = tmp_path / "r"
    each = {"image_source": "epoch"}
    # samples=2: sample 1's evaluation keeps the image while sample 2's is to do
    assert images.pending_users("x", "a__b-1", 1, 2, str(run), [], each) == [("a__b-1", 2)]
    (run / "instances" / "a__b-1" / "samples" / "2").mkdir(parents=True)
    (run / "instances" / "a__b-1" / "samples" / "2" / "evaluation.json").write_text("{}")
    assert images.pending_users("x", "a__b-1", 1, 2, str(run), [], each) == []
    # one image shared by the rows (image_source=row): another instance's evaluation to do keeps it
    shared = {"image_source": "row"}
    for instance in ("a__b-1", "a__b-2", "a__b-3"):
        (run / "instances" / instance).mkdir(parents=True, exist_ok=True)
        (run / "instances" / instance / "image.json").write_text(json.dumps({"image": "x" if instance != "a__b-3"
                                                                             else "y"}))
    ids = ["a__b-1", "a__b-2", "a__b-3"]
    assert images.pending_users("x", "a__b-1", 1, 1, str(run), ids, shared) == [("a__b-2", 1)]
    (run / "instances" / "a__b-2" / "evaluation.json").write_text("{}")
    assert images.pending_users("x", "a__b-1", 1, 1, str(run), ids, shared) == []


@pytest.mark.unit
def test_another_run_that_pulled_the_image_for_the_instance_keeps_it(tmp_path):
    """The models of a run of several each have a run folder, and pull the same images."""
    first, second = tmp_path / "results" / "openai-a", tmp_path / "results" / "openai-b"
    for run in (first, second):
        (run / "instances" / "a__b-1").mkdir(parents=True)
        (run / "instances" / "a__b-1" / "image.json").write_text(json.dumps({"image": "x", "pulled": True}))
    each = {"image_source": "epoch"}
    assert images.pending_users("x", "a__b-1", 1, 1, str(first), [], each) == [("openai-b:a__b-1", "a__b-1")]
    (second / "instances" / "a__b-1" / "evaluation.json").write_text("{}")
    assert images.pending_users("x", "a__b-1", 1, 1, str(first), [], each) == []
    # a run whose pull recorded another image does not keep this one
    (second / "instances" / "a__b-1" / "evaluation.json").unlink()
    (second / "instances" / "a__b-1" / "image.json").write_text(json.dumps({"image": "y", "pulled": True}))
    assert images.pending_users("x", "a__b-1", 1, 1, str(first), [], each) == []


@pytest.mark.unit
def test_a_pull_that_finds_an_image_its_run_pulled_before_records_it_as_the_workflows(tmp_path, monkeypatch):
    """The pull's image.json can be gone while the image is still on the daemon (on a cluster, a group job whose
    evaluation failed deletes the outputs of all its jobs): the run's pull ledger, or that of a run beside it, still
    says that the workflow pulled it, so that its evaluations' clean-up removes it."""
    import docker

    from scripts import evaluate

    row = {"instance_id": "a__b-1"}
    settings = {**evaluate.IMAGE_DEFAULTS, "image_source": "127.0.0.1:5000/{id}:latest"}
    name = images.image_name(row, settings)
    image = SimpleNamespace(id="sha256:1", attrs={"RepoDigests": [f"{name.rsplit(':', 1)[0]}@sha256:2"], "Size": 9})
    daemon = SimpleNamespace(images=SimpleNamespace(get=lambda wanted: image))
    monkeypatch.setattr(docker, "from_env", lambda **kwargs: daemon)
    first, second = tmp_path / "results" / "a", tmp_path / "results" / "b"
    out = first / "instances" / "a__b-1" / "image.json"
    out.parent.mkdir(parents=True)
    evaluate.pull_stage(row, settings, str(first), str(out))
    assert json.loads(out.read_text())["pulled"] is False  # on the daemon before any run pulled it
    (second / "images").mkdir(parents=True)
    (second / "images" / "pulls.jsonl").write_text(json.dumps({"registry": "127.0.0.1:5000", "image": name, "at": 1.0,
                                                    "done": True}) + "\n")
    evaluate.pull_stage(row, settings, str(first), str(out))
    record = json.loads(out.read_text())
    assert record["pulled"] is True and record["digest"] == "sha256:2"


@pytest.mark.unit
def test_an_image_built_locally_is_the_workflows_to_remove_and_another_models_validation_keeps_it(tmp_path):
    """Images built locally: a validation notes each image it builds in its run's images/built.txt, which the
    other runs beside it (the models of a run of several) read too; the evaluation's record of the image is the
    validation's, and another model whose validation of the instance names the image keeps it until that
    model's evaluation is written."""
    first, second = tmp_path / "results" / "openai-a", tmp_path / "results" / "openai-b"
    name = "sweb.eval.x86_64.a__b-1:latest"
    assert not images.built_by_workflow(str(first), name)
    images.note_built(str(first), name)
    assert images.built_by_workflow(str(first), name) and images.built_by_workflow(str(second), name)
    assert not images.built_by_workflow(str(first), "sweb.eval.x86_64.a__b-2:latest")
    for run in (first, second):
        (run / "instances" / "a__b-1").mkdir(parents=True)
        (run / "instances" / "a__b-1" / "validation.json").write_text(json.dumps({"image": name, "built": True}))
    (first / "instances" / "a__b-1" / "evaluation.json").write_text("{}")
    messages = []
    local = {"image_namespace": None}
    images.release_image(first / "instances" / "a__b-1" / "validation.json", None, "a__b-1", 1, 1, local,
                         messages.append)
    assert messages == [f"{name} kept: 1 more evaluations need it (e.g. openai-b:a__b-1 sample a__b-1)"]
    # an image that was on the daemon before the run is the user's
    (first / "instances" / "a__b-1" / "validation.json").write_text(json.dumps({"image": name, "built": False}))
    images.release_image(first / "instances" / "a__b-1" / "validation.json", None, "a__b-1", 1, 1, local,
                         messages.append)
    assert messages[-1] == f"{name} kept: it was on the daemon before the run"


@pytest.mark.unit
def test_the_head_of_a_manifest_logs_in_as_docker_login_did_and_reads_the_limit(tmp_path, monkeypatch):
    """A registry that answers 401 with a bearer challenge (as Docker Hub does): the token is asked from its
    realm with the login `docker login` stored, and the HEAD's rate-limit headers are read."""
    import base64

    from loopback import LoopbackServer, QuietHandler

    asked = []

    class Handler(QuietHandler):
        def do_GET(self):
            asked.append((self.path, self.headers.get("Authorization")))
            if self.path.startswith("/token?"):
                good = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"me:secret").decode()
                body = json.dumps({"token": "t0k"} if good else {"details": "incorrect username or password"})
                self.send_response(200 if good else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        def do_HEAD(self):
            asked.append((self.path, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != "Bearer t0k":
                self.send_response(401)
                self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{port}/token",'
                                 'service="registry.example",scope="repository:ns/img:pull"')
            else:
                self.send_response(200)
                self.send_header("Docker-Content-Digest", "sha256:abc")
                self.send_header("ratelimit-limit", "200;w=21600")
                self.send_header("ratelimit-remaining", "199;w=21600")
            self.send_header("Content-Length", "0")
            self.end_headers()

    with LoopbackServer(Handler) as server:
        port = server.httpd.server_address[1]
        registry = f"127.0.0.1:{port}"
        (tmp_path / "config.json").write_text(json.dumps(
            {"auths": {registry: {"auth": base64.b64encode(b"me:secret").decode()}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        said = images.Registry(registry).head(f"{registry}/ns/img:latest")
        assert said == {"status": 200, "digest": "sha256:abc", "limit": 200, "window": 21600, "remaining": 199,
                        "retry_after": None}
        assert asked[1][0] == "/token?service=registry.example&scope=repository%3Ans%2Fimg%3Apull"
        # without a login: the token is refused, and so is the HEAD
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
        with pytest.raises(Exception, match="401"):
            images.Registry(registry).head(f"{registry}/ns/img:latest")

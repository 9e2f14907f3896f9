"""The wmill clients retry what is transient and nothing else (docs/runners.md, "Retries"), against a real
HTTPS server that fails on cue (tests/unit/flaky_apiserver.py): the Python client (wmill/kube_api.py,
wmill/jobs.py) in this process and as a run's interpreter sees it, the TypeScript client (windmill-client/
jobs.ts) under Bun and Deno. A create whose answer is lost makes one object, never two."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubemill.runners.runtimes import find_interpreter

from tests.unit.flaky_apiserver import WEBHOOK_DOWN, FlakyApiServer, make_certificate
from tests.unit.test_runners_wmill_kube import kube_api

REPO = Path(__file__).resolve().parents[2]
NS = "team"
RUNS = f"/apis/kubemill.dev/v1alpha1/namespaces/{NS}/scriptruns"
RESOURCES = f"/apis/kubemill.dev/v1alpha1/namespaces/{NS}/resources"
PARENT_UID = "0b8e6f0e-parent"


@pytest.fixture(scope="module")
def sa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A service-account directory: the server's certificate as ca.crt, a token naming a ServiceAccount."""
    directory = tmp_path_factory.mktemp("sa")
    make_certificate(directory)
    claims = base64.urlsafe_b64encode(json.dumps({"sub": f"system:serviceaccount:{NS}:bot"}).encode())
    (directory / "token").write_text(f"eyJhbGciOiJSUzI1NiJ9.{claims.decode().rstrip('=')}.sig")
    return directory


@pytest.fixture
def server(sa_dir: Path) -> Iterator[FlakyApiServer]:
    started = FlakyApiServer(sa_dir / "ca.crt", sa_dir / "tls.key")
    yield started
    started.close()


def api_for(port: int, sa_dir: Path, retry_for: float = 10.0, sleep: Any = time.sleep, **kw: Any) -> Any:
    creds = kube_api.Credentials(
        f"https://127.0.0.1:{port}", str(sa_dir / "token"), str(sa_dir / "ca.crt"), NS, "bot"
    )
    return kube_api.KubeApi(creds, retry_for=retry_for, sleep=sleep, **kw)


SPEC = {"path": "u/bot/db", "resourceType": "postgresql", "value": {"host": "db"}}


# --- pure parts --------------------------------------------------------------------------------------------


def test_what_is_transient() -> None:
    assert all(kube_api.transient_answer(s, "") for s in (502, 503, 504))
    assert kube_api.transient_answer(500, json.dumps({"message": WEBHOOK_DOWN}))
    for status in (400, 401, 403, 404, 409, 422, 429, 501):
        assert not kube_api.transient_answer(status, WEBHOOK_DOWN), status
    assert not kube_api.transient_answer(500, '{"message": "Internal error occurred: etcdserver: boom"}')
    assert kube_api.transient_error(ConnectionRefusedError()) and kube_api.transient_error(TimeoutError())
    assert kube_api.transient_error(urllib.error.URLError(ConnectionResetError()))
    assert kube_api.transient_error(ssl.SSLEOFError())
    finals = (ValueError(), PermissionError(), ssl.SSLCertVerificationError(), urllib.error.URLError(""))
    for final in finals:
        assert not kube_api.transient_error(final), final


def test_the_backoff_doubles_up_to_a_bound_with_jitter() -> None:
    assert [kube_api.backoff(n, lambda: 1.0) for n in (1, 2, 3, 6, 30)] == [0.2, 0.4, 0.8, 5.0, 5.0]
    assert [kube_api.backoff(n, lambda: 0.0) for n in (1, 2, 6)] == [0.1, 0.2, 2.5]


def test_the_deadline_comes_from_the_environment_and_a_bad_value_is_refused() -> None:
    assert kube_api.retry_seconds({}) == 60
    assert kube_api.retry_seconds({"KUBEMILL_API_RETRY_SECONDS": "5"}) == 5
    assert kube_api.retry_seconds({"KUBEMILL_API_RETRY_SECONDS": "0"}) == 0
    for bad in ("soon", "-1", "1e9"):
        with pytest.raises(ValueError, match="KUBEMILL_API_RETRY_SECONDS"):
            kube_api.retry_seconds({"KUBEMILL_API_RETRY_SECONDS": bad})


# --- the Python client against the server ------------------------------------------------------------------


@pytest.mark.parametrize("failures", [["drop", "drop"], ["503", "503", "503"], ["webhook", "drop", "503"]])
def test_transient_failures_are_retried_until_an_answer(
    server: FlakyApiServer, sa_dir: Path, failures: list[str]
) -> None:
    server.plan = list(failures)
    api = api_for(server.port, sa_dir)
    assert api.create("resource", "u/bot/db", dict(SPEC))["metadata"]["name"] == "u-bot-db"
    assert len(server.objects) == 1
    assert len(server.requests) == 2 + len(failures)  # the find and the create, and one per failure


def test_a_refused_connection_is_retried_until_the_server_listens(sa_dir: Path) -> None:
    server = FlakyApiServer(sa_dir / "ca.crt", sa_dir / "tls.key", start_later=True)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:  # refused three times: the API server comes back
            server.listen()
        time.sleep(seconds)

    try:
        api = api_for(server.port, sa_dir, sleep=pause)
        assert api.list("resource") == []
        assert len(pauses) == 3 and server.requests == [("GET", RESOURCES)]
    finally:
        server.close()


def test_a_slow_answer_times_out_and_is_retried(server: FlakyApiServer, sa_dir: Path) -> None:
    server.plan, server.slow_seconds = ["slow"], 4.0
    api = api_for(server.port, sa_dir, attempt_timeout=1.0)
    started = time.monotonic()
    assert api.list("resource") == []
    assert time.monotonic() - started < 3.5 and len(server.requests) == 2


@pytest.mark.parametrize(
    ("answer", "error", "text"),
    [
        ("403", "PermissionDenied", "bot may not create resources.kubemill.dev"),
        ("500", "ApiError", "failed with HTTP 500: Internal error occurred: etcdserver: boom"),
    ],
)
def test_a_final_refusal_fails_at_once(
    server: FlakyApiServer, sa_dir: Path, answer: str, error: str, text: str
) -> None:
    server.plan = ["serve", answer, answer, answer]  # the find, then the create
    pauses: list[float] = []
    api = api_for(server.port, sa_dir, sleep=pauses.append)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked below, by name
        api.create("resource", "u/bot/db", dict(SPEC))
    assert type(caught.value).__name__ == error and text in str(caught.value)
    assert pauses == [] and server.requests[-1] == ("POST", RESOURCES) and server.objects == {}


def test_a_server_that_never_recovers_fails_after_the_deadline_naming_the_call(
    server: FlakyApiServer, sa_dir: Path
) -> None:
    server.plan = ["503"] * 1000
    api = api_for(server.port, sa_dir, retry_for=1.0)
    started = time.monotonic()
    with pytest.raises(kube_api.Unavailable) as caught:
        api.find("resource", "u/bot/db")
    took = time.monotonic() - started
    message = str(caught.value)
    assert 0.3 < took < 2.0, took
    for part in ("list resources in namespace 'team'", "'u/bot/db'", f"GET {RESOURCES}?fieldSelector=",
                 "attempts; KUBEMILL_API_RETRY_SECONDS=1", "the last: HTTP 503"):  # fmt: skip
        assert part in message, message
    assert len(server.requests) >= 3


def test_a_create_whose_answer_was_lost_makes_one_object(server: FlakyApiServer, sa_dir: Path) -> None:
    server.plan = ["serve", "lose"]  # the find, then the create carried out and its answer lost
    api = api_for(server.port, sa_dir)
    created = api.create("resource", "u/bot/db", dict(SPEC))
    assert created["metadata"]["name"] == "u-bot-db" and created["metadata"]["uid"]
    assert list(server.objects) == [f"{RESOURCES}/u-bot-db"]


def test_a_retried_create_does_not_adopt_another_paths_object(server: FlakyApiServer, sa_dir: Path) -> None:
    """The plain name is taken by another path's object while the create is retried: not adopted, the
    create goes on under the name with the path's hash."""
    other = {"metadata": {"name": "u-bot-db"}, "spec": {**SPEC, "path": "u/bot-db"}}
    server.objects[f"{RESOURCES}/u-bot-db"] = other
    server.plan = ["serve", "503"]
    created = api_for(server.port, sa_dir).create("resource", "u/bot/db", dict(SPEC))
    assert created["metadata"]["name"].startswith("u-bot-db-") and created["spec"]["path"] == "u/bot/db"
    assert server.objects[f"{RESOURCES}/u-bot-db"] is other and len(server.objects) == 2


# --- as a run sees it: wmill.run_script_async in the runner's Python, windmill-client under Bun and Deno ----


def run_env(server: FlakyApiServer, sa_dir: Path, retry_seconds: str = "10") -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(server.port),
        "KUBEMILL_SERVICEACCOUNT_DIR": str(sa_dir),
        "KUBEMILL_SERVICE_ACCOUNT": "bot",
        "KUBEMILL_API_RETRY_SECONDS": retry_seconds,
        "WM_WORKSPACE": NS,
        "WM_JOB_ID": PARENT_UID,
        "KUBEMILL_RUN_NAME": "parent",
        "DENO_DIR": str(Path(os.environ.get("KUBEMILL_HOME") or Path.home() / ".cache/kubemill") / "deno"),
    }


PYTHON = "import wmill\nprint(wmill.run_script_async('f/team/child', args={'n': 1, 'a': 'x'}))\n"
TYPESCRIPT = (
    f'import {{ runScriptAsync }} from "{REPO}/runner_images/deno/windmill-client/jobs.ts";\n'
    'console.log(await runScriptAsync("f/team/child", { n: 1, a: "x" }));\n'
)


def start_child(language: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if language == "python3":
        command = [sys.executable, "-c", PYTHON]
        env = {**env, "PYTHONPATH": str(REPO / "runner_images/python3")}
    else:
        (tmp_path / "start.ts").write_text(TYPESCRIPT)
        interpreter = find_interpreter(language)
        command = [interpreter, "run", *(["-A"] if language == "deno" else []), str(tmp_path / "start.ts")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)


LANGUAGES = ["python3", "bun", "deno"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_child_run_whose_create_answer_was_lost_is_started_once(
    server: FlakyApiServer, sa_dir: Path, tmp_path: Path, language: str
) -> None:
    server.plan = ["webhook", "lose", "drop", "503"]
    done = start_child(language, run_env(server, sa_dir), tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(server.objects) == 1, server.objects
    (key, child), = server.objects.items()  # fmt: skip
    assert done.stdout.strip() == child["metadata"]["name"] == key.rsplit("/", 1)[-1]
    assert child["metadata"]["name"].startswith("child-")
    assert child["metadata"]["labels"] == {"kubemill.dev/parent-run-uid": PARENT_UID}
    assert child["spec"] == {"args": {"a": "x", "n": 1}, "scriptPath": "f/team/child"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_taken_child_name_is_not_adopted(
    server: FlakyApiServer, sa_dir: Path, tmp_path: Path, language: str
) -> None:
    """A retried create that meets a 409 adopts only a run of this parent holding what it sent: here the
    object at that name is another parent's, so a second name is drawn."""

    def squatter(name: str) -> None:
        server.objects[f"{RUNS}/{name}"] = {
            "metadata": {"name": name, "labels": {"kubemill.dev/parent-run-uid": "someone-else"}},
            "spec": {"args": {"a": "x", "n": 1}, "scriptPath": "f/team/child"},
        }

    original = server.serve

    def serve(method: str, target: str, body: Any) -> tuple[int, dict[str, Any]]:
        if method == "POST" and len(server.objects) == 0:
            squatter(body["metadata"]["name"])  # taken while the first attempt's answer was lost
        return original(method, target, body)

    server.serve = serve  # type: ignore[method-assign]
    server.plan = ["drop"]
    done = start_child(language, run_env(server, sa_dir), tmp_path)
    assert done.returncode == 0, done.stderr
    parents = {
        o["metadata"]["name"]: o["metadata"]["labels"]["kubemill.dev/parent-run-uid"]
        for o in server.objects.values()
    }
    mine = [{"metadata": {"name": n}} for n, uid in parents.items() if uid == PARENT_UID]
    assert [o["metadata"]["name"] for o in mine] == [done.stdout.strip()] and len(server.objects) == 2


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_run_fails_at_once_on_403_and_after_the_deadline_when_the_api_never_answers(
    server: FlakyApiServer, sa_dir: Path, tmp_path: Path, language: str
) -> None:
    server.plan = ["403"]
    refused = start_child(language, run_env(server, sa_dir), tmp_path)
    assert refused.returncode != 0 and "PermissionDenied" in refused.stderr, refused.stderr
    assert "may not create" in refused.stderr and server.requests == [("POST", RUNS)]
    server.plan = ["503"] * 1000
    started = time.monotonic()
    gone = start_child(language, run_env(server, sa_dir, retry_seconds="1.5"), tmp_path)
    took = time.monotonic() - started
    assert gone.returncode != 0 and "Unavailable" in gone.stderr, gone.stderr
    assert "got no answer but transient failures" in gone.stderr and f"POST {RUNS}" in gone.stderr
    assert "create" in gone.stderr and "f/team/child" in gone.stderr and "HTTP 503" in gone.stderr
    assert took < 30 and len(server.requests) >= 4, took
    assert server.objects == {}

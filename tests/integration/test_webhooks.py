"""Webhook run endpoints of `kubemill ui` on the real control plane: each auth outcome, HttpTrigger refusals,
and a burst of 500 calls creating exactly 500 runs.

The server runs as a subprocess, as deployed: it is given only where the API server is (a kubeconfig with no
credentials), so every run it creates for a person is created with that person's token.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from kubemill.models.triggers import SignatureSpec
from kubemill.ui.signing import sign

from tests.conftest import Cluster, controlplane, wait_for
from tests.operator_harness import Operator

REPO = Path(__file__).resolve().parents[2]
SCRIPT_PATH = "f/hooks/double"
FLOW_PATH = "f/hooks/flow"
KEY = b"test-webhook-secret"
PRE_FLOW_PATH = "f/hooks/preprocessed"
PREPROCESSOR = {
    "id": "preprocessor",
    "value": {
        "type": "rawscript",
        "language": "python3",
        "content": "def preprocessor(event: dict):\n    return event['body']\n",
        "input_transforms": {},
    },
}

pytestmark = pytest.mark.cluster


@dataclass
class UiServer:
    """`kubemill ui` as a subprocess; people's tokens come with each request, the triggers' identity with
    `trigger_kubeconfig`."""

    cluster: Cluster
    workdir: Path
    trigger_kubeconfig: Path | None = None
    port: int = field(default_factory=controlplane.free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> None:
        location = self.workdir / "location.kubeconfig"
        location.write_text(json.dumps(location_only_kubeconfig(self.cluster)))
        argv = [str(REPO / ".venv/bin/kubemill"), "ui", "--host=127.0.0.1", f"--port={self.port}"]
        argv += [f"--kubeconfig={location}", "--wait-seconds=60", *extra]
        if self.trigger_kubeconfig is not None:
            argv += ["--triggers", f"--trigger-kubeconfig={self.trigger_kubeconfig}"]
        with (self.workdir / "ui.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.cluster.env(), start_new_session=True
            )
        proc = self.proc
        wait_for(lambda: proc.poll() is not None or http(f"{self.url}/healthz")[0] == 200, 30, "kubemill ui")
        assert proc.poll() is None, self.log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def log(self) -> str:
        return (self.workdir / "ui.log").read_text(errors="replace")


def location_only_kubeconfig(cluster: Cluster) -> dict[str, Any]:
    """The API server's address and CA, and no credentials at all."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    name = admin["clusters"][0]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "nobody", "user": {}}],
        "contexts": [{"name": "ui", "context": {"cluster": name, "user": "nobody"}}],
        "current-context": "ui",
    }


def http(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None, method: str = "POST"
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def token(cluster: Cluster, user: str) -> str:
    return str(cluster.plane.tokens[user])


def bearer(cluster: Cluster, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(cluster, user)}", "Content-Type": "application/json"}


def install_crds_and_roles(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "config" / "rbac"))
    cluster.kubectl(
        "wait", "--for", "condition=established", "--timeout=60s", "crd/httptriggers.kubemill.dev"
    )


def webhooks_identity(cluster: Cluster, namespace: str, workdir: Path) -> Path:
    """ServiceAccount kubemill-webhooks bound to its ClusterRole in `namespace` only; its kubeconfig."""
    cluster.kubectl("create", "serviceaccount", "kubemill-webhooks", "-n", namespace)
    cluster.kubectl(
        "create",
        "rolebinding",
        "kubemill-webhooks",
        "--clusterrole=kubemill-webhooks",
        f"--serviceaccount={namespace}:kubemill-webhooks",
        "-n",
        namespace,
    )
    sa_token = cluster.kubectl("create", "token", "kubemill-webhooks", "-n", namespace).stdout.strip()
    config = location_only_kubeconfig(cluster)
    config["users"] = [{"name": "nobody", "user": {"token": sa_token}}]
    path = workdir / "webhooks.kubeconfig"
    path.write_text(json.dumps(config))
    return path


def definitions(namespace: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Script",
            "metadata": {"name": "double", "namespace": namespace},
            "spec": {
                "path": SCRIPT_PATH,
                "language": "python3",
                "content": "def main(x: int = 1):\n    print('doubling', x)\n    return {'doubled': x * 2}\n",
            },
        },
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Flow",
            "metadata": {"name": "flow", "namespace": namespace},
            "spec": {"path": FLOW_PATH, "value": {"modules": [{"id": "a", "value": {"type": "identity"}}]}},
        },
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Flow",
            "metadata": {"name": "preprocessed", "namespace": namespace},
            "spec": {"path": PRE_FLOW_PATH, "value": {"preprocessor_module": PREPROCESSOR, "modules": []}},
        },
    ]


@pytest.fixture(scope="module")
def hooks(cluster: Cluster) -> Iterator[tuple[UiServer, str]]:
    """A namespace where alice and bob may edit and mallory may only view, and a UI server serving it."""
    install_crds_and_roles(cluster)
    namespace = f"hooks-{os.urandom(3).hex()}"
    cluster.kubectl("create", "namespace", namespace)
    for user, role in (("alice", "edit"), ("bob", "edit"), ("mallory", "view")):
        cluster.kubectl(
            "create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}", f"--user={user}@example.com",
            "-n", namespace,
        )  # fmt: skip
    for manifest in definitions(namespace):
        cluster.apply(manifest)
    cluster.kubectl(
        "create", "secret", "generic", "signing", f"--from-literal=key={KEY.decode()}", "-n", namespace
    )
    workdir = Path(tempfile.mkdtemp(prefix="kubemill-ui-"))
    server = UiServer(cluster, workdir, webhooks_identity(cluster, namespace, workdir))
    server.start()
    try:
        yield server, namespace
    finally:
        server.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def runs(
    cluster: Cluster, namespace: str, kind: str = "scriptruns", selector: str = ""
) -> list[dict[str, Any]]:
    args = [kind, "-n", namespace] + (["-l", selector] if selector else [])
    items: list[dict[str, Any]] = cluster.get(*args)["items"]
    return items


# --- Windmill-compatible endpoints ---------------------------------------------------------------------


def test_a_script_run_is_created_as_the_caller_and_its_name_returned(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    server, ns = hooks
    status, name = http(
        f"{server.url}/api/w/{ns}/jobs/run/p/{SCRIPT_PATH}", b'{"x": 21}', bearer(cluster, "alice")
    )
    assert status == 201, name
    run = cluster.get("scriptrun", name, "-n", ns)
    assert run["spec"] == {"scriptPath": SCRIPT_PATH, "args": {"x": 21}}
    # Kubernetes recorded alice's request: her field manager entry was written with her token.
    assert name.startswith("double-")


def test_a_flow_run_is_created_from_the_f_endpoint(cluster: Cluster, hooks: tuple[UiServer, str]) -> None:
    server, ns = hooks
    status, name = http(f"{server.url}/api/w/{ns}/jobs/run/f/{FLOW_PATH}", b"{}", bearer(cluster, "bob"))
    assert status == 201, name
    assert cluster.get("flowrun", name, "-n", ns)["spec"]["flowPath"] == FLOW_PATH


def test_a_webhook_run_of_a_flow_with_a_preprocessor_carries_windmills_event_without_credentials(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    server, ns = hooks
    url = f"{server.url}/api/w/{ns}/jobs/run/f/{PRE_FLOW_PATH}?source=shop&token={token(cluster, 'alice')}"
    status, name = http(url, b'{"order": 7}', {"X-Shop": "yes", **bearer(cluster, "bob")})
    assert status == 201, name
    spec = cluster.get("flowrun", name, "-n", ns)["spec"]
    event = spec["triggerEvent"]
    assert (spec["args"], event["kind"], event["body"], event["raw_string"]) == (
        {"order": 7}, "webhook", {"order": 7}, '{"order": 7}'
    )  # fmt: skip
    assert event["query"] == {"source": "shop"} and event["headers"]["x-shop"] == "yes"
    assert "authorization" not in event["headers"]
    status, plain = http(f"{server.url}/api/w/{ns}/jobs/run/f/{FLOW_PATH}", b"{}", bearer(cluster, "bob"))
    assert status == 201 and "triggerEvent" not in cluster.get("flowrun", plain, "-n", ns)["spec"]


def test_the_token_may_come_as_a_query_parameter_like_windmill(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    server, ns = hooks
    url = f"{server.url}/api/w/{ns}/jobs/run/p/{SCRIPT_PATH}?token={token(cluster, 'alice')}"
    status, name = http(url, b'{"x": 1}')
    assert status == 201, name


def test_every_refusal_has_its_status_and_creates_nothing(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    server, ns = hooks
    before = len(runs(cluster, ns))
    url = f"{server.url}/api/w/{ns}/jobs/run/p/{SCRIPT_PATH}"
    no_token = http(url, b"{}", {"Content-Type": "application/json"})
    assert no_token[0] == 401 and "bearer token is required" in no_token[1]
    bad_token = http(url, b"{}", {"Authorization": "Bearer not-a-token"})
    assert bad_token[0] == 401, bad_token
    forbidden = http(url, b"{}", bearer(cluster, "mallory"))
    assert forbidden[0] == 403, forbidden
    assert "mallory@example.com" in forbidden[1] and "cannot create resource" in forbidden[1]
    other_namespace = http(
        f"{server.url}/api/w/default/jobs/run/p/{SCRIPT_PATH}", b"{}", bearer(cluster, "alice")
    )
    assert other_namespace[0] == 403, other_namespace
    missing = http(f"{server.url}/api/w/{ns}/jobs/run/p/f/hooks/nothing", b"{}", bearer(cluster, "alice"))
    assert missing[0] == 404 and "no Script with path f/hooks/nothing" in missing[1]
    not_json = http(url, b"x=1", bearer(cluster, "alice"))
    assert not_json[0] == 400 and "must be JSON" in not_json[1]
    not_object = http(url, b"[1]", bearer(cluster, "alice"))
    assert not_object[0] == 400
    assert len(runs(cluster, ns)) == before


def test_a_burst_of_500_calls_creates_exactly_500_runs(cluster: Cluster, hooks: tuple[UiServer, str]) -> None:
    server, ns = hooks
    url = f"{server.url}/api/w/{ns}/jobs/run/p/{SCRIPT_PATH}"
    headers = bearer(cluster, "alice")

    async def burst() -> list[tuple[int, str]]:
        limit = asyncio.Semaphore(50)
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> tuple[int, str]:
                async with limit, session.post(url, json={"x": i}, headers=headers) as response:
                    return response.status, await response.text()

            return await asyncio.gather(*(one(i) for i in range(500)))

    start = time.monotonic()
    answers = asyncio.run(burst())
    elapsed = time.monotonic() - start
    assert [s for s, _ in answers] == [201] * 500, [a for a in answers if a[0] != 201][:3]
    names = {n for _, n in answers}
    assert len(names) == 500
    created = {
        r["metadata"]["name"]: r["spec"]["args"]["x"]
        for r in runs(cluster, ns)
        if r["metadata"]["name"] in names
    }
    assert len(created) == 500 and sorted(created.values()) == list(range(500))
    print(f"500 runs in {elapsed:.1f}s ({500 / elapsed:.0f}/s)")
    # With the session's operator running, these 500 runs would otherwise keep the node busy for minutes and
    # starve the tests after this one.
    cluster.kubectl(
        "delete", "scriptruns", "-n", ns, *sorted(names), "--wait=false", "--ignore-not-found", timeout=300
    )


# --- HttpTriggers -------------------------------------------------------------------------------------------


def trigger(namespace: str, name: str, route: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "HttpTrigger",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "route": route,
            "scriptPath": SCRIPT_PATH,
            "secretRef": {"name": "signing", "key": "key"},
            **spec,
        },
    }


def test_a_signed_delivery_creates_one_run_with_the_body_and_chosen_headers_as_args(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    server, ns = hooks
    cluster.apply(
        trigger(ns, "shop", "shop/orders", signature={"format": "stripe"}, bodyArg="order",
                headers=[{"name": "X-Shop-Event", "arg": "event"}])
    )  # fmt: skip
    body = b'{"order_id": "A-1", "total": 12.5}'
    headers = {
        **sign(SignatureSpec(format="stripe"), KEY, body, time.time()),
        "X-Shop-Event": "order.created",
    }
    status, answer = http(f"{server.url}/api/h/{ns}/shop/orders", body, headers)
    assert status == 201, answer
    name = json.loads(answer)["run"]
    run = cluster.get("scriptrun", name, "-n", ns)
    assert run["spec"]["args"] == {"order": {"order_id": "A-1", "total": 12.5}, "event": "order.created"}
    assert run["metadata"]["ownerReferences"][0]["kind"] == "HttpTrigger"
    assert run["metadata"]["labels"]["kubemill.dev/http-trigger"] == "shop"
    # The same delivery again (a replay inside the window) is refused and creates nothing.
    again = http(f"{server.url}/api/h/{ns}/shop/orders", body, headers)
    assert again[0] == 409 and "already received" in again[1]
    assert len(runs(cluster, ns, selector="kubemill.dev/http-trigger=shop")) == 1


def test_a_delivery_to_a_flow_carries_an_http_event_with_only_the_chosen_headers(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    server, ns = hooks
    cluster.apply(
        trigger(ns, "pre", "shop/pre", scriptPath=None, flowPath=PRE_FLOW_PATH,
                signature={"format": "stripe"}, headers=[{"name": "X-Shop-Event", "arg": "kind"}])
    )  # fmt: skip
    body = b'{"order": 8}'
    headers = {**sign(SignatureSpec(format="stripe"), KEY, body, time.time()), "X-Shop-Event": "paid"}
    status, answer = http(f"{server.url}/api/h/{ns}/shop/pre", body, headers)
    assert status == 201, answer
    event = cluster.get("flowrun", json.loads(answer)["run"], "-n", ns)["spec"]["triggerEvent"]
    assert event == {
        "kind": "http", "body": {"order": 8}, "raw_string": '{"order": 8}', "query": {},
        "headers": {"x-shop-event": "paid"}, "route": "shop/pre", "path": "shop/pre", "method": "POST",
        "params": {},
    }  # fmt: skip


def test_unsigned_wrongly_signed_replayed_and_oversized_deliveries_are_refused(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    server, ns = hooks
    cluster.apply(trigger(ns, "git", "git/push", signature={"format": "github"}, maxBodyBytes=1024))
    cluster.apply(trigger(ns, "slack", "slack/cmd", signature={"format": "slack"}))
    url = f"{server.url}/api/h/{ns}/git/push"
    body = b'{"ref": "refs/heads/main"}'
    github = SignatureSpec(format="github")
    unsigned = http(url, body, {"Content-Type": "application/json"})
    assert unsigned[0] == 401 and "missing signature header X-Hub-Signature-256" in unsigned[1]
    wrong = http(url, body, sign(github, b"another key", body, time.time()))
    assert wrong[0] == 401 and "wrong signature" in wrong[1]
    big = b'{"pad": "' + b"x" * 2000 + b'"}'
    oversized = http(url, big, sign(github, KEY, big, time.time()))
    assert oversized[0] == 413, oversized
    slack = SignatureSpec(format="slack")
    stale = http(f"{server.url}/api/h/{ns}/slack/cmd", body, sign(slack, KEY, body, time.time() - 600))
    assert stale[0] == 401 and "possible replay" in stale[1]
    unknown = http(f"{server.url}/api/h/{ns}/no/such/route", body, sign(github, KEY, body, time.time()))
    assert unknown[0] == 404
    assert runs(cluster, ns, selector="kubemill.dev/http-trigger in (git,slack)") == []
    accepted = http(url, body, sign(github, KEY, body, time.time(), delivery="d-1"))
    assert accepted[0] == 201, accepted
    # the same signed body again, with a fresh X-GitHub-Delivery (which GitHub does not sign): a replay
    replayed = http(url, body, sign(github, KEY, body, time.time(), delivery="d-2-forged"))
    assert replayed[0] == 409 and "already received" in replayed[1], replayed
    assert len(runs(cluster, ns, selector="kubemill.dev/http-trigger=git")) == 1


def test_deliveries_over_the_rate_limit_get_429_and_create_nothing(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    server, ns = hooks
    cluster.apply(trigger(ns, "limited", "limited", rateLimit={"requestsPerSecond": 1, "burst": 3}))
    spec = SignatureSpec()
    answers = []
    started = time.monotonic()
    for i in range(6):
        body = json.dumps({"x": i}).encode()
        answers.append(http(f"{server.url}/api/h/{ns}/limited", body, sign(spec, KEY, body, time.time())))
    elapsed = time.monotonic() - started
    statuses = [s for s, _ in answers]
    # the burst, plus what the bucket refilled meanwhile (1 a second: a slow machine refills more)
    allowed = 3 + math.ceil(elapsed)
    assert 3 <= statuses.count(201) <= allowed, (elapsed, answers)
    assert statuses.count(429) == 6 - statuses.count(201), answers
    assert statuses[:3] == [201, 201, 201]
    created = runs(cluster, ns, selector="kubemill.dev/http-trigger=limited")
    assert len(created) == statuses.count(201)


def test_without_the_trigger_identity_nothing_reads_secrets_for_people(
    cluster: Cluster, hooks: tuple[UiServer, str]
) -> None:
    """People's tokens never borrow the webhook identity, and the UI serves only kubemill kinds."""
    server, ns = hooks
    status, answer = http(f"{server.url}/api/ui/ns/{ns}/secrets", None, bearer(cluster, "mallory"))
    assert status == 404  # not a kind the UI serves
    status, answer = http(f"{server.url}/api/ui/ns/{ns}/scriptruns", None, bearer(cluster, "mallory"))
    assert status == 200  # mallory may view
    status, answer = http(f"{server.url}/api/ui/ns/default/scriptruns", None, bearer(cluster, "mallory"))
    assert status == 403 and "cannot list resource" in answer


# --- with the operator: waiting for results, reading logs ------------------------------------------------


def kubemill_object(kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace}
    return {"apiVersion": "kubemill.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def finished_scriptrun(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = cluster.get("scriptrun", name, "-n", namespace)
        return run if run.get("status", {}).get("phase") in ("Succeeded", "Failed") else None

    found: dict[str, Any] = wait_for(finished, 120, f"ScriptRun {name} to finish")
    return found


PRE_SCRIPT = """
def preprocessor(event: dict, KUBEMILL_ENTRYPOINT: str = "", _ENTRYPOINT_OVERRIDE: str = ""):
    return {"x": event["body"]["n"] * 3, "how": event["kind"] + ":" + event["query"].get("via", "")}


def main(x: int, how: str = "direct"):
    return {"x": x, "how": how}
"""


def test_a_webhook_run_of_a_script_with_a_preprocessor_runs_it_then_main_and_args_choose_nothing(
    cluster: Cluster, hooks: tuple[UiServer, str], running_operator: Operator
) -> None:
    """Windmill: a Script that defines `preprocessor`, started by a webhook, runs `preprocessor(event)` and
    then `main(**result)`; started any other way it runs `main` on its args. Neither the event (body, query,
    headers) nor a run's args can switch the entrypoint, and a ScriptRun cannot ask for one outside a flow."""
    server, ns = hooks
    script = {"path": "f/hooks/pre_script", "language": "python3", "content": PRE_SCRIPT}
    cluster.apply(kubemill_object("Script", "pre-script", ns, script))
    overrides = {"KUBEMILL_ENTRYPOINT": "main", "_ENTRYPOINT_OVERRIDE": "main"}
    query = "via=hook&KUBEMILL_ENTRYPOINT=main&_ENTRYPOINT_OVERRIDE=main"
    url = f"{server.url}/api/w/{ns}/jobs/run_wait_result/p/f/hooks/pre_script?{query}"
    body = json.dumps({"n": 5, **overrides}).encode()
    headers = {"Kubemill-Entrypoint": "main", **bearer(cluster, "alice")}
    status, answer = http(url, body, headers)
    assert (status, json.loads(answer)) == (200, {"x": 15, "how": "webhook:hook"}), (
        answer,
        running_operator.log()[-3000:],
    )
    # An HttpTrigger's delivery to the Script: the HTTP route's event, the same preprocessor then main.
    cluster.apply(
        trigger(ns, "pre-route", "hooks/pre", scriptPath="f/hooks/pre_script", signature={"format": "stripe"})
    )
    delivered = json.dumps({"n": 2, **overrides}).encode()
    signed = sign(SignatureSpec(format="stripe"), KEY, delivered, time.time())
    status, answer = http(f"{server.url}/api/h/{ns}/hooks/pre?via=route", delivered, signed)
    assert status == 201, answer
    routed = finished_scriptrun(cluster, ns, json.loads(answer)["run"])
    assert routed["status"].get("result") == {"x": 6, "how": "http:route"}, routed["status"]
    # Started by a person, not a trigger: main on the args, whatever an arg is called.
    args = {"x": 2, "KUBEMILL_ENTRYPOINT": "preprocessor", "_ENTRYPOINT_OVERRIDE": "preprocessor"}
    spec = {"scriptPath": "f/hooks/pre_script", "args": args}
    direct = kubemill_object("ScriptRun", "pre-direct", ns, spec)
    cluster.apply(direct)
    done = finished_scriptrun(cluster, ns, "pre-direct")
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["result"] == {"x": 2, "how": "direct"}
    # spec.entrypoint belongs to a flow's preprocessor step: the API server refuses it on any other run.
    asked = {**direct, "metadata": {"name": "pre-asked", "namespace": ns}}
    asked["spec"] = {**direct["spec"], "entrypoint": "preprocessor"}
    refused = cluster.kubectl("apply", "-f", "-", input=json.dumps(asked), check=False)
    assert refused.returncode != 0 and "spec.entrypoint is set only on a flow's" in refused.stderr, refused


def test_run_wait_result_returns_the_result_and_the_log_is_readable_as_the_caller(
    cluster: Cluster, hooks: tuple[UiServer, str], running_operator: Operator
) -> None:
    server, ns = hooks
    url = f"{server.url}/api/w/{ns}/jobs/run_wait_result/p/{SCRIPT_PATH}"
    status, answer = http(url, b'{"x": 21}', bearer(cluster, "alice"))
    assert (status, answer) == (200, '{"doubled": 42}'), running_operator.log()[-3000:]
    # A running script's log streams to anyone who may read pods' logs here (bob, with edit).
    slow = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Script",
        "metadata": {"name": "slow", "namespace": ns},
        "spec": {
            "path": "f/hooks/slow",
            "language": "python3",
            "content": "import time\n\ndef main(x: int):\n    print('working on', x, flush=True)\n"
            "    time.sleep(8)\n    return x\n",
        },
    }
    cluster.apply(slow)
    status, name = http(
        f"{server.url}/api/w/{ns}/jobs/run/p/f/hooks/slow", b'{"x": 5}', bearer(cluster, "alice")
    )
    assert status == 201, name
    log_url = f"{server.url}/api/ui/ns/{ns}/scriptruns/{name}/log"
    log = wait_for(
        lambda: (lambda got: got[1] if got[0] == 200 and "working on 5" in got[1] else None)(
            http(log_url, None, bearer(cluster, "bob"))
        ),
        60,
        "the running script's log through the UI",
    )
    assert "working on 5" in log
    failed = http(url, b'{"x": "not a number"}', bearer(cluster, "alice"))
    assert failed[0] == 500 and "x" in json.loads(failed[1])["error"]["message"], failed

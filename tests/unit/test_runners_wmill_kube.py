"""The wmill client's Kubernetes side (runner_images/python3/wmill/kube_api.py): object names from paths, the
identity named in errors, what a refusal says, and the requests the client makes (against a fake sender:
no network). Plus, through the local runner, what a write says when the run has no identity."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kubemill.local.scripts import run_script

REPO = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "kubemill_test_kube_api", REPO / "runner_images/python3/wmill/kube_api.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


kube_api = _load()
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def test_object_names_are_dns_names_derived_from_the_path() -> None:
    assert kube_api.object_name("u/admin/my_api") == "u-admin-my-api"
    assert kube_api.object_name("f/Ops/Slack__Token") == "f-ops-slack-token"
    unique = kube_api.object_name("u/admin/my_api", unique=True)
    assert unique.startswith("u-admin-my-api-") and unique != kube_api.object_name(
        "u/admin/my-api", unique=True
    )
    long = kube_api.object_name("f/" + "x_" * 200)
    for name in (unique, long, kube_api.object_name("_/_")):
        assert DNS_SUBDOMAIN.match(name) and len(name) <= 253, name


def _token(sub: str) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"sub": sub}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{payload}.sig"


def test_the_identity_is_the_tokens_subject() -> None:
    assert (
        kube_api.identity_from_token(_token("system:serviceaccount:t:bot")) == "system:serviceaccount:t:bot"
    )
    assert kube_api.identity_from_token("not-a-jwt") == "this run's ServiceAccount"


def test_a_403_names_verb_kind_path_and_identity() -> None:
    body = json.dumps({"kind": "Status", "message": 'resources.kubemill.dev is forbidden: User "x" cannot'})
    exc = kube_api.api_error(403, body, "create", "resource", "u/a/db", "system:serviceaccount:t:bot", "t")
    assert isinstance(exc, PermissionError)
    text = str(exc)
    for part in ("system:serviceaccount:t:bot", "may not create resources.kubemill.dev", "'u/a/db'", "'t'"):
        assert part in text
    assert "Role" in text and "cannot" in text


def test_an_admission_refusal_keeps_the_api_servers_message() -> None:
    body = json.dumps(
        {"message": "field password of a postgresql resource is secret and must not be written"}
    )
    exc = kube_api.api_error(422, body, "create", "resource", "u/a/db", "me", "t")
    assert isinstance(exc, kube_api.ResourceRejected)
    assert "field password of a postgresql resource is secret" in str(exc)


def test_without_an_identity_a_pod_is_told_how_to_opt_in_and_a_local_run_that_it_does_not_write() -> None:
    in_pod = kube_api.no_identity_error(
        "create_resource", {"KUBEMILL_SERVICE_ACCOUNT": "", "WM_WORKSPACE": "t"}
    )
    assert isinstance(in_pod, PermissionError)
    assert "spec.runner.serviceAccountName" in str(in_pod) and "'t'" in str(in_pod)
    local = kube_api.no_identity_error("create_resource", {})
    assert isinstance(local, kube_api.NotSupported)
    assert "kubemill run" in str(local) and ".resource.yaml" in str(local)


def test_updating_a_value_drops_the_secret_sources_it_now_gives_in_clear() -> None:
    old = {
        "path": "u/a/db",
        "resourceType": "postgresql",
        "value": {"host": "a"},
        "valueFrom": {"password": {"secretKeyRef": {"name": "s", "key": "p"}}},
    }
    kept = kube_api.resource_spec("u/a/db", {"host": "b"}, None, None, old)
    assert kept["valueFrom"] == old["valueFrom"] and kept["value"] == {"host": "b"}
    clear = kube_api.resource_spec("u/a/db", {"host": "b", "password": "x"}, None, None, old)
    assert "valueFrom" not in clear
    with pytest.raises(ValueError, match="resource_type"):
        kube_api.resource_spec("u/a/new", {"a": 1}, None, "")
    with pytest.raises(kube_api.ResourceRejected, match="Secret 's'"):
        kube_api.variable_spec(
            "f/v", "x", None, {"path": "f/v", "valueFrom": {"secretKeyRef": {"name": "s"}}}
        )


class FakeServer:
    """Answers the client's requests from a dict of objects; records what was asked."""

    def __init__(self, objects: list[dict[str, Any]], conflict_names: tuple[str, ...] = ()) -> None:
        self.objects = objects
        self.conflict_names = conflict_names
        self.requests: list[tuple[str, str, Any]] = []

    def __call__(self, request: urllib.request.Request) -> tuple[int, str]:
        body: dict[str, Any] = json.loads(request.data) if isinstance(request.data, bytes) else {}
        url = request.full_url
        self.requests.append((request.get_method(), url, body))
        assert request.get_header("Authorization") == "Bearer tok"
        if request.get_method() == "GET":
            selector = re.search(r"fieldSelector=spec.path%3D([^&]+)", url)
            path = urllib.parse.unquote(selector.group(1)) if selector else None
            items = [o for o in self.objects if path in (None, o["spec"]["path"])]
            return 200, json.dumps({"items": items})
        if request.get_method() == "POST":
            if body["metadata"]["name"] in self.conflict_names:
                return 409, json.dumps({"message": "already exists"})
            self.objects.append(body)
            return 201, json.dumps(body)
        if request.get_method() == "PUT":
            return 200, json.dumps(body)
        return 200, "{}"


def api(tmp_path: Path, server: FakeServer) -> Any:
    (tmp_path / "token").write_text("tok\n")
    creds = kube_api.Credentials("https://10.0.0.1:443", str(tmp_path / "token"), "", "team", "sa")
    return kube_api.KubeApi(creds, send=server)


def test_paths_are_found_by_field_selector_and_a_taken_name_gets_a_hashed_one(tmp_path: Path) -> None:
    server = FakeServer([], conflict_names=("u-a-db",))
    client = api(tmp_path, server)
    created = client.create("resource", "u/a/db", {"path": "u/a/db", "resourceType": "x", "value": {}})
    method, url, _ = server.requests[0]
    assert method == "GET"
    assert url == (
        "https://10.0.0.1:443/apis/kubemill.dev/v1alpha1/namespaces/team/resources"
        "?fieldSelector=spec.path%3Du%2Fa%2Fdb"
    )
    assert created["metadata"]["name"] == kube_api.object_name("u/a/db", unique=True)
    with pytest.raises(kube_api.ResourceExists):
        client.create("resource", "u/a/db", {"path": "u/a/db"})


def test_update_puts_the_found_object_back_and_delete_uses_its_name(tmp_path: Path) -> None:
    existing = {
        "metadata": {"name": "db", "resourceVersion": "7"},
        "spec": {"path": "u/a/db", "resourceType": "x", "value": {"a": 1}},
        "status": {"conditions": []},
    }
    server = FakeServer([existing])
    client = api(tmp_path, server)
    updated = client.replace("resource", "u/a/db", lambda old: {**old, "value": {"a": 2}})
    method, url, body = server.requests[-1]
    assert (method, url.rsplit("/", 1)[1]) == ("PUT", "db")
    assert body["metadata"]["resourceVersion"] == "7" and "status" not in body
    assert updated["spec"]["value"] == {"a": 2}
    assert client.delete("resource", "u/a/db") is True
    assert server.requests[-1][:2] == ("DELETE", url)
    assert client.delete("resource", "u/a/none") is False
    with pytest.raises(KeyError):
        client.replace("resource", "u/a/none", lambda old: old)


def run(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> Any:
    with (tmp_path / "log").open("ab") as log:
        return run_script("python3", code, {}, log=log, env=env or {})


WRITE = (
    "import wmill\n\ndef main():\n"
    "    wmill.create_resource(path='u/a/x', resource_type='t', value={'a': 1})\n"
)


def test_a_write_under_kubemill_run_says_it_is_not_done_locally(tmp_path: Path) -> None:
    envelope = run(WRITE, tmp_path)
    assert envelope.error is not None and envelope.error.name == "NotSupported"
    assert "kubemill run" in envelope.error.message


def test_a_write_in_a_pod_without_identity_says_how_to_opt_in(tmp_path: Path) -> None:
    envelope = run(WRITE, tmp_path, {"KUBEMILL_SERVICE_ACCOUNT": "", "WM_WORKSPACE": "team"})
    assert envelope.error is not None and envelope.error.name == "PermissionDenied"
    assert "set spec.runner.serviceAccountName on the Script" in envelope.error.message

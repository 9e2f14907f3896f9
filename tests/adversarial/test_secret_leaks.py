"""A run's secret values never reach what viewers read: status, events, state ConfigMaps, the container log
(what the script prints, and the runner's result line) and the termination message, in any form the script
may turn them into (as is, base64 at any offset, URL-encoded, cut by the failure message's log tail).

The runs print and return the secret on purpose, as a careless or hostile script would. What viewers read
is collected from the API (the run, events, ConfigMaps) and from the node's own files (each container's log
and termination message, which the API serves while the pod exists and the node keeps after it is gone).
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import pytest
from kubemill.secrets import mask_forms

from tests.conftest import Cluster, finished_scriptrun
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster
API = "kubemill.dev/v1alpha1"
SECRET = "leak-me-7f3a9c1e5b"

PYTHON = """
import base64, os, subprocess, sys, urllib.parse
import wmill

def main(crash: bool = False):
    s = wmill.get_variable("u/admin/token")
    print("plain", s)
    print("b64", base64.b64encode(("x" + s + "yz").encode()).decode(), file=sys.stderr)
    subprocess.run(["echo", "child", urllib.parse.quote("k=" + s + "&")])
    wmill.set_state({"kept": s})
    if crash:
        print("p" * 490 + s, flush=True)
        os._exit(3)  # no envelope: the failure message ends with this log line
    return {"raw": s, "b64": base64.b64encode(s.encode()).decode(), "url": urllib.parse.quote_plus(s), s: 1}
"""

BASH = """
s=$(cat "$KUBEMILL_RESOURCES_DIR"/variable.*)
echo "plain $s"
echo "b64 $(printf 'ab%s' "$s" | base64 -w0)" >&2
printf '{"raw": "%s"}\\n' "$s"
"""


def _objects(namespace: str) -> list[dict[str, Any]]:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": namespace},
        "stringData": {"value": SECRET},
    }
    variable = {
        "apiVersion": API,
        "kind": "Variable",
        "metadata": {"name": "token", "namespace": namespace},
        "spec": {
            "path": "u/admin/token",
            "isSecret": True,
            "valueFrom": {"secretKeyRef": {"name": "token", "key": "value"}},
        },
    }
    scripts = [
        {
            "apiVersion": API,
            "kind": "Script",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "path": f"f/leak/{name}",
                "language": language,
                "content": code,
                "resources": ["u/admin/token"],
            },
        }
        for name, language, code in (("py", "python3", PYTHON), ("sh", "bash", BASH))
    ]
    return [secret, variable, *scripts]


def _node_files(cluster: Cluster, namespace: str) -> dict[str, str]:
    """Every container log and termination message the node kept for the namespace's pods."""
    out: dict[str, str] = {}
    for meta in (cluster.plane.state / "node" / "pods").glob("*/meta.json"):
        if json.loads(meta.read_text())["namespace"] != namespace:
            continue
        for sub in ("logs", "termination"):
            for f in (meta.parent / sub).glob("*"):
                if f.is_file():
                    out[str(f.relative_to(cluster.plane.state))] = f.read_text(errors="replace")
    return out


def _leaks(text: str) -> list[str]:
    """The forms of SECRET that `text` holds (encoded at any offset, URL-encoded, or as is)."""
    found = [f for f in mask_forms([SECRET]) if f in text]
    for token in text.replace('"', " ").split():  # what the scripts base64-encode, decoded back
        try:
            decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        except ValueError:
            continue
        if SECRET.encode() in decoded:
            found.append(f"base64: {token}")
    if SECRET in urllib.parse.unquote_plus(text):
        found.append("URL-encoded")
    return found


def test_a_secret_printed_returned_encoded_or_cut_reaches_no_viewer(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    for manifest in _objects(namespace):
        cluster.apply(manifest)

    ok = finished_scriptrun(cluster, namespace, "leak-ok", "f/leak/py", {})
    crashed = finished_scriptrun(cluster, namespace, "leak-crash", "f/leak/py", {"crash": True})
    bash = finished_scriptrun(cluster, namespace, "leak-sh", "f/leak/sh", {})
    assert ok["phase"] == "Succeeded", ok
    assert ok["result"]["raw"] == "***" and ok["result"]["b64"] == "***", ok["result"]
    assert crashed["phase"] == "Failed" and crashed["error"]["name"] == "RunnerFailed", crashed
    assert crashed["error"]["message"].endswith("p***") or "***" in crashed["error"]["message"], crashed
    assert bash["phase"] == "Succeeded" and bash["result"] == {"raw": "***"}, bash

    node = _node_files(cluster, namespace)
    assert any(name.endswith(".log") and "plain ***" in text for name, text in node.items()), node
    viewer_reads = {
        "scriptruns": cluster.kubectl("get", "scriptruns", "-n", namespace, "-o", "json").stdout,
        "events": cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        "configmaps": cluster.kubectl("get", "configmaps", "-n", namespace, "-o", "json").stdout,
        **node,
    }
    state = [
        cm
        for cm in json.loads(viewer_reads["configmaps"])["items"]
        if "kept" in json.dumps(cm.get("data") or {})
    ]
    assert state, "the script's state was not kept"
    leaks = {where: found for where, text in viewer_reads.items() if (found := _leaks(text))}
    assert not leaks, leaks


def test_the_mask_forms_cover_what_the_test_looks_for() -> None:
    """The detector above must be able to fail: it finds each form in text that holds it."""
    for text in (
        f"a {SECRET} b",
        base64.b64encode(("x" + SECRET + "yz").encode()).decode(),
        urllib.parse.quote("k=" + SECRET + "&"),
        json.dumps({"k": SECRET}),
    ):
        assert _leaks(text), text
    assert not _leaks("nothing here *** " + base64.b64encode(b"other").decode())

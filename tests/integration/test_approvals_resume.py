"""Resume URLs on the real control plane: the step before an approval gets signed URLs, one set per listed
approver (in the Secret `<child>-resume` its pod mounts, what `wmill.get_resume_urls()` returns in the
runner); a POST to one approves or rejects on behalf of the approver it names; a tampered link does nothing.
The abuse cases (GET, another approver, expiry, who can read them) are in tests/adversarial."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.test_approvals import start_run, status, wait_phase
from tests.integration.test_flows import children, flow, script, step, wait_ready
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster


def post(url: str, body: Any = None) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def install(cluster: Cluster, namespace: str) -> None:
    cluster.apply(script(namespace, "f/resume/notify", "def main():\n    return 'sent'\n"))
    approval = {"id": "sign_off", "value": {"type": "approval", "approvers": ["alice@example.com"]}}
    after = {"id": "after", "value": {"type": "identity"}}
    cluster.apply(flow(namespace, "f/resume/chat", [step("notify", "f/resume/notify"), approval, after]))
    wait_ready(cluster, namespace, "chat")


def resume_document(cluster: Cluster, namespace: str, step_id: str = "notify") -> dict[str, Any]:
    """The resume URLs the step's runner gets (read as admin: nobody with `view` can read them)."""
    [child] = [c for c in children(cluster, namespace) if c["spec"]["stepId"] == step_id]
    secret = cluster.get("secret", f"{child['metadata']['name']}-resume", "-n", namespace)
    found: dict[str, Any] = json.loads(base64.b64decode(secret["data"]["resume-urls.json"]))
    return found


def resume_urls(cluster: Cluster, namespace: str, approver: str = "alice@example.com") -> dict[str, str]:
    urls: dict[str, str] = resume_document(cluster, namespace)["approvers"][approver]
    return urls


def test_a_resume_url_approves_on_behalf_of_a_listed_approver(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    install(cluster, namespace)
    start_run(cluster, namespace, "chat", "f/resume/chat")
    wait_phase(cluster, namespace, "chat", "Suspended", timeout=120)
    urls = resume_urls(cluster, namespace)
    assert set(urls) == {"approvalPage", "resume", "cancel"}
    assert "approver=alice%40example.com" in urls["resume"]

    anonymous = resume_document(cluster, namespace)["resume"]
    code, text = post(anonymous)
    assert code == 403 and "anonymous is not an approver of step sign_off" in text
    code, text = post(urls["resume"].replace("sig=", "sig=0"))
    assert code == 403 and "not valid" in text
    assert status(cluster, namespace, "chat")["phase"] == "Suspended"

    with urllib.request.urlopen(urls["approvalPage"], timeout=10) as page:
        assert b"Approve" in page.read()
    code, text = post(urls["resume"], {"ok": True})
    assert code == 200, text
    done = wait_phase(cluster, namespace, "chat", "Succeeded")
    assert done["result"] == {"ok": True}
    assert [(a["user"], a["decision"]) for a in done["approvals"]] == [("alice@example.com", "approve")]


def test_a_cancel_url_rejects(cluster: Cluster, namespace: str, running_operator: Operator) -> None:
    install(cluster, namespace)
    start_run(cluster, namespace, "chat-no", "f/resume/chat")
    wait_phase(cluster, namespace, "chat-no", "Suspended", timeout=120)
    urls = resume_urls(cluster, namespace)
    code, text = post(urls["cancel"])
    assert code == 200, text
    failed = wait_phase(cluster, namespace, "chat-no", "Failed")
    assert failed["error"]["name"] == "ApprovalRejected"

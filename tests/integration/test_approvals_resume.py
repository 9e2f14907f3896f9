"""Resume URLs on the real control plane: the step before an approval gets signed URLs (the child ScriptRun's
`kubemill.dev/resume-urls`, what `wmill.get_resume_urls()` returns in the runner); opening one approves or
rejects on behalf of the named approver, who must be listed; a tampered link does nothing."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import Cluster, wait_for
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


def resume_urls(cluster: Cluster, namespace: str) -> dict[str, str]:
    [child] = [c for c in children(cluster, namespace) if c["spec"]["stepId"] == "notify"]
    urls: dict[str, str] = json.loads(child["metadata"]["annotations"]["kubemill.dev/resume-urls"])
    return urls


def test_a_resume_url_approves_on_behalf_of_a_listed_approver(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    install(cluster, namespace)
    start_run(cluster, namespace, "chat", "f/resume/chat")
    wait_phase(cluster, namespace, "chat", "Suspended", timeout=120)
    urls = resume_urls(cluster, namespace)
    assert set(urls) == {"approvalPage", "resume", "cancel"}

    code, text = post(urls["resume"] + "&approver=" + quote("mallory@example.com"))
    assert code == 403 and "mallory@example.com is not an approver of step sign_off" in text
    code, text = post(urls["resume"].replace("sig=", "sig=0") + "&approver=" + quote("alice@example.com"))
    assert code == 403 and "not valid" in text
    assert status(cluster, namespace, "chat")["phase"] == "Suspended"

    with urllib.request.urlopen(urls["approvalPage"] + "&approver=alice%40example.com", timeout=10) as page:
        assert b"Approve" in page.read()
    code, text = post(urls["resume"] + "&approver=" + quote("alice@example.com"), {"ok": True})
    assert code == 200, text
    done = wait_phase(cluster, namespace, "chat", "Succeeded")
    assert done["result"] == {"ok": True}
    assert [(a["user"], a["decision"]) for a in done["approvals"]] == [("alice@example.com", "approve")]


def test_a_cancel_url_rejects(cluster: Cluster, namespace: str, running_operator: Operator) -> None:
    install(cluster, namespace)
    start_run(cluster, namespace, "chat-no", "f/resume/chat")
    wait_phase(cluster, namespace, "chat-no", "Suspended", timeout=120)
    urls = wait_for(lambda: resume_urls(cluster, namespace), 30, "resume URLs")
    code, text = post(urls["cancel"] + "&approver=" + quote("alice@example.com"))
    assert code == 200, text
    failed = wait_phase(cluster, namespace, "chat-no", "Failed")
    assert failed["error"]["name"] == "ApprovalRejected"

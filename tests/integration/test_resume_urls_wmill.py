"""`wmill.get_resume_urls()` inside a flow step, on the real control plane: the step before an approval gets
its signed URLs from the Secret its pod mounts (`KUBEMILL_RESUME_URLS_FILE`), returns them, and a POST to the
`resume` one resumes the flow."""

from __future__ import annotations

import pytest

from tests.conftest import Cluster
from tests.integration.test_approvals import start_run, wait_phase
from tests.integration.test_approvals_resume import post, resume_document
from tests.integration.test_flows import children, flow, script, step, wait_ready
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster
NOTIFY = """import wmill

def main():
    urls = wmill.get_resume_urls("alice@example.com")
    return {"urls": urls, "plain": wmill.get_resume_urls()}
"""


def test_a_step_gets_its_resume_urls_from_wmill_and_they_resume_the_flow(
    cluster: Cluster, namespace: str, running_operator: Operator
) -> None:
    cluster.apply(script(namespace, "f/resume/notify_urls", NOTIFY))
    approval = {"id": "sign_off", "value": {"type": "approval", "approvers": ["alice@example.com"]}}
    after = {"id": "after", "value": {"type": "identity"}}
    cluster.apply(flow(namespace, "f/resume/ask", [step("notify", "f/resume/notify_urls"), approval, after]))
    wait_ready(cluster, namespace, "ask")
    start_run(cluster, namespace, "ask", "f/resume/ask")
    wait_phase(cluster, namespace, "ask", "Suspended", timeout=120)

    [child] = [c for c in children(cluster, namespace) if c["spec"]["stepId"] == "notify"]
    document = resume_document(cluster, namespace)
    result = child["status"]["result"]
    assert result["plain"] == {k: document[k] for k in ("approvalPage", "resume", "cancel")}
    urls = result["urls"]
    assert urls == document["approvers"]["alice@example.com"]
    assert "approver=alice%40example.com" in urls["resume"]

    code, text = post(urls["resume"], {"ok": "from the script's URL"})
    assert code == 200, text
    done = wait_phase(cluster, namespace, "ask", "Succeeded")
    assert done["result"] == {"ok": "from the script's URL"}
    assert [(a["user"], a["decision"]) for a in done["approvals"]] == [("alice@example.com", "approve")]

"""The brief's scripts, as the examples ship them (examples/manifests), run unchanged as ScriptRuns: Python,
TypeScript (Deno), Go and Bash, with the example workspace's Resources, Variables and Secret."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.integration.test_operator import finished, script_run
from tests.operator_harness import Operator

pytestmark = pytest.mark.cluster

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"


BRIEF_SCRIPTS = ("expense-approval", "webhook-handler", "deploy-service", "batch-processor")


def brief_runs() -> dict[str, tuple[str, dict[str, Any]]]:
    """One run of each of the brief's four languages' scripts: name -> (script path, args)."""
    data = {"order_id": "o-1", "total": 12}
    signature = hmac.new(
        b"test-webhook-secret", json.dumps(data, separators=(",", ":")).encode(), hashlib.sha256
    ).hexdigest()
    return {
        "expense": (
            "f/approvals/expense_approval",
            {
                "expense_id": "E1",
                "amount": 42.5,
                "category": "meals",
                "description": "lunch",
                "requestor_email": "bob@example.com",
            },
        ),
        "webhook": (
            "f/api/webhook_handler",
            {
                "payload": {
                    "event_type": "order.created",
                    "data": data,
                    "timestamp": "2024-01-01T00:00:00Z",
                    "signature": signature,
                },
                "config": {
                    "validate_signature": True,
                    "allowed_events": ["order.created"],
                    "forward_to_slack": False,
                },
            },
        ),
        "deploy": (
            "f/devops/deploy_service",
            {"SERVICE_NAME": "web", "VERSION": "1.2.3", "ENVIRONMENT": "prod", "DRY_RUN": "true"},
        ),
        "batch": (
            "f/performance/batch_processor",
            {
                "items": [{"id": 1}, {"id": "b"}, {"name": "no id"}],
                "config": {"batch_size": 2, "concurrency": 2, "retry_attempts": 1, "timeout_secs": 5},
            },
        ),
    }


def check_brief_results(results: dict[str, Any]) -> None:
    assert results["expense"]["status"] == "approved"
    assert results["webhook"] == {
        "processed": True,
        "event_type": "order.created",
        "actions_taken": ["signature_validated", "order_processed"],
    }
    assert {k: results["deploy"][k] for k in ("status", "service", "version")} == {
        "status": "success",
        "service": "web",
        "version": "1.2.3",
    }
    assert {k: results["batch"][k] for k in ("total_items", "successful", "failed")} == {
        "total_items": 3,
        "successful": 2,
        "failed": 1,
    }


def test_the_brief_scripts_run_unchanged(
    running_operator: Operator, cluster: Cluster, restricted_namespace: str
) -> None:
    ns = restricted_namespace
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "workspace"))
    for name in BRIEF_SCRIPTS:
        cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLES / "scripts" / f"{name}.yaml"))
    runs = brief_runs()
    for name, (path, args) in runs.items():
        cluster.apply(script_run(f"brief-{name}", path, args), "-n", ns)
    results = {}
    for name in runs:
        status = finished(running_operator, ns, f"brief-{name}", timeout=420)["status"]
        assert status["phase"] == "Succeeded", (name, status)
        results[name] = status["result"]
    check_brief_results(results)

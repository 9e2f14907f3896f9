"""The operator on the real control plane: Scripts and ScriptRuns as a user sees them (`kubectl get`)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Operator

pytestmark = pytest.mark.cluster


def test_operator_serves_health_and_metrics_under_its_own_identity(running_operator: Operator) -> None:
    text = running_operator.metrics()
    assert "kubemill_runs_started" in text
    assert "Forbidden" not in running_operator.log()

"""The Helm chart's sources, without helm: its copies of the CRDs, RBAC and webhook configurations match what
they are copied from, every value is documented, every CI values file names real values, and the dashboard
and alerts query only metrics the operator exports. (tests/integration/test_chart.py runs helm itself.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kubemill"
RESYNC = "run charts/kubemill/sync-files"
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_names(exposition: str) -> set[str]:
    """Every series name a Prometheus exposition declares (counters' `_total`, histograms' `_bucket`, ...)."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(exposition)
        for suffix in _SUFFIXES.get(family.type, ("",))
    }


def operator_metric_names() -> set[str]:
    from kubemill.operator.metrics import REGISTRY

    return exported_names(generate_latest(REGISTRY).decode())


def metric_names(expressions: Iterable[str]) -> set[str]:
    return {name for expr in expressions for name in re.findall(r"\bkubemill_[a-z0-9_]+\b", expr)}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "files/dashboards/kubemill.json").read_text())
    return loaded


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in board["templating"]["list"] if "definition" in v]
    return exprs


def alert_expressions() -> list[str]:
    text = (CHART / "templates/monitoring/prometheusrule.yaml").read_text()
    return re.findall(r"expr: (\|[\s\S]*?(?=\n\s+for:)|.+)", text)


def _yaml_files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.yaml"))}


def test_chart_crds_are_the_generated_crds() -> None:
    assert _yaml_files(CHART / "files/crds") == _yaml_files(REPO / "crds"), RESYNC


def test_chart_rbac_is_the_operator_rbac() -> None:
    copies = _yaml_files(CHART / "files/rbac")
    assert copies == _yaml_files(REPO / "config/rbac"), RESYNC
    assert {"operator-role.yaml", "trigger-role.yaml", "aggregate-roles.yaml", "webhooks-role.yaml"} <= set(
        copies
    )


def test_chart_admission_policies_are_the_generated_ones() -> None:
    copies = _yaml_files(CHART / "files/admission")
    assert copies == _yaml_files(REPO / "config/admission"), RESYNC
    assert "resource-secrets-policy.yaml" in copies


def test_chart_webhook_configurations_are_the_operators() -> None:
    from kubemill.operator.admission import webhook_configurations

    text = (CHART / "files/webhooks/configurations.yaml").read_text()
    assert list(yaml.safe_load_all(text)) == webhook_configurations({"url": "https://HOST"}), RESYNC


def _leaves(values: Any, prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{path}.")
        else:
            yield path


def _documented_paths(text: str) -> set[str]:
    """Dotted paths of the keys that have a `# --` comment directly above them (helm-docs style)."""
    documented: set[str] = set()
    stack: list[str] = []
    pending = False
    for line in text.splitlines():
        if line.lstrip().startswith("# --"):
            pending = True
            continue
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        depth = len(match.group(1)) // 2
        stack = [*stack[:depth], match.group(2)]
        if pending:
            documented.add(".".join(stack))
        pending = False
    return documented


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text()
    documented = _documented_paths(text)
    undocumented = [p for p in _leaves(yaml.safe_load(text)) if not any(p.startswith(d) for d in documented)]
    assert undocumented == []


def _paths(values: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(values, dict):
        for key, value in values.items():
            yield f"{prefix}{key}"
            yield from _paths(value, f"{prefix}{key}.")


CI_FILES = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))


def _open_map(values: dict[str, Any], path: str) -> bool:
    """Whether the default at `path` is a map users fill freely (labels, resources, node selectors, ...)."""
    node: Any = values
    for key in path.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node == {} or path.rsplit(".", 1)[-1] in OPEN_MAPS


OPEN_MAPS = {"resources", "podSecurityContext", "containerSecurityContext", "livenessProbe", "readinessProbe"}


@pytest.mark.parametrize("name", CI_FILES)
def test_ci_values_set_only_values_the_chart_has(name: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    defaults = set(_paths(values))
    given = yaml.safe_load((CHART / "ci" / name).read_text()) or {}
    unknown = []
    for path in _paths(given):
        prefixes = [path.rsplit(".", n)[0] for n in range(1, path.count(".") + 1)]
        if path not in defaults and not any(p in defaults and _open_map(values, p) for p in prefixes):
            unknown.append(path)
    assert unknown == [], f"{name} sets values the chart does not have"


def test_ci_scenarios_cover_the_options() -> None:
    assert {
        "default-values.yaml",
        "monitoring-values.yaml",
        "cert-manager-values.yaml",
        "namespaced-values.yaml",
        "minimal-values.yaml",
        "extra-objects-values.yaml",
        "ui-values.yaml",
    } <= set(CI_FILES)


def test_dashboard_covers_what_operators_ask_for() -> None:
    board = dashboard()
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "by phase",
        "duration percentiles",
        "failures by path",
        "pending approvals",
        "schedule lag",
    ):
        assert topic in titles
    assert "reconcile errors" in titles
    assert board["uid"] == "kubemill-overview"
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "namespace", "language"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_and_alerts_query_only_exported_metrics() -> None:
    used = metric_names(dashboard_expressions(dashboard()) + alert_expressions())
    assert len(alert_expressions()) == 4
    missing = used - operator_metric_names()
    assert missing == set(), "not exported by kubemill.operator.metrics"


def test_metric_name_extraction() -> None:
    assert metric_names(['sum(rate(kubemill_runs_finished_total{phase="Failed"}[5m])) / up']) == {
        "kubemill_runs_finished_total"
    }
    text = "# TYPE kubemill_x counter\nkubemill_x_total 1\n# TYPE kubemill_h histogram\n"
    assert exported_names(text) == {
        "kubemill_x_total",
        "kubemill_x_created",
        "kubemill_h_bucket",
        "kubemill_h_sum",
        "kubemill_h_count",
        "kubemill_h_created",
    }


def test_the_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    documented = _documented_paths((CHART / "values.yaml").read_text())
    assert sorted(p for p in documented if f"| `{p}` |" not in readme) == []


def test_the_readme_kind_path_names_what_exists() -> None:
    readme = (REPO / "README.md").read_text()
    kind_section = readme[readme.index("## Run on kind") :]
    for path in ("kind-config.yaml", "Dockerfile", "charts/kubemill", "examples/gitops/deploy"):
        assert path in kind_section and (REPO / path).exists()
    for language in ("python3", "deno", "go", "bash", "bun"):
        assert (REPO / "runner_images" / language / "Dockerfile").is_file()
    assert "name: kubemill" in (REPO / "kind-config.yaml").read_text()  # `kind load --name kubemill`
    deploy = REPO / "examples/gitops/deploy"
    paths = {yaml.safe_load(p.read_text())["spec"].get("path") for p in deploy.glob("*/*.yaml")}
    assert {"f/demo/hello", "f/demo/greet_and_count"} <= paths
    assert "u.admin.api_key" in (deploy / "kustomization.yaml").read_text()  # the Secret key step 5 creates

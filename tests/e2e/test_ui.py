"""The web UI end to end, in real headless Chromium against the test control plane and the real operator.

Each test sets up a namespace from the examples, starts `kubemill ui` (as deployed: no credentials of its own)
and runs a browser scenario from ui/e2e/scenarios.mjs (playwright-core driving Debian's chromium), then checks
what the browser saw against the cluster. Screenshots go to test-artifacts/ui/.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.conftest import Cluster
from tests.integration.test_webhooks import UiServer, token
from tests.operator_harness import Operator

REPO = Path(__file__).resolve().parents[2]
UI = REPO / "ui"
ARTIFACTS = REPO / "test-artifacts" / "ui"
EXAMPLES = REPO / "examples" / "manifests"

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


class MockApi(BaseHTTPRequestHandler):
    """The external services the examples call: a data API, inventory and payments."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 (shared by the server's handler instances)

    def log_message(self, *args: Any) -> None:
        return

    def _answer(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.seen.append(
            {"path": url.path, "query": parse_qs(url.query), "auth": self.headers["Authorization"]}
        )
        records = [{"timestamp": f"2024-01-0{i}T10:00:00", "value": i * 10} for i in range(1, 5)]
        self._answer({"records": records})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.seen.append({"path": self.path, "body": body, "auth": self.headers["Authorization"]})
        if self.path.endswith("/inventory/check"):
            self._answer({"stock": {item["sku"]: 1000 for item in body.get("items", [])}})
        elif self.path.endswith("/payments"):
            self._answer({"id": "pay_1", "status": "succeeded"})
        else:
            self._answer({"ok": True})


@pytest.fixture(scope="module")
def mock_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), MockApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def bundle() -> Path:
    """The built front end (what `npm ci && npm run build` in ui/ produces), built here when missing."""
    subprocess.run([str(REPO / "scripts" / "install-browser")], check=True)
    if not (UI / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=UI, check=True, capture_output=True)
    static = REPO / "operator" / "kubemill" / "ui" / "static"
    newest_source = max(p.stat().st_mtime for p in (UI / "src").iterdir())
    if not (static / "index.html").is_file() or (static / "index.html").stat().st_mtime < newest_source:
        subprocess.run(["npm", "run", "build"], cwd=UI, check=True, capture_output=True)
    return static


@pytest.fixture
def ui(cluster: Cluster, bundle: Path) -> Iterator[UiServer]:
    server = UiServer(cluster, Path(tempfile.mkdtemp(prefix="kubemill-ui-")))
    server.start()
    yield server
    server.stop()


def prepare(cluster: Cluster, namespace: str, mock_url: str) -> None:
    """alice, bob and mallory may edit here; the examples' workspace points at the mock API."""
    cluster.kubectl(
        "create", "rolebinding", "users-edit", "--clusterrole=edit", "--group=kubemill-users", "-n", namespace
    )
    for path in sorted((EXAMPLES / "workspace").glob("*.yaml")):
        cluster.apply(path.read_text().replace("http://127.0.0.1:18080", mock_url), "-n", namespace)


def browse(
    scenario: str, settings: dict[str, Any], cluster: Cluster, op: Operator, timeout: float = 600
) -> dict[str, Any]:
    proc = subprocess.run(
        ["node", str(UI / "e2e" / "scenarios.mjs"), scenario],
        input=json.dumps({**settings, "artifacts": str(ARTIFACTS)}),
        capture_output=True,
        text=True,
        cwd=UI,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"browser scenario {scenario} failed:\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
    )
    seen: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if "failure" in seen:
        runs = cluster.kubectl("get", "scriptruns,flowruns", "-n", settings["namespace"], "-o", "yaml").stdout
        pytest.fail(
            f"browser scenario {scenario}: {json.dumps(seen, indent=1)}\n--- runs:\n{runs[-6000:]}"
            f"\n--- operator log:\n{op.log()[-4000:]}"
        )
    return seen


def test_fill_the_fetch_and_transform_form_run_it_and_see_the_result(
    cluster: Cluster,
    namespace: str,
    running_operator: Operator,
    ui: UiServer,
    mock_api: str,
) -> None:
    prepare(cluster, namespace, mock_api)
    cluster.apply((EXAMPLES / "scripts" / "fetch-and-transform.yaml").read_text(), "-n", namespace)
    fields = [
        ["#arg-api_endpoint", mock_api],
        ["#arg-date_range_days", "3"],
        ["#arg-include_metadata", True],
        ["#arg-output_format", "json"],
        ["#arg-filters", {"region": "eu"}],
    ]
    seen = browse(
        "fetch_and_transform",
        {
            "url": ui.url,
            "namespace": namespace,
            "tokens": {"alice": token(cluster, "alice")},
            "path": "f/data_processing/fetch_and_transform",
            "fields": fields,
            "timeoutMs": 300_000,
        },
        cluster,
        running_operator,
    )
    assert seen["phase"] == "Succeeded", f"{seen['error']}\n--- logs:\n{seen['logs'][-3000:]}"
    run = cluster.get("scriptrun", seen["run"], "-n", namespace)
    assert run["spec"]["args"] == {
        "api_endpoint": mock_api,
        "date_range_days": 3,
        "include_metadata": True,
        "output_format": "json",
        "filters": {"region": "eu"},
    }
    result = seen["result"]
    assert result["format"] == "json" and result["metadata"]["total_records"] == 4
    assert [r["value_normalized"] for r in result["data"]] == pytest.approx([0, 1 / 3, 2 / 3, 1])
    calls = [c for c in MockApi.seen if c["path"] == "/data"]
    assert calls and calls[-1]["auth"] == "Bearer test-api-key" and calls[-1]["query"]["region"] == ["eu"]
    assert (ARTIFACTS / "fetch-and-transform-result.png").stat().st_size > 0


def order_flow(approvers: list[str]) -> dict[str, Any]:
    flow: dict[str, Any] = yaml.safe_load((EXAMPLES / "flows" / "order-processing.yaml").read_text())

    def visit(modules: list[dict[str, Any]]) -> None:
        for module in modules:
            value = module["value"]
            if value.get("type") == "approval":
                value["approvers"] = approvers
            for branch in value.get("branches", []):
                visit(branch.get("modules", []))

    visit(flow["spec"]["value"]["modules"])
    return flow


def test_approve_the_order_flow_as_alice_after_mallory_is_refused(
    cluster: Cluster,
    namespace: str,
    running_operator: Operator,
    ui: UiServer,
    mock_api: str,
) -> None:
    prepare(cluster, namespace, mock_api)
    for path in sorted((EXAMPLES / "order-processing").glob("*.yaml")):
        cluster.apply(path.read_text(), "-n", namespace)
    cluster.apply(order_flow(["alice@example.com", "group:managers"]), "-n", namespace)
    item = {"sku": "GPU-9", "quantity": 2, "unit_price": 3000}
    fields = [
        ["#arg-order-customer_email", "buyer@example.com"],
        ["button:text-is('add items item')", "click"],
        ["#arg-order-items-0", item],
        ["#arg-order-shipping_address", {"street": "1 Main St", "city": "Paris"}],
    ]
    seen = browse(
        "approve_order",
        {
            "url": ui.url,
            "namespace": namespace,
            "tokens": {"alice": token(cluster, "alice"), "mallory": token(cluster, "mallory")},
            "path": "f/order_processing/order_processing",
            "fields": fields,
            "timeoutMs": 300_000,
        },
        cluster,
        running_operator,
    )
    assert "403" in seen["malloryMessage"]
    assert "mallory@example.com may not approve step request_approval" in seen["malloryMessage"]
    assert seen["aliceMessage"] == "Approved."
    assert seen["phase"] == "Succeeded", seen
    assert seen["steps"]["request_approval"] == "Succeeded"
    assert seen["steps"]["process_approved"] == "Succeeded"
    assert "alice@example.com" in seen["ledger"] and "approved by the manager" in seen["ledger"]
    assert seen["validateLog"].startswith("--- attempt 1 ---")  # the step's stored log, in the step graph
    run = cluster.get("flowrun", seen["run"], "-n", namespace)
    assert [(a["user"], a["decision"]) for a in run["status"]["approvals"]] == [
        ("alice@example.com", "approve")
    ]
    for name in (
        "order-flow-suspended",
        "order-flow-mallory-refused",
        "order-flow-approved",
        "order-flow-step-log",
    ):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 0


PICKED = """from typing import TypedDict


class postgresql(TypedDict):
    host: str
    port: int
    user: str
    dbname: str
    password: str


def main(db: postgresql):
    return {"host": db["host"], "password": db["password"]}
"""


def test_pick_a_resource_in_the_form_and_the_run_gets_its_value(
    cluster: Cluster, namespace: str, running_operator: Operator, ui: UiServer, mock_api: str
) -> None:
    """The form's resource picker sends `$res:<path>` (as Windmill's does); the operator resolves it for a
    path the Script declares, and the run gets the value (its secret field masked in the result)."""
    from tests.adversarial.test_arg_references import APP_PASSWORD, resource

    prepare(cluster, namespace, mock_api)
    cluster.kubectl(
        "create", "secret", "generic", "app-db", f"--from-literal=password={APP_PASSWORD}", "-n", namespace
    )
    cluster.apply(resource("app-db", "f/app/db", "app.internal", "app-db"), "-n", namespace)
    script = {
        "apiVersion": "kubemill.dev/v1alpha1",
        "kind": "Script",
        "metadata": {"name": "picked"},
        "spec": {"path": "f/app/picked", "language": "python3", "content": PICKED, "resources": ["f/app/db"]},
    }
    cluster.apply(script, "-n", namespace)
    seen = browse(
        "resource_picker",
        {
            "url": ui.url,
            "namespace": namespace,
            "tokens": {"alice": token(cluster, "alice")},
            "path": "f/app/picked",
            "picker": "#arg-db",
            "choose": "f/app/db",
            "timeoutMs": 300_000,
        },
        cluster,
        running_operator,
    )
    assert ["$res:f/app/db", "f/app/db"] in seen["offered"]
    assert all(value != "$res:u/admin/api_credentials" for value, _ in seen["offered"])  # another type
    assert seen["phase"] == "Succeeded", seen["error"]
    assert seen["result"] == {"host": "app.internal", "password": "***"}
    run = cluster.get("scriptrun", seen["run"], "-n", namespace)
    assert run["spec"]["args"] == {"db": "$res:f/app/db"}
    assert (ARTIFACTS / "resource-picker-result.png").stat().st_size > 0

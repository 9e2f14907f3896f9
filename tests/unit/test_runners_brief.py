"""The brief's scripts (tests/fixtures/brief/) run unchanged, their external calls served on 127.0.0.1.

Third-party imports (requests, pandas, psycopg2) are installed by the Python runner itself from the
script's imports, as Windmill does, into the dependency cache; the first run downloads them from PyPI.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubemill.local.scripts import run_script
from kubemill.runners import Envelope, RunContext

BRIEF = Path(__file__).parents[1] / "fixtures" / "brief"
CONTACTS = [{"id": i, "email": f"c{i}@example.com", "name": f"C{i}"} for i in range(3)]


class FakeApi:
    """The APIs the brief's scripts call: a data API, a CRM, Slack and Windmill's resource endpoint."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.resources: dict[str, Any] = {}
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                api.requests.append(("GET", url.path, dict(self.headers), parse_qs(url.query)))
                if url.path == "/data":
                    records = [
                        {"timestamp": "2024-01-01T10:00:00", "value": 1.0},
                        {"timestamp": "2024-01-01T11:00:00", "value": 3.0},
                    ]
                    self._reply({"records": records})
                elif url.path.startswith("/lists/"):
                    query = parse_qs(url.query)
                    page, size = int(query["page"][0]), int(query["per_page"][0])
                    chunk = CONTACTS[(page - 1) * size : page * size]
                    self._reply({"contacts": chunk, "has_more": page * size < len(CONTACTS)})
                elif "/resources/get/" in url.path:
                    path = url.path.split("/resources/get/", 1)[1]
                    self._reply({"path": path, "value": api.resources[path]})
                else:
                    self._reply({"error": "not found"}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                api.requests.append(("POST", self.path, dict(self.headers), body))
                self._reply({"ok": True})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join()


def run_brief(
    name: str, args: dict[str, Any], tmp_path: Path, language: str | None = None, **kw: Any
) -> Envelope:
    language = language or {".py": "python3", ".ts": "deno", ".go": "go", ".sh": "bash"}[Path(name).suffix]
    with (tmp_path / "log").open("ab") as log:
        envelope = run_script(language, (BRIEF / name).read_text(), args, log=log, timeout=600, **kw)
    return envelope


def _log(tmp_path: Path) -> str:
    return (tmp_path / "log").read_text(errors="replace")[-3000:]


@pytest.mark.slow
def test_fetch_and_transform(api: FakeApi, tmp_path: Path) -> None:
    envelope = run_brief(
        "fetch_and_transform.py",
        {"api_endpoint": api.url, "date_range_days": 3},
        tmp_path,
        resources={"u/admin/api_credentials": {"api_key": "k-123"}},
    )
    assert envelope.ok, (envelope.error, _log(tmp_path))
    assert envelope.result["metadata"]["total_records"] == 2
    assert [r["value_normalized"] for r in envelope.result["data"]] == [0.0, 1.0]
    assert envelope.result["data"][0]["hour"] == 10
    method, path, headers, _ = api.requests[0]
    assert (method, path, headers["Authorization"]) == ("GET", "/data", "Bearer k-123")


@pytest.mark.slow
def test_sync_crm_to_database_dry_run(api: FakeApi, tmp_path: Path) -> None:
    envelope = run_brief(
        "sync_crm_to_database.py",
        {"crm_list_id": "L1", "batch_size": 2, "dry_run": True},
        tmp_path,
        resources={
            "u/admin/crm_api": {"base_url": api.url, "api_key": "$var:u/admin/crm_key"},
            "u/admin/postgres_warehouse": {"host": "db", "port": 5432},
        },
        variables={"u/admin/crm_key": "crm-secret"},
    )
    assert envelope.ok, (envelope.error, _log(tmp_path))
    assert envelope.result == {"mode": "dry_run", "contacts_fetched": 3, "sample": CONTACTS}
    assert all(h["Authorization"] == "Bearer crm-secret" for _, _, h, _ in api.requests)
    assert "Fetched 3 contacts from CRM" in _log(tmp_path)


def test_dynamic_scheduler_dry_run(tmp_path: Path) -> None:
    configs = [{"path": "f/x/nightly", "cron": "0 0 * * *", "business_hours_only": True}]
    envelope = run_brief("dynamic_scheduler.py", {"schedule_configs": configs}, tmp_path)
    assert envelope.ok, (envelope.error, _log(tmp_path))
    assert envelope.result["changes"][0]["cron"] == "0 9-17 * * 1-5"
    assert envelope.result["changes"][0]["status"] == "would_update"


def test_expense_approval_auto_approves_small_expenses(tmp_path: Path) -> None:
    args = {
        "expense_id": "E1",
        "amount": 42.5,
        "category": "meals",
        "description": "lunch",
        "requestor_email": "a@example.com",
    }
    envelope = run_brief(
        "expense_approval.py", args, tmp_path, variables={"u/admin/approvers_config": '{"directors": ["d"]}'}
    )
    assert envelope.ok, (envelope.error, _log(tmp_path))
    assert envelope.result["status"] == "approved"
    assert envelope.result["message"] == "Expense auto-approved (amount: $42.50)"


def test_manage_resources_get_and_list(tmp_path: Path) -> None:
    resources = {"u/admin/my_api": {"url": "https://x"}}
    got = run_brief(
        "manage_resources.py",
        {"action": "get", "resource_path": "u/admin/my_api"},
        tmp_path,
        resources=resources,
    )
    assert got.result == {"path": "u/admin/my_api", "value": {"url": "https://x"}, "found": True}
    listed = run_brief("manage_resources.py", {"action": "list"}, tmp_path, resources=resources)
    assert listed.result["total"] == 1
    assert listed.result["resources"][0]["path"] == "u/admin/my_api"
    missing = run_brief(
        "manage_resources.py",
        {"action": "get", "resource_path": "u/admin/none"},
        tmp_path,
        resources=resources,
    )
    assert missing.result["found"] is False
    assert "spec.resources" in missing.result["error"]


def test_debugging_tips_keeps_its_checkpoint_state_when_it_fails(tmp_path: Path) -> None:
    envelope = run_brief("debugging_tips.py", {"data": {"a": 1}}, tmp_path, state_file=tmp_path / "s.json")
    assert envelope.error is not None
    assert envelope.error.name == "NameError"
    assert envelope.state == {"debug": "checkpoint_1"}
    assert "Input: {'a': 1}" in _log(tmp_path)


DEPLOY_ARGS = {"SERVICE_NAME": "web", "VERSION": "1.2.3", "ENVIRONMENT": "prod", "DRY_RUN": "true"}
DEPLOY_RESOURCES = {"u/admin/deploy_key": {"key": "dk"}, "u/admin/aws_config": {"region": "eu-west-1"}}


@pytest.mark.parametrize("base_url", ["", "http://127.0.0.1:9"])
def test_deploy_service_dry_run_gets_its_args_as_environment_and_its_resources_from_the_runner(
    base_url: str, tmp_path: Path
) -> None:
    """The brief's script reads its args from the environment and fetches resources from
    $BASE_INTERNAL_URL/api/w/<ws>/resources/get/<path> with $WM_TOKEN: the Bash runner provides both, with no
    server (port 9 has nothing listening)."""
    envelope = run_brief(
        "deploy_service.sh",
        DEPLOY_ARGS,
        tmp_path,
        context=RunContext(workspace="ops", job_id="j1", base_url=base_url),
        resources=DEPLOY_RESOURCES,
    )
    assert envelope.ok, (envelope.error, _log(tmp_path))
    assert {k: envelope.result[k] for k in ("status", "service", "version", "environment")} == {
        "status": "success",
        "service": "web",
        "version": "1.2.3",
        "environment": "prod",
    }
    assert "[DRY RUN] Would update ECS service web to 1.2.3" in _log(tmp_path)


def test_bash_resource_endpoints_and_other_urls(api: FakeApi, tmp_path: Path) -> None:
    script = textwrap.dedent(
        r"""
        set -euo pipefail
        base="$BASE_INTERNAL_URL/api/w/$WM_WORKSPACE"
        key=$(curl -s -H "Authorization: Bearer $WM_TOKEN" "$base/resources/get/u/admin/deploy_key" \
          | jq -r .value.key)
        region=$(curl -s "$base/resources/get_value/u/admin/aws_config?x=1" | jq -r .region)
        token=$(curl -s "$base/variables/get_value/u/admin/token" | jq -r .)
        other=$(curl -s "$API/lists/L/contacts?page=1&per_page=1" | jq -c ".contacts[0].id")
        echo "{\"k\": \"$key\", \"r\": \"$region\", \"t\": \"$token\", \"o\": $other}"
        curl -s "$base/resources/get/u/admin/missing"
        """
    )
    with (tmp_path / "log").open("ab") as log:
        envelope = run_script(
            "bash",
            script,
            {},
            resources=DEPLOY_RESOURCES,
            variables={"u/admin/token": "tk"},
            context=RunContext(workspace="ops", job_id="j1", base_url="http://wm.internal"),
            env={"API": api.url},
            log=log,
        )
    assert envelope.error is not None
    assert "resource 'u/admin/missing' is not available" in envelope.error.message
    assert '{"k": "dk", "r": "eu-west-1", "t": "tk", "o": 0}' in _log(tmp_path)
    assert [path for _, path, _, _ in api.requests] == ["/lists/L/contacts"]


@pytest.mark.parametrize("language", ["deno", "bun"])
def test_webhook_handler(language: str, api: FakeApi, tmp_path: Path) -> None:
    data = {"order_id": "o-1", "total": 12}
    signature = hmac.new(b"whs", json.dumps(data, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()
    resources = {
        "u/admin/webhook_secret": {"secret": "whs"},
        "u/admin/slack_webhook": {"url": f"{api.url}/slack"},
    }
    payload = {"event_type": "order.created", "data": data, "timestamp": "2024-01-01T00:00:00Z"}
    envelope = run_brief(
        "webhook_handler.ts",
        {"payload": payload | {"signature": signature}},
        tmp_path,
        language,
        resources={
            "u/admin/webhook_secret": {"secret": "whs"},
            "u/admin/slack_webhook": {"url": f"{api.url}/slack"},
        },
    )
    assert envelope.ok, (envelope.error, _log(tmp_path))
    assert envelope.result == {
        "processed": True,
        "event_type": "order.created",
        "actions_taken": ["signature_validated", "order_processed", "slack_notified"],
    }
    [(method, path, _, body)] = api.requests
    assert (method, path, body["text"]) == ("POST", "/slack", "Webhook received: order.created")
    assert "Processing new order:" in _log(tmp_path)
    forged = run_brief(
        "webhook_handler.ts",
        {"payload": payload | {"signature": "bad"}},
        tmp_path,
        language,
        resources=resources,
    )
    assert forged.error is not None
    assert forged.error.message == "Invalid webhook signature"


@pytest.mark.parametrize("extra", [{}, {"nested": {"a": [1]}}])
def test_bash_args_not_read_positionally_are_environment_variables(
    extra: dict[str, Any], tmp_path: Path
) -> None:
    script = 'name="$1"\necho "$name|$GREETING|${nested:-}|${args_file:-}" >&2\nwhich bash\n'
    args = {"name": "ada", "GREETING": "hi", "args_file": "x", "bad-name": "y"} | extra
    with (tmp_path / "log").open("ab") as log:
        envelope = run_script("bash", script, args, log=log)
    assert envelope.ok, (envelope.error, _log(tmp_path))
    nested = '{"a":[1]}' if extra else ""
    assert f"ada|hi|{nested}|x\n" in _log(tmp_path)


def _bash_runner(tmp_path: Path, script: str, args: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The Bash runner itself, as a pod runs it (no host-side validation in front of it)."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "main.sh").write_text(script)
    (tmp_path / "args.json").write_text(json.dumps(args))
    env = {
        "PATH": os.environ["PATH"],
        "KUBEMILL_CODE_DIR": str(tmp_path / "code"),
        "KUBEMILL_ARGS_FILE": str(tmp_path / "args.json"),
        "KUBEMILL_STATE_FILE": str(tmp_path / "state.json"),
        "KUBEMILL_RESULT_FILE": str(tmp_path / "result.json"),
        "TMPDIR": str(tmp_path),
    }
    runner = Path(__file__).resolve().parents[2] / "runner_images" / "bash" / "run.sh"
    return subprocess.run(["bash", str(runner)], env=env, capture_output=True, text=True, timeout=60)


def test_the_bash_runner_never_lets_args_set_what_the_shell_reads(tmp_path: Path) -> None:
    """Issue 12: an arg `BASH_ENV` pointing at the args file made bash source it (code execution from another
    arg). The runner exports only names the script reads, and never one bash or the loader reads itself."""
    script = (
        'echo "env=${BASH_ENV:-none} ld=${LD_PRELOAD:-none} proxy=${http_proxy:-none} s=${SERVICE:-}"\n'
        "env >&2\n"
    )
    args = {
        "BASH_ENV": str(tmp_path / "args.json"),
        "LD_PRELOAD": "/nonexistent.so",
        "x": "$(kill -9 $PPID)",
        "UNREAD_SETTING": "1",
        "SERVICE": "api",
    }
    proc = _bash_runner(tmp_path, script, args)
    assert proc.returncode == 0, proc.stderr
    assert "env=none ld=none proxy=none s=api" in proc.stdout
    assert "UNREAD_SETTING" not in proc.stderr and "BASH_ENV" not in proc.stderr

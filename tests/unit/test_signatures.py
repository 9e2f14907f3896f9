"""The signatures API and `kubemill schema`, and the schema of every `main` in the product brief."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from kubemill import cli
from kubemill.signatures import LANGUAGES, SignatureError, derive_schema, language_for_path

BRIEF = Path(__file__).resolve().parents[1] / "fixtures" / "brief"


def _p(kind: str, description: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, **extra}


# fixture file -> (properties, required); `order` is the properties' order.
BRIEF_SCHEMAS: dict[str, tuple[dict[str, Any], list[str]]] = {
    "fetch_and_transform.py": (
        {
            "api_endpoint": _p("string", "The API endpoint URL to fetch data from"),
            "date_range_days": _p("integer", "Number of days of data to fetch (default: 7)", default=7),
            "include_metadata": _p("boolean", "Whether to include metadata in response", default=True),
            "output_format": _p("string", "Output format - json, csv, or parquet", default="json"),
            "filters": _p("object", "Optional filters to apply to the data", default=None),
        },
        ["api_endpoint"],
    ),
    "sync_crm_to_database.py": (
        {
            "crm_list_id": _p("string", "The CRM list ID to sync"),
            "batch_size": _p("integer", "Number of records per batch", default=100),
            "dry_run": _p("boolean", "If True, don't actually write to database", default=False),
            "update_existing": _p("boolean", "If True, update existing records", default=True),
        },
        ["crm_list_id"],
    ),
    "dynamic_scheduler.py": (
        {
            "schedule_configs": _p("array", "List of schedule configurations", items={"type": "object"}),
            "dry_run": _p("boolean", "If True, only report what would change", default=True),
        },
        ["schedule_configs"],
    ),
    "expense_approval.py": (
        {
            "expense_id": _p("string", "Unique expense ID"),
            "amount": _p("number", "Expense amount in USD"),
            "category": _p("string", "Expense category"),
            "description": _p("string", "Expense description"),
            "requestor_email": _p("string", "Email of person requesting expense"),
            "receipts": _p("array", "List of receipt file URLs", default=None),
        },
        ["expense_id", "amount", "category", "description", "requestor_email"],
    ),
    "manage_resources.py": (
        {
            "action": _p("string", "Operation to perform"),
            "resource_path": _p("string", 'Path to resource (e.g., "u/admin/my_api")', default=None),
            "resource_type": _p("string", "Type of resource (for create)", default=None),
            "resource_value": _p("object", "Resource value (for create/update)", default=None),
            "description": _p("string", "Resource description", default=None),
        },
        ["action"],
    ),
    "database_health_check.py": (
        {
            "check_connections": _p("boolean", "Check connection pool status", default=True),
            "check_slow_queries": _p("boolean", "Check for slow running queries", default=True),
            "slow_query_threshold_ms": _p("integer", "Threshold for slow query alerts", default=5000),
            "alert_channel": _p("string", "Slack channel for alerts", default="#database-alerts"),
        },
        [],
    ),
    "error_handling.py": ({"input_data": _p("object")}, ["input_data"]),
    "debugging_tips.py": ({"data": _p("object")}, ["data"]),
    "webhook_handler.ts": (
        {
            "payload": _p(
                "object",
                properties={
                    "event_type": {"type": "string"},
                    "data": {"type": "object"},
                    "timestamp": {"type": "string"},
                    "signature": {"type": "string"},
                },
                required=["event_type", "data", "timestamp"],
            ),
            "config": _p(
                "object",
                properties={
                    "validate_signature": {"type": "boolean"},
                    "allowed_events": {"type": "array", "items": {"type": "string"}},
                    "forward_to_slack": {"type": "boolean"},
                },
                required=["validate_signature", "allowed_events", "forward_to_slack"],
                default={
                    "validate_signature": True,
                    "allowed_events": ["order.created", "order.updated", "payment.completed"],
                    "forward_to_slack": True,
                },
            ),
        },
        ["payload"],
    ),
    "aggregate_metrics.ts": (
        {
            "start_date": _p("string"),
            "end_date": _p("string"),
            "config": _p(
                "object",
                properties={
                    "sources": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["database", "api", "cache"]},
                    },
                    "period": {"type": "string", "enum": ["hourly", "daily", "weekly", "monthly"]},
                    "include_comparisons": {"type": "boolean"},
                    "custom_dimensions": {"type": "array", "items": {"type": "string"}},
                },
                required=["sources", "period", "include_comparisons"],
                default={"sources": ["database"], "period": "daily", "include_comparisons": True},
            ),
        },
        ["start_date", "end_date"],
    ),
    "batch_processor.go": (
        {
            "items": _p("array", items={"type": "object"}),
            "config": _p(
                "object",
                properties={
                    "batch_size": {"type": "integer"},
                    "concurrency": {"type": "integer"},
                    "retry_attempts": {"type": "integer"},
                    "timeout_secs": {"type": "integer"},
                },
                required=["batch_size", "concurrency", "retry_attempts", "timeout_secs"],
            ),
        },
        ["items", "config"],
    ),
    # The brief's deploy script reads SERVICE_NAME, VERSION, ... from the environment, not from "$1".
    "deploy_service.sh": ({}, []),
}


def test_every_brief_script_has_an_expected_schema() -> None:
    assert sorted(p.name for p in BRIEF.iterdir()) == sorted(BRIEF_SCHEMAS)


@pytest.mark.parametrize("name", sorted(BRIEF_SCHEMAS))
def test_brief_script_schema(name: str) -> None:
    properties, required = BRIEF_SCHEMAS[name]
    path = BRIEF / name
    schema = derive_schema(language_for_path(str(path)), path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema == {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "order": list(properties),
    }


def test_languages() -> None:
    assert {"python3", "deno", "bun", "typescript", "go", "bash"} == LANGUAGES


def test_unknown_language_is_a_signature_error() -> None:
    with pytest.raises(SignatureError, match="unsupported language 'rust'"):
        derive_schema("rust", "fn main() {}")


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("f/a/b.py", "python3"),
        ("x.ts", "deno"),
        ("f/x/y.deno.ts", "deno"),
        ("f/x/y.bun.ts", "bun"),
        ("main.go", "go"),
        ("run.sh", "bash"),
        ("RUN.SH", "bash"),
    ],
)
def test_language_for_path(path: str, language: str) -> None:
    assert language_for_path(path) == language


def test_language_for_unknown_extension() -> None:
    with pytest.raises(ValueError, match=r"\.rb"):
        language_for_path("script.rb")


def test_signature_error_text() -> None:
    assert str(SignatureError("bad", 3)) == "line 3: bad"
    assert str(SignatureError("bad")) == "bad"
    err = SignatureError("bad", 7)
    assert (err.line, err.message) == (7, "bad")
    assert isinstance(err, ValueError)


def test_cli_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema", str(BRIEF / "batch_processor.go")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["order"] == ["items", "config"]
    assert out.startswith("{\n  ")  # indented


def test_cli_language_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "script.txt"
    script.write_text('name="$1"\n')
    assert cli.main(["schema", str(script), "--language", "bash"]) == 0
    assert json.loads(capsys.readouterr().out)["required"] == ["name"]


def test_cli_syntax_error_is_one_line_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "broken.py"
    script.write_text("import os\n\ndef main(a: str:\n    pass\n")
    assert cli.main(["schema", str(script)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"kubemill schema: {script}:3: invalid syntax\n"


@pytest.mark.parametrize(("name", "content"), [("x.rb", "puts 1"), ("missing.py", None)])
def test_cli_unreadable_input_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str | None
) -> None:
    script = tmp_path / name
    if content is not None:
        script.write_text(content)
    assert cli.main(["schema", str(script)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"kubemill schema: {script}: ")
    assert err.count("\n") == 1


def test_derivation_is_safe_from_several_threads() -> None:
    code = (BRIEF / "webhook_handler.ts").read_text()
    expected = derive_schema("deno", code)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: derive_schema("deno", code), range(40)))
    assert all(r == expected for r in results)

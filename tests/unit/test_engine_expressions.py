"""The expression sandbox (QuickJS with time and memory limits) and validate_flow."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubemill.engine import ExpressionError, ExpressionTimeout, Problem, QuickJSEvaluator, validate_flow
from kubemill.engine.validation import ACCEPTED_KEYS, admission_problems, describe
from kubemill.models.openflow import load_flow_yaml

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
EVAL = QuickJSEvaluator(time_limit=0.25)


@pytest.mark.parametrize(
    ("expr", "variables", "expected"),
    [
        ("results.validate_order.total > 5000", {"results": {"validate_order": {"total": 7000}}}, True),
        ("flow_input.iter.value * 2", {"flow_input": {"iter": {"value": 21, "index": 0}}}, 42),
        (
            "{\n  order_id: results.v.id,\n  total: 3\n}",
            {"results": {"v": {"id": "o"}}},
            {"order_id": "o", "total": 3},
        ),
        ("const x = previous_result.n; return x + 1", {"previous_result": {"n": 1}}, 2),
        ("previous_result?.missing?.deep ?? 'none'", {"previous_result": {}}, "none"),
        ("undefined", {}, None),
        ("new Date().toISOString()", {}, "2025-03-04T05:06:07.000Z"),
    ],
)
def test_expressions_evaluate_windmill_style(
    expr: str, variables: dict[str, object], expected: object
) -> None:
    assert EVAL.evaluate(expr, variables, NOW) == expected  # type: ignore[arg-type]


def test_expressions_are_deterministic() -> None:
    expr = "[Math.random(), Date.now()]"
    assert EVAL.evaluate(expr, {}, NOW) == EVAL.evaluate(expr, {}, NOW)


def test_endless_loop_is_stopped_by_the_time_limit() -> None:
    start = time.monotonic()
    with pytest.raises(ExpressionTimeout):
        EVAL.evaluate("while(true){}", {}, NOW)
    assert time.monotonic() - start < 2.0


def test_runaway_allocation_is_stopped_by_the_memory_limit() -> None:
    with pytest.raises(ExpressionError, match="memory"):
        EVAL.evaluate("let a = []; while (true) { a.push(new Array(100000).fill(1.5)); }", {}, NOW)
    assert EVAL.evaluate("1 + 1", {}, NOW) == 2


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("throw new Error('nope')", "Error: nope"),
        ("missing.x", "ReferenceError"),
        ("() => 1", "JSON"),
        ("function f() { return f() } return f()", "stack overflow"),
    ],
)
def test_failing_expressions_raise_expression_error(expr: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        EVAL.evaluate(expr, {}, NOW)


def test_syntax_is_checked_without_running() -> None:
    assert EVAL.syntax_error("flow_input.a +") is not None
    assert EVAL.syntax_error("while(true){}") is None  # parses; only running it would loop


BRIEF = Path(__file__).parent.parent / "fixtures" / "histories" / "order_processing.flow.yaml"
BRIEF_SCRIPTS = {
    "f/order_processing/validate_order",
    "f/inventory/check_availability",
    "f/payments/process_payment",
    "f/fulfillment/create_shipment",
    "f/notifications/send_order_confirmation",
}


def test_the_brief_flow_is_valid() -> None:
    assert validate_flow(load_flow_yaml(BRIEF.read_text()), BRIEF_SCRIPTS) == []


def test_unknown_script_and_bad_expression_name_their_step() -> None:
    flow = load_flow_yaml(
        BRIEF.read_text().replace("results.validate_order.total > 5000", "results.( > 5000")
    )
    problems = validate_flow(flow, BRIEF_SCRIPTS - {"f/payments/process_payment"})
    steps = sorted((p.step_id or "", p.message.split(":")[0]) for p in problems)
    assert steps == [
        ("process_approved", "unknown script path 'f/payments/process_payment'"),
        ("process_normal", "unknown script path 'f/payments/process_payment'"),
        ("route_by_value", "branch 0 expr"),
    ]


def test_bad_module_shape_and_duplicate_ids_are_problems() -> None:
    bad_shape = {"value": {"modules": [{"id": "a", "value": {"type": "forloopflow", "modules": []}}]}}
    problems = validate_flow(bad_shape, set())
    assert problems and all(p.step_id == "a" for p in problems)
    assert any("iterator" in p.message for p in problems)
    duplicate = {
        "value": {
            "modules": [
                {"id": "a", "value": {"type": "identity"}},
                {"id": "a", "value": {"type": "identity"}},
            ]
        }
    }
    assert any("more than once" in p.message for p in validate_flow(duplicate, set()))
    unknown = {"value": {"modules": [{"id": "z", "value": {"type": "teleport"}}]}}
    assert [p.step_id for p in validate_flow(unknown, set())] == ["z"]


def test_while_loop_that_cannot_end_is_a_problem() -> None:
    flow = {
        "value": {
            "modules": [
                {
                    "id": "w",
                    "value": {
                        "type": "whileloopflow",
                        "modules": [{"id": "i", "value": {"type": "identity"}}],
                    },
                }
            ]
        }
    }
    assert validate_flow(flow, set()) == [Problem("w", "whileloopflow without stop_after_if never ends")]


def _raw(step_id: str, content: str, **inputs: object) -> dict[str, object]:
    transforms = {k: {"type": "static", "value": v} for k, v in inputs.items()}
    value = {"type": "rawscript", "language": "python3", "content": content, "input_transforms": transforms}
    return {"id": step_id, "value": value}


def _loop(iterator: dict[str, object], **extra: object) -> dict[str, object]:
    return {"id": "l", "value": {"type": "forloopflow", "iterator": iterator, "modules": [], **extra}}


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ({"concurrency_key": "k"}, "concurrency_key: a custom concurrency key"),
        ({"priority": 3}, "priority: job priorities are not supported"),
        ({"modules": [{"id": "p", "priority": 1, "value": {"type": "identity"}}]}, "step p: priority"),
        (
            {"modules": [{"id": "d", "delete_after_use": True, "value": {"type": "identity"}}]},
            "step d: delete_after_use",
        ),
        (
            {"modules": [{**_raw("t", ""), "value": {**_raw("t", "")["value"], "tag": "gpu"}}]},
            "step t: tag: worker tags",
        ),
        ({"paralel": True}, "value.paralel: not a key kubemill knows, so it would be ignored"),
        ({"tag": "gpu"}, "value.tag: worker tags do not apply"),
        (
            {"modules": [_loop({"type": "static", "value": [], "exr": "x"})]},
            "step l: value.modules[0].value.iterator.exr: not a key kubemill knows",
        ),
        (
            {"modules": [_loop({"type": "static", "value": []}, squash=True)]},
            "step l: value.modules[0].value.squash: squashing a loop's iterations",
        ),
        (
            {"modules": [{"id": "i", "cache_ttl": 5, "value": {"type": "identity"}}]},
            "step i: cache_ttl: only script, rawscript and flow steps are cached, not a identity",
        ),
        (
            {
                "modules": [
                    {
                        **_raw("a", "def main():\n    pass\n"),
                        "value": {**_raw("a", "")["value"], "concurrent_limit": 1},
                    }
                ]
            },
            "step a: concurrent_limit: per-step concurrency limits are not supported",
        ),
        (
            {
                "modules": [
                    {
                        "id": "w",
                        "stop_after_if": {"expr": "true"},
                        "value": {"type": "whileloopflow", "parallel": True, "modules": []},
                    }
                ]
            },
            "step w: parallel: a whileloopflow runs its iterations one after another",
        ),
        (
            {"modules": [_raw("a", "def main(n: int):\n    return n\n", false=1)]},
            "step a: input_transforms key 'false' is not a parameter of the script (its parameters: n); "
            "YAML reads an unquoted n as false: quote the key ('n')",
        ),
        (
            {"modules": [_raw("a", "def main(x: int):\n    return x\n", y=1)]},
            "step a: input_transforms key 'y' is not a parameter of the script (its parameters: x)",
        ),
    ],
)
def test_fields_kubemill_cannot_honour_are_refused_naming_them(value: dict[str, object], said: str) -> None:
    document = {"value": {"modules": [], **value}}
    problems = validate_flow(document, set())
    text = "; ".join(f"step {p.step_id}: {p.message}" if p.step_id else p.message for p in problems)
    assert said in text


def test_input_keys_of_a_script_step_are_checked_against_the_scripts_parameters() -> None:
    transforms = {"nope": {"type": "static", "value": 1}}
    flow = {
        "value": {
            "modules": [
                {"id": "a", "value": {"type": "script", "path": "f/x/s", "input_transforms": transforms}}
            ]
        }
    }
    problems = validate_flow(flow, {"f/x/s"}, script_params={"f/x/s": ["n"]})
    assert [p.message for p in problems] == [
        "input_transforms key 'nope' is not a parameter of the script (its parameters: n)"
    ]


def test_cache_ttl_and_a_concurrency_window_are_accepted() -> None:
    step = {**_raw("a", "def main():\n    return 1\n"), "cache_ttl": 5}
    document = {
        "value": {"modules": [step], "cache_ttl": 60, "concurrent_limit": 1, "concurrency_time_window_s": 9}
    }
    assert validate_flow(document, set()) == []


def test_the_windmill_keys_kubemill_accepts_on_purpose_are_listed_and_pass() -> None:
    step = _raw("a", "def main():\n    return 1\n")
    step["value"]["assets"] = [{"kind": "s3object", "path": "x"}]
    document = {
        "ws_error_handler_muted": True,
        "visible_to_runner_only": False,
        "value": {"modules": [step], "chat_input_enabled": False},
    }
    assert validate_flow(document, set()) == []
    assert {key for keys in ACCEPTED_KEYS.values() for key in keys} == {
        "ws_error_handler_muted", "visible_to_runner_only", "chat_input_enabled", "assets"
    }  # fmt: skip


def test_admission_refuses_what_kubemill_would_not_run_and_checks_keys_against_known_scripts() -> None:
    step = {"id": "s", "value": {"type": "script", "path": "f/x/double", "input_transforms": {"false": {}}}}
    step["value"]["input_transforms"] = {"false": {"type": "static", "value": 2}}
    document = {"value": {"modules": [step], "concurrency_key": "k"}}
    assert describe(admission_problems(document)).startswith("concurrency_key: a custom concurrency key")
    said = describe(admission_problems(document, {"f/x/double": ["n"]}))
    assert "step s: input_transforms key 'false' is not a parameter of the script (its parameters: n)" in said
    assert describe(admission_problems({"value": {"modules": [{"id": "x", "value": {"type": "nope"}}]}})) == (
        "step x: value.modules.0: Value error, step 'x': unknown module type 'nope' (expected one of: "
        "rawscript, script, flow, forloopflow, whileloopflow, branchone, branchall, identity, approval)"
    )

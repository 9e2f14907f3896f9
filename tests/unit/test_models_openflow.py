"""OpenFlow models: Windmill flows parse unchanged, read back as written, and bad steps are named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from kubemill.models.openflow import (
    Approval,
    BranchOne,
    OpenFlow,
    PathScript,
    WhileloopFlow,
    load_flow_yaml,
    walk_modules,
)
from kubemill.models.openflow_parts import JavascriptTransform, StaticTransform
from pydantic import ValidationError

BRIEF = Path("/work/shared/seed/windmill-skill.md")
REPO = Path(__file__).resolve().parents[2]


def brief_flow_text() -> str:
    """The order-processing flow exactly as the brief prints it (falls back to the example's copy)."""
    if BRIEF.exists():
        match = re.search(r"```yaml\n(# flows/order_processing_flow\.yaml.*?)```", BRIEF.read_text(), re.S)
        assert match is not None
        return match.group(1)
    return (REPO / "examples/windmill/f/order_processing/order_processing.flow/flow.yaml").read_text()


def test_brief_order_processing_flow_parses() -> None:
    flow = load_flow_yaml(brief_flow_text())
    ids = [m.id for m in flow.value.all_modules()]
    assert ids == [
        "validate_order",
        "check_inventory",
        "route_by_value",
        "request_approval",
        "process_approved",
        "process_normal",
        "create_shipment",
        "send_confirmation",
    ]
    route = flow.value.modules[2].value
    assert isinstance(route, BranchOne)
    approval = route.branches[0].modules[0].value
    assert isinstance(approval, Approval)
    assert approval.approvers == ("admin@example.com", "manager@example.com")
    assert approval.timeout == 86400
    first = flow.value.modules[0].value
    assert isinstance(first, PathScript)
    assert first.input_transforms["order"] == JavascriptTransform(type="javascript", expr="flow_input.order")
    assert flow.schema_ is not None and flow.schema_["required"] == ["order"]


def test_brief_flow_reads_back_exactly_as_written() -> None:
    text = brief_flow_text()
    assert load_flow_yaml(text).to_document() == yaml.safe_load(text)


WINDMILL_FLOW = """
summary: every Windmill option
value:
  modules:
    - id: a
      summary: loop
      value:
        type: forloopflow
        iterator: {type: javascript, expr: flow_input.items}
        skip_failures: false
        parallel: true
        parallelism: {type: static, value: 4}
        modules:
          - id: b
            value:
              type: rawscript
              language: python3
              content: "def main(x): return x"
              input_transforms:
                x: {type: javascript, expr: flow_input.iter.value}
      stop_after_all_iters_if: {expr: "result.length > 3", skip_if_stopped: true}
    - id: c
      value: {type: whileloopflow, modules: [{id: d, value: {type: identity}}]}
      stop_after_if: {expr: "true"}
    - id: e
      value: {type: branchall, parallel: false, branches: [{summary: s, skip_failure: false, modules: []}]}
      skip_if: {expr: "false"}
      sleep: {type: static, value: 2}
      timeout: {type: javascript, expr: flow_input.t}
      retry:
        constant: {attempts: 2, seconds: 1}
        exponential: {attempts: 3, multiplier: 2, seconds: 2, random_factor: 10}
        retry_if: {expr: "error.name == 'X'"}
      suspend:
        required_events: 2
        timeout: 600
        resume_form: {schema: {type: object}}
        continue_on_disapprove_timeout: true
      mock: {enabled: false, return_value: 1}
      continue_on_error: true
      some_future_windmill_field: {kept: true}
    - id: f
      value: {type: flow, path: f/x/sub, input_transforms: {}}
  failure_module:
    id: failure
    value:
      type: script
      path: f/x/on_failure
      input_transforms: {err: {type: javascript, expr: previous_result.error}}
  preprocessor_module:
    id: preprocessor
    value: {type: script, path: hub/123/foo, input_transforms: {}}
  early_return: a
  concurrent_limit: 2
  concurrency_time_window_s: 60
  flow_env: {A: b}
  debounce_delay_s: 3
schema: {type: object, properties: {}}
ws_error_handler_muted: false
"""


def test_every_windmill_option_parses_and_extra_fields_are_kept() -> None:
    flow = load_flow_yaml(WINDMILL_FLOW)
    assert flow.to_document() == yaml.safe_load(WINDMILL_FLOW)
    e = flow.value.modules[2]
    assert e.timeout == JavascriptTransform(type="javascript", expr="flow_input.t")
    assert e.retry is not None and e.retry.max_attempts == 5
    assert [m.id for m in walk_modules(flow.value.modules)] == ["a", "b", "c", "d", "e", "f"]


def test_bare_numbers_for_sleep_timeout_parallelism_are_static_transforms() -> None:
    flow = load_flow_yaml(
        "value: {modules: [{id: a, sleep: 5, timeout: 30, value: {type: whileloopflow, parallelism: 2, "
        "modules: [{id: b, value: {type: identity}}]}}]}"
    )
    step = flow.value.modules[0]
    assert step.sleep == StaticTransform(type="static", value=5)
    assert step.timeout == StaticTransform(type="static", value=30)
    assert isinstance(step.value, WhileloopFlow)
    assert step.value.parallelism == StaticTransform(type="static", value=2)


def test_models_are_frozen() -> None:
    flow = load_flow_yaml(WINDMILL_FLOW)
    with pytest.raises(ValidationError):
        flow.value.modules[0].id = "changed"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("value: {modules: [{id: only, value: {type: bogus}}]}", "step 'only': unknown module type 'bogus'"),
        (
            "value: {modules: [{id: top, value: {type: branchall, branches: [{modules: "
            "[{id: deep, value: {type: aiagent}}]}]}}]}",
            "step 'deep': unknown module type 'aiagent'",
        ),
        (
            "value: {modules: [{id: a, value: {type: identity}}, {id: a, value: {type: identity}}]}",
            "'a' is used more",
        ),
        ("value: {modules: [{id: a, value: {type: approval, approvers: []}}]}", "at least 1 item"),
        ("value: {modules: [{id: a, value: {type: script}}]}", "path"),
        ("value: {modules: [], early_return: nope}", "early_return names step 'nope'"),
        (
            "value: {modules: [{id: a, value: {type: identity}, "
            "retry: {exponential: {attempts: 2, seconds: 0}}}]}",
            "must be at least 1",
        ),
        ("- not a mapping", "must be a mapping"),
    ],
)
def test_malformed_flows_are_rejected_with_a_message_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        load_flow_yaml(text)


def test_openflow_from_python_values() -> None:
    flow = OpenFlow.model_validate({"value": {"modules": [{"id": "x", "value": {"type": "identity"}}]}})
    assert flow.summary == ""
    assert flow.to_document() == {"value": {"modules": [{"id": "x", "value": {"type": "identity"}}]}}


def test_steps_without_an_id_get_one_in_document_order_skipping_used_ids() -> None:
    flow = OpenFlow.model_validate(
        {
            "value": {
                "modules": [
                    {"value": {"type": "identity"}},
                    {"id": "step_2", "value": {"type": "identity"}},
                    {
                        "value": {
                            "type": "forloopflow",
                            "iterator": {"type": "static", "value": []},
                            "modules": [{"value": {"type": "identity"}}],
                        }
                    },
                ],
                "failure_module": {"value": {"type": "identity"}},
            }
        }
    )
    assert [m.id for m in flow.value.all_modules()] == ["step_1", "step_2", "step_3", "step_4", "step_5"]

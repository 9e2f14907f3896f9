"""OpenFlow parsing: any YAML text or JSON-like document is an OpenFlow or a ValueError naming the fault."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st
from kubemill.engine.validation import validate_flow
from kubemill.models.openflow import load_flow_yaml

_KEYS = [
    "summary",
    "value",
    "modules",
    "id",
    "type",
    "content",
    "language",
    "path",
    "input_transforms",
    "expr",
    "value",
    "iterator",
    "skip_failures",
    "parallel",
    "branches",
    "default",
    "failure_module",
    "retry",
    "constant",
    "attempts",
    "seconds",
    "suspend",
    "required_events",
    "timeout",
    "stop_after_if",
    "skip_if",
    "sleep",
    "schema",
    "rawscript",
    "script",
    "flow",
    "forloopflow",
    "whileloopflow",
    "branchone",
    "branchall",
    "identity",
    "javascript",
    "static",
    "preprocessor_module",
    "same_worker",
    "concurrent_limit",
    "mock",
    "enabled",
    "return_value",
    "approval",
    "resume_form",
    "continue_on_error",
]
_TYPES = [
    "rawscript",
    "script",
    "flow",
    "forloopflow",
    "whileloopflow",
    "branchone",
    "branchall",
    "identity",
    "javascript",
    "static",
    "python3",
    "bash",
    "deno",
    "bun",
    "go",
]
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.sampled_from(_TYPES),
    st.text(max_size=12),
)
_DOCS = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=6)), inner, max_size=5),
    ),
    max_leaves=40,
)


def _check(text: str) -> None:
    try:
        flow = load_flow_yaml(text)
    except ValueError as exc:  # pydantic.ValidationError is one; both name the field
        assert str(exc)  # noqa: PT017 - Hypothesis: the exception is checked whatever its type
        return
    for problem in validate_flow(flow, known_script_paths=()):
        assert problem.message


def _check_document(doc: dict[str, Any]) -> None:
    for problem in validate_flow(doc, known_script_paths=()):
        assert problem.message


@given(st.dictionaries(st.sampled_from(_KEYS), _DOCS, max_size=4))
def test_openflow_documents(doc: dict[str, Any]) -> None:
    _check(yaml.safe_dump(doc))
    _check_document(doc)


@given(st.builds(lambda modules: {"summary": "", "value": {"modules": modules}}, st.lists(_DOCS, max_size=3)))
def test_openflow_modules(doc: dict[str, Any]) -> None:
    _check(yaml.safe_dump(doc))
    _check_document(doc)


@given(st.text(max_size=200))
def test_openflow_text(text: str) -> None:
    _check(text)

"""Every conformance case through `kubemill run` (a real subprocess, real runners): the result and exit code
are the ones Windmill's own tests expect (tests/conformance/cases.py says how a case is written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.cases import Case, check, load_cases, run_locally

CASES = load_cases()


def test_there_are_cases_and_each_names_its_windmill_test() -> None:
    assert len(CASES) >= 30
    assert all(case.windmill for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_kubemill_run_conforms(case: Case, tmp_path: Path) -> None:
    outcome = run_locally(case, tmp_path)
    assert check(case, outcome.exit, outcome.result, outcome.stderr) == [], outcome.stderr[-2000:]

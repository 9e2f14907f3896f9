"""Python runner specifics: what `main` may return, dependencies, and the wmill client's answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubemill.local.scripts import run_script
from kubemill.runners import Envelope


def run(code: str, args: dict[str, Any], tmp_path: Path, **kw: Any) -> Envelope:
    with (tmp_path / "log").open("ab") as log:
        return run_script("python3", code, args, log=log, **kw)


def test_unserialisable_result_is_an_error_envelope(tmp_path: Path) -> None:
    envelope = run("def main():\n    return {'f': object()}\n", {}, tmp_path)
    assert envelope.error is not None
    assert envelope.error.name == "ResultNotSerializable"
    assert "object is not JSON serializable" in envelope.error.message


def test_common_python_values_become_json(tmp_path: Path) -> None:
    code = (
        "import datetime, decimal, enum\n\nclass Level(enum.Enum):\n    HIGH = 'high'\n\n"
        "async def main():\n"
        "    return {'when': datetime.date(2024, 1, 2), 'amount': decimal.Decimal('1.5'),\n"
        "            'tags': {'a'}, 'level': Level.HIGH, 'nan': float('nan')}\n"
    )
    envelope = run(code, {}, tmp_path)
    assert envelope.result == {
        "when": "2024-01-02",
        "amount": 1.5,
        "tags": ["a"],
        "level": "high",
        "nan": None,
    }


def test_requirements_header_installs_into_a_cached_environment(tmp_path: Path) -> None:
    code = (
        "# requirements:\n# tabulate==0.9.0\n\nimport tabulate\n\n"
        "def main():\n    return [tabulate.__version__, tabulate.tabulate([[1, 2]], tablefmt='plain')]\n"
    )
    envelope = run(code, {}, tmp_path)
    assert envelope.result == ["0.9.0", "1  2"], (tmp_path / "log").read_text()[-2000:]


def test_missing_resource_says_how_to_declare_it(tmp_path: Path) -> None:
    code = "import wmill\n\ndef main():\n    return wmill.get_resource('u/admin/nope')\n"
    envelope = run(code, {}, tmp_path)
    assert envelope.error is not None
    assert envelope.error.name == "ResourceNotFound"
    assert "'u/admin/nope'" in envelope.error.message
    assert "spec.resources" in envelope.error.message


def test_resources_interpolate_variables_and_json_variables_read_like_dicts(tmp_path: Path) -> None:
    code = (
        "import wmill\n\ndef main():\n    cfg = wmill.get_variable('u/admin/cfg')\n"
        "    return [wmill.get_resource('u/admin/db'), cfg.get('a'), cfg['a'], isinstance(cfg, str)]\n"
    )
    envelope = run(
        code,
        {},
        tmp_path,
        resources={"u/admin/db": {"host": "h", "password": "$var:u/admin/pw"}},
        variables={"u/admin/pw": "s3cret", "u/admin/cfg": '{"a": 1}'},
    )
    assert envelope.result == [{"host": "h", "password": "s3cret"}, 1, 1, True]


def test_state_set_before_a_failure_is_kept(tmp_path: Path) -> None:
    code = "import wmill\n\ndef main():\n    wmill.set_state({'step': 1})\n    raise RuntimeError('late')\n"
    state_file = tmp_path / "state.json"
    envelope = run(code, {}, tmp_path, state_file=state_file)
    assert envelope.error is not None
    assert envelope.error.name == "RuntimeError"
    assert envelope.state == {"step": 1}
    assert state_file.read_text() == '{"step": 1}'


def test_flow_user_state_comes_in_as_given_and_goes_back_in_the_envelope(tmp_path: Path) -> None:
    code = (
        "import wmill\n\ndef main():\n    seen = wmill.get_flow_user_state('k')\n"
        "    wmill.set_flow_user_state('j', [seen])\n    return seen\n"
    )
    envelope = run(code, {}, tmp_path, env={"KUBEMILL_FLOW_USER_STATES": '{"k": 1}'})
    assert (envelope.result, envelope.flow_user_states) == (1, {"k": 1, "j": [1]})
    untouched = run(
        "import wmill\n\ndef main():\n    return wmill.get_flow_user_state('k')\n",
        {},
        tmp_path,
        env={"KUBEMILL_FLOW_USER_STATES": "{}"},
    )
    assert (untouched.result, untouched.flow_user_states) == (None, None)


def test_flow_user_state_outside_a_flow_run_says_it_is_not_supported(tmp_path: Path) -> None:
    envelope = run("import wmill\n\ndef main():\n    wmill.set_flow_user_state('k', 1)\n", {}, tmp_path)
    assert envelope.error is not None and envelope.error.name == "NotSupported"
    assert "exists only in a step of a flow run" in envelope.error.message

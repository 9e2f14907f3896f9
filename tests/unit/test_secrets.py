"""Resolving a run's declared resources and variables into its per-run Secret, and masking secret values."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import pytest
from kubemill.models.resources import Resource, Variable
from kubemill.secrets import (
    MASK_FORMS_KEY,
    MASKS_KEY,
    WORKSPACE_STORAGE_KEY,
    UnresolvedReference,
    decode_secret,
    mask_forms,
    mask_json,
    mask_text,
    masks_from_secret_data,
    resolve,
    secret_names,
)


def resource(path: str, value: dict[str, Any], value_from: dict[str, Any] | None = None) -> Resource:
    spec: dict[str, Any] = {"path": path, "resourceType": "postgresql", "value": value}
    if value_from:
        spec["valueFrom"] = {
            k: {"secretKeyRef": {"name": n, "key": key}} for k, (n, key) in value_from.items()
        }
    return Resource.model_validate(
        {"apiVersion": "kubemill.dev/v1alpha1", "kind": "Resource", "metadata": {"name": "r"}, "spec": spec}
    )


def variable(
    path: str, value: str | None = None, secret: tuple[str, str] | None = None, is_secret: bool = False
) -> Variable:
    spec: dict[str, Any] = {"path": path, "isSecret": is_secret}
    if secret:
        spec["valueFrom"] = {"secretKeyRef": {"name": secret[0], "key": secret[1]}}
    else:
        spec["value"] = value
    return Variable.model_validate(
        {"apiVersion": "kubemill.dev/v1alpha1", "kind": "Variable", "metadata": {"name": "v"}, "spec": spec}
    )


PG = resource(
    "u/admin/pg",
    {"host": "db.local", "port": 5432, "user": "app", "dbname": "$var:f/ops/dbname"},
    {"password": ("pg-credentials", "password")},
)
RESOURCES = {"u/admin/pg": PG, "u/admin/other": resource("u/admin/other", {"token": "$var:f/ops/token"})}
VARIABLES = {
    "f/ops/dbname": variable("f/ops/dbname", "warehouse"),
    "f/ops/token": variable("f/ops/token", secret=("tokens", "slack")),
    "f/ops/plain": variable("f/ops/plain", "hello"),
    "f/ops/hidden": variable("f/ops/hidden", "inline-secret", is_secret=True),
}
SECRETS = {"pg-credentials": {"password": "s3cr3t-pw"}, "tokens": {"slack": "xoxb-123456"}}


def test_only_declared_paths_reach_the_run_and_var_references_are_interpolated() -> None:
    run = resolve(["u/admin/pg"], RESOURCES, VARIABLES, SECRETS)
    assert run.resources == {
        "u/admin/pg": {
            "host": "db.local",
            "port": 5432,
            "user": "app",
            "dbname": "warehouse",
            "password": "s3cr3t-pw",
        }
    }
    assert run.variables == {}
    assert run.masks == {"s3cr3t-pw"}
    data = run.secret_data()
    # not u/admin/other, not the referenced variable; the runner gets every form of the masks
    assert set(data) == {"resource.u.admin.pg", MASKS_KEY, MASK_FORMS_KEY}
    assert json.loads(data[MASK_FORMS_KEY]) == mask_forms(["s3cr3t-pw"])
    assert json.loads(data["resource.u.admin.pg"])["password"] == "s3cr3t-pw"
    assert masks_from_secret_data(data) == {"s3cr3t-pw"}


def test_variables_secret_ones_masked_and_referenced_secret_variables_masked() -> None:
    run = resolve(["f/ops/plain", "f/ops/hidden", "u/admin/other"], RESOURCES, VARIABLES, SECRETS)
    assert run.variables == {"f/ops/plain": "hello", "f/ops/hidden": "inline-secret"}
    assert run.resources == {"u/admin/other": {"token": "xoxb-123456"}}
    assert run.masks == {"inline-secret", "xoxb-123456"}
    assert set(run.secret_data()) == {
        "variable.f.ops.plain",
        "variable.f.ops.hidden",
        "resource.u.admin.other",
        MASKS_KEY,
        MASK_FORMS_KEY,
    }


def test_secret_names_follow_references_and_only_declared() -> None:
    assert secret_names(["u/admin/pg"], RESOURCES, VARIABLES) == {"pg-credentials"}
    assert secret_names(["u/admin/other"], RESOURCES, VARIABLES) == {"tokens"}
    assert secret_names(["f/ops/plain"], RESOURCES, VARIABLES) == set()


def test_a_path_that_is_both_a_resource_and_a_variable_gives_both() -> None:
    variables = {**VARIABLES, "u/admin/pg": variable("u/admin/pg", "also a variable")}
    run = resolve(["u/admin/pg"], RESOURCES, variables, SECRETS)
    assert set(run.resources) == set(run.variables) == {"u/admin/pg"}


@pytest.mark.parametrize(
    ("declared", "secrets", "reason", "words", "retryable"),
    [
        (["u/admin/nope"], SECRETS, "ResourceNotFound", ["u/admin/nope", "spec.resources"], False),
        (["u/admin/pg"], {}, "SecretNotFound", ["pg-credentials", "password", "does not exist"], True),
        (
            ["u/admin/pg"],
            {"pg-credentials": {"pw": "x"}},
            "SecretNotFound",
            ["no such key", "it has: pw"],
            True,
        ),
    ],
)
def test_unresolved_references_say_what_is_missing(
    declared: list[str], secrets: dict[str, dict[str, str]], reason: str, words: list[str], retryable: bool
) -> None:
    with pytest.raises(UnresolvedReference) as caught:
        resolve(declared, RESOURCES, VARIABLES, secrets)
    assert caught.value.reason == reason
    assert caught.value.retryable is retryable
    for word in words:
        assert word in caught.value.message


def test_missing_var_target_and_reference_cycle() -> None:
    broken = {"u/admin/x": resource("u/admin/x", {"a": "$var:f/ops/gone"})}
    with pytest.raises(UnresolvedReference) as caught:
        resolve(["u/admin/x"], broken, VARIABLES, SECRETS)
    assert caught.value.reason == "VariableNotFound"
    loop = {"u/admin/x": resource("u/admin/x", {"a": "$res:u/admin/x"})}
    with pytest.raises(UnresolvedReference) as caught:
        resolve(["u/admin/x"], loop, VARIABLES, SECRETS)
    assert caught.value.reason == "ReferenceCycle"


def test_decode_secret() -> None:
    data = {"a": base64.b64encode(b"hello").decode(), "b": base64.b64encode(b"\xff\xfe").decode()}
    assert decode_secret(data) == {"a": "hello", "b": data["b"]}
    assert decode_secret(None) == {}


def test_mask_text_every_form() -> None:
    masks = {"s3cr3t-pw", 'quo"te', "line-one\nline-two", "ab"}
    text = 'connecting with s3cr3t-pw; json {"p": "quo\\"te"}; pem line-one and line-two; short ab stays'
    masked = mask_text(text, masks)
    assert "s3cr3t-pw" not in masked and "quo" not in masked and "line-one" not in masked
    assert "line-two" not in masked
    assert masked.count("***") == 4
    assert "short ab stays" in masked


def test_mask_longest_first() -> None:
    assert mask_text("token=abcdef123", {"abc", "abcdef123"}) == "token=***"


def test_mask_json_walks_results_and_errors() -> None:
    value = {"password": "s3cr3t-pw", "nested": [{"dsn": "postgres://app:s3cr3t-pw@db"}], "n": 5, "ok": True}
    assert mask_json(value, {"s3cr3t-pw"}) == {
        "password": "***",
        "nested": [{"dsn": "postgres://app:***@db"}],
        "n": 5,
        "ok": True,
    }
    assert mask_json({"s3cr3t-pw": 1}, {"s3cr3t-pw"}) == {"***": 1}
    assert mask_json(value, set()) is value


def test_masks_from_bad_data() -> None:
    assert masks_from_secret_data({}) == frozenset()
    assert masks_from_secret_data({MASKS_KEY: "not json"}) == frozenset()


@pytest.mark.parametrize("prefix", ["", "a", "ab", "abc"])
@pytest.mark.parametrize("suffix", ["", "x", "xy"])
def test_base64_of_a_secret_is_masked_at_every_offset(prefix: str, suffix: str) -> None:
    secret = "hunter2-super/secret+tok"
    data = (prefix + secret + suffix).encode()
    for encoded in (base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()):
        masked = mask_text(f"token={encoded};", [secret])
        assert "***" in masked, encoded
        # what is left of the encoding around the mask no longer decodes to the secret
        assert secret.encode() not in base64.b64decode(masked.split("***")[0][6:] + "===", validate=False)


def test_url_encoded_and_json_escaped_secrets_are_masked() -> None:
    secret = 'p@ss w/"q"&x'
    for text in (quote(secret, safe=""), quote_plus("k=" + secret), json.dumps({"k": secret})):
        assert secret not in unquote_plus(mask_text(text, [secret])), text
        assert "***" in mask_text(text, [secret])


def test_short_encoded_forms_are_not_masked() -> None:
    """A 3-character secret masks as is, but its short base64/URL cores would garble every log."""
    forms = mask_forms(["abc"])
    assert "abc" in forms and all(len(f) >= 3 for f in forms)
    assert mask_text("YWJj and abc", ["abc"]) == "YWJj and ***"


def test_the_workspace_storage_goes_to_every_run_with_its_key_masked() -> None:
    storage = resource("f/ops/storage", {"bucket": "b", "accessKeyId": "AK"}, {"secretKey": ("s3", "key")})
    data = resolve([], {"f/ops/storage": storage}, {}, {"s3": {"key": "s3-secret-value"}}, "f/ops/storage")
    files = data.secret_data()
    assert json.loads(files[WORKSPACE_STORAGE_KEY]) == {
        "bucket": "b",
        "accessKeyId": "AK",
        "secretKey": "s3-secret-value",
    }
    assert "s3-secret-value" in json.loads(files[MASKS_KEY])
    assert not any(k.startswith("resource.") for k in files)  # not a resource the script may name
    assert WORKSPACE_STORAGE_KEY not in resolve([], {}, {}, {}).secret_data()


def test_res_and_var_in_args_resolve_only_for_declared_paths() -> None:
    secrets = {"pg-credentials": {"password": "s3cr3t-pw"}, "tokens": {"slack": "xoxb-123456"}}
    args = {"db": "$res:u/admin/pg", "deep": {"list": ["$var:f/ops/token", "plain"]}, "n": 3}
    run = resolve(["u/admin/pg", "f/ops/token"], RESOURCES, VARIABLES, secrets, args=args)
    assert run.args["db"]["password"] == "s3cr3t-pw" and run.args["db"]["dbname"] == "warehouse"
    assert run.args["deep"] == {"list": ["xoxb-123456", "plain"]} and run.args["n"] == 3
    assert {"s3cr3t-pw", "xoxb-123456"} <= run.masks
    for bad in ({"db": "$res:u/admin/pg"}, {"x": {"y": ["$var:f/ops/token"]}}):
        with pytest.raises(UnresolvedReference) as caught:
            resolve(["f/ops/plain"], RESOURCES, VARIABLES, secrets, args=bad)
        assert caught.value.reason == "ReferenceNotAllowed"
        assert "does not declare" in caught.value.message and "s3cr3t-pw" not in caught.value.message

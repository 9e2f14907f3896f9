"""The pure parts of verified approvals: the validating check every FlowRun CREATE and UPDATE that touches an
approval annotation passes (`check_request`), the mutating webhook's reading of a request (`own_request`,
`decide_request` against the stored status), the requester stamp, the canonical resume-URL signatures, and
the Bash runner's argument-name rule. Each case is an attack from issue 12 or a variant of one; the
cluster-level versions are in tests/adversarial."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kubemill.operator.approvals import (
    APPROVE,
    COMMENT,
    PAYLOAD,
    REQUESTED_BY,
    check_request,
    decide_request,
    decision_key,
    encode_decision,
    own_request,
    requested_by,
    requester_of,
)
from kubemill.operator.resume_urls import signature, urls_for
from kubemill.runners.validation import env_arg_name_problem, validate_args

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
ALICE = {"username": "alice@example.com", "groups": ["kubemill-users", "managers"]}
MALLORY = {"username": "mallory@example.com", "groups": ["kubemill-users"]}
OPERATOR = "system:serviceaccount:kubemill-system:kubemill-operator"
APPROVERS = ["alice@example.com", "group:managers"]


def run(
    annotations: dict[str, str] | None = None, pending: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "order-7", "uid": "u-1", "annotations": annotations or {}},
        "status": {
            "pendingApprovals": pending if pending is not None else [{"step": "sign", "approvers": APPROVERS}]
        },
    }


def decision(user: dict[str, Any], step: str = "sign", **extra: Any) -> tuple[str, str]:
    body = {"step": step, "user": user["username"], "groups": sorted(user["groups"]), "decision": "approve"}
    body |= {"at": NOW.isoformat(), **extra}
    return decision_key(step, user["username"]), encode_decision(body)


def refused(
    match: str, operation: str, new: dict[str, Any], old: dict[str, Any] | None, user: dict[str, Any]
) -> None:
    with pytest.raises(kopf.AdmissionError, match=match):
        check_request(operation, new, old, user, OPERATOR, NOW)


def test_alice_may_record_her_own_decision_on_a_waiting_step() -> None:
    key, value = decision(ALICE)
    check_request("UPDATE", run({key: value}), run(), ALICE, OPERATOR, NOW)


def test_a_decision_copied_into_a_new_run_is_refused_at_create() -> None:
    key, value = decision(ALICE)
    refused("cannot be created with approval decisions", "CREATE", run({key: value}), None, MALLORY)
    # not even alice may create a run pre-approved
    refused("cannot be created with approval decisions", "CREATE", run({key: value}), None, ALICE)


def test_a_decision_naming_someone_else_is_refused() -> None:
    key, value = decision(ALICE)
    refused(
        "names alice@example.com, not the requester mallory@example.com",
        "UPDATE",
        run({key: value}),
        run(),
        MALLORY,
    )


def test_a_decision_with_groups_the_requester_lacks_is_refused() -> None:
    forged = {"username": "mallory@example.com", "groups": ["managers"]}
    key, value = decision(forged)
    refused("not the requester", "UPDATE", run({key: value}), run(), MALLORY)


def test_a_decision_under_another_key_is_refused() -> None:
    _, value = decision(ALICE)
    refused(
        "is an approval decision",
        "UPDATE",
        run({decision_key("sign", "bob@example.com"): value}),
        run(),
        ALICE,
    )


def test_a_decision_for_a_step_that_is_not_waiting_is_refused() -> None:
    key, value = decision(ALICE, step="other")
    refused("step 'other' of flowrun order-7 is not waiting", "UPDATE", run({key: value}), run(), ALICE)
    # the step of a run that already went on (an old decision resubmitted after a reject)
    key, value = decision(ALICE)
    refused("not waiting", "UPDATE", run({key: value}, pending=[]), run(pending=[]), ALICE)


def test_a_decision_by_someone_the_step_does_not_list_is_refused() -> None:
    key, value = decision(MALLORY)
    refused("mallory@example.com may not approve step sign", "UPDATE", run({key: value}), run(), MALLORY)


def test_a_backdated_decision_is_refused() -> None:
    key, value = decision(ALICE, at=(NOW - timedelta(hours=1)).isoformat())
    refused("recorded at the time it is made", "UPDATE", run({key: value}), run(), ALICE)


def test_decisions_cannot_be_removed_or_changed_by_others() -> None:
    key, value = decision(ALICE)
    refused("cannot be removed", "UPDATE", run(), run({key: value}), MALLORY)
    changed = json.loads(value) | {"comment": "by mallory"}
    refused("not the requester", "UPDATE", run({key: encode_decision(changed)}), run({key: value}), MALLORY)


def test_a_resume_url_decision_is_the_operators_alone() -> None:
    key, value = decision({"username": "alice@example.com", "groups": []}, via="resume-url")
    refused("only the operator records resume-URL decisions", "UPDATE", run({key: value}), run(), MALLORY)
    check_request("UPDATE", run({key: value}), run(), {"username": OPERATOR, "groups": []}, OPERATOR, NOW)


def test_a_lone_payload_or_comment_is_refused() -> None:
    for name in (PAYLOAD, COMMENT):
        refused("set it together with", "UPDATE", run({name: '{"x": 1}'}), run(), MALLORY)
    refused("cannot be created with kubemill.dev/approve", "CREATE", run({APPROVE: "sign"}), None, MALLORY)


def test_the_requester_is_stamped_by_kubemill_and_never_changes() -> None:
    refused("set by kubemill", "CREATE", run({REQUESTED_BY: requested_by(ALICE)}), None, MALLORY)
    check_request("CREATE", run({REQUESTED_BY: requested_by(MALLORY)}), None, MALLORY, OPERATOR, NOW)
    # the operator copies a parent's requester into a subflow
    check_request(
        "CREATE", run({REQUESTED_BY: requested_by(ALICE)}), None, {"username": OPERATOR}, OPERATOR, NOW
    )
    stamped = run({REQUESTED_BY: requested_by(MALLORY)})
    refused("cannot change", "UPDATE", run({REQUESTED_BY: requested_by(ALICE)}), stamped, MALLORY)
    refused("cannot change", "UPDATE", run(), stamped, MALLORY)
    assert requester_of(stamped) == "mallory@example.com"


def test_self_approval_disabled_refuses_the_requester_and_an_unknown_requester() -> None:
    pending = [{"step": "sign", "approvers": APPROVERS, "selfApprovalDisabled": True}]
    key, value = decision(ALICE)
    mine = run({REQUESTED_BY: requested_by(ALICE)}, pending)
    refused(
        "alice@example.com started flowrun order-7",
        "UPDATE",
        run({**mine["metadata"]["annotations"], key: value}, pending),
        mine,
        ALICE,
    )
    refused("requester is unknown", "UPDATE", run({key: value}, pending), run(pending=pending), ALICE)
    theirs = run({REQUESTED_BY: requested_by(MALLORY)}, pending)
    check_request(
        "UPDATE",
        run({**theirs["metadata"]["annotations"], key: value}, pending),
        theirs,
        ALICE,
        OPERATOR,
        NOW,
    )


def test_an_approval_never_carries_a_payload_someone_else_stored() -> None:
    stored = {PAYLOAD: '{"amount": 1000000}'}
    assert own_request({**stored, APPROVE: "sign"}, stored) == {APPROVE: "sign"}
    assert own_request({PAYLOAD: '{"ok": true}', APPROVE: "sign"}, stored) == {
        PAYLOAD: '{"ok": true}',
        APPROVE: "sign",
    }


def test_the_mutating_webhook_reads_the_stored_status_not_the_request() -> None:
    # mallory sends a status naming herself as an approver: decide_request only ever sees the stored run
    stored = run()
    with pytest.raises(kopf.AdmissionError, match=r"mallory@example\.com may not approve"):
        decide_request({APPROVE: "sign"}, stored, MALLORY, NOW)
    key, made = decide_request({APPROVE: "sign", PAYLOAD: '{"ok": true}'}, stored, ALICE, NOW)
    assert made["user"] == "alice@example.com" and made["payload"] == {"ok": True}
    assert key == decision_key("sign", "alice@example.com")


KEY = b"k" * 32


def test_resume_url_signatures_bind_every_field_canonically() -> None:
    base = ("shop", "order-7", "u-1", "sign", "resume", "alice@example.com", 1_800_000_000)
    sig = signature(KEY, *base)
    for i in range(len(base)):
        changed = list(base)
        changed[i] = changed[i] + 1 if isinstance(changed[i], int) else f"{changed[i]}x"
        assert signature(KEY, *changed) != sig  # type: ignore[arg-type]
    # no field can spill into the next: ("a/b", "c") and ("a", "b/c") differ
    assert signature(KEY, "a", "b\x00c", "u", "s", "resume", "x", 1) != signature(
        KEY, "a\x00b", "c", "u", "s", "resume", "x", 1
    )
    assert signature(b"other" * 8, *base) != sig


def test_resume_urls_name_their_approver_and_expiry() -> None:
    urls = urls_for(
        "http://op:8082", KEY, "shop", "order-7", "u-1", "sign", "alice@example.com", 1_800_000_000
    )
    assert urls["resume"].startswith("http://op:8082/approvals/shop/order-7/sign/resume?")
    assert "approver=alice%40example.com" in urls["resume"] and "expires=1800000000" in urls["resume"]
    sigs = {u.split("sig=")[1] for u in urls.values()}
    assert len(sigs) == 3  # page, resume and cancel each signed for their own action


@pytest.mark.parametrize(
    "name",
    [
        "BASH_ENV",
        "ENV",
        "PATH",
        "LD_PRELOAD",
        "SHELLOPTS",
        "PS4",
        "IFS",
        "BASH_FUNC_x%%",
        "KUBEMILL_ARGS_FILE",
        "WM_TOKEN",
    ],
)
def test_bash_args_never_set_what_the_shell_or_runner_reads(name: str) -> None:
    assert env_arg_name_problem(name) is not None
    problems = validate_args({"type": "object"}, {name: "/var/run/kubemill/input/args.json"}, "bash")
    assert [p.field for p in problems] == [name]


@pytest.mark.parametrize("name", ["SERVICE_NAME", "version", "dry_run"])
def test_ordinary_bash_args_pass(name: str) -> None:
    assert env_arg_name_problem(name) is None
    assert validate_args({"type": "object"}, {name: "x"}, "bash") == []
    assert validate_args({"type": "object"}, {"BASH_ENV": "x"}, "python3") == []

"""Resume links against a run-only user: they name and bind their approver, decide only on POST, expire,
and nothing mallory can read carries them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.adversarial.conftest import apply_as, as_user, flowrun
from tests.conftest import Cluster
from tests.integration.test_approvals import status, wait_phase
from tests.integration.test_approvals_resume import install, post, resume_document, resume_urls
from tests.operator_harness import SYSTEM_NAMESPACE, Operator

pytestmark = pytest.mark.cluster


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def suspended_chat(cluster: Cluster, namespace: str, name: str) -> None:
    install(cluster, namespace)
    made = apply_as(cluster, "bob", flowrun(namespace, name, "f/resume/chat"))
    assert made.returncode == 0, made.stderr
    wait_phase(cluster, namespace, name, "Suspended", timeout=120)


def test_nothing_a_viewer_reads_holds_a_resume_link(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    suspended_chat(cluster, ns, "chat")
    link = resume_urls(cluster, ns)["resume"]
    signature = parse_qs(urlsplit(link).query)["sig"][0]
    for kind in ("flowruns", "scriptruns", "pods", "jobs", "events"):
        proc = as_user(cluster, "mallory", "get", kind, "-n", ns, "-o", "json")
        assert proc.returncode == 0, proc.stderr
        assert signature not in proc.stdout and "/approvals/" not in proc.stdout, kind
    denied = as_user(cluster, "mallory", "get", "secrets", "-n", ns)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def test_a_get_never_decides_and_a_link_binds_its_approver(
    cluster: Cluster, run_only: str, running_operator: Operator
) -> None:
    ns = run_only
    suspended_chat(cluster, ns, "chat")
    urls = resume_urls(cluster, ns)
    code, page = get(urls["resume"])  # what a chat client's link preview does
    assert code == 200 and "<form method=post" in page and "Deciding as alice@example.com" in page
    code, _ = get(urls["cancel"])
    assert code == 200
    assert status(cluster, ns, "chat")["phase"] == "Suspended"

    query = parse_qs(urlsplit(urls["resume"]).query)
    as_mallory = (
        urls["resume"].split("?")[0]
        + "?"
        + urlencode(
            {"approver": "mallory@example.com", "expires": query["expires"][0], "sig": query["sig"][0]}
        )
    )
    code, text = post(as_mallory)
    assert code == 403 and "not valid" in text
    later = urls["resume"].replace(
        f"expires={query['expires'][0]}", f"expires={int(query['expires'][0]) + 10**6}"
    )
    code, text = post(later)
    assert code == 403 and "not valid" in text
    assert status(cluster, ns, "chat")["phase"] == "Suspended"

    code, text = post(urls["resume"], {"ok": True})
    assert code == 200, text
    done = wait_phase(cluster, ns, "chat", "Succeeded")
    assert [(a["user"], a["decision"]) for a in done["approvals"]] == [("alice@example.com", "approve")]
    code, text = post(urls["resume"], {"ok": "replayed"})  # a replay of a used link
    assert code == 409 and "not waiting for approval" in text


def test_an_expired_link_decides_nothing(cluster: Cluster, run_only: str, running_operator: Operator) -> None:
    ns = run_only
    suspended_chat(cluster, ns, "chat")
    secret = cluster.get("secret", "kubemill-signing-key", "-n", SYSTEM_NAMESPACE)
    key = base64.b64decode(secret["data"]["key"])
    uid = cluster.get("flowrun", "chat", "-n", ns)["metadata"]["uid"]
    expired = int(time.time()) - 60
    message = json.dumps(
        [ns, "chat", uid, "sign_off", "resume", "alice@example.com", expired], separators=(",", ":")
    )
    sig = hmac.new(key, message.encode(), hashlib.sha256).hexdigest()
    base = resume_document(cluster, ns)["resume"].split("?")[0]
    code, text = post(
        base + "?" + urlencode({"approver": "alice@example.com", "expires": expired, "sig": sig})
    )
    assert code == 410 and "expired" in text
    assert status(cluster, ns, "chat")["phase"] == "Suspended"

"""Which Script keeps a path two Scripts claim (operator/script_catalog.py): the first created, then by name,
whatever order their events arrive in; the Scripts that take a path over when the keeper goes or moves."""

from __future__ import annotations

import itertools
from typing import Any

from kubemill.k8s import builders
from kubemill.k8s.builders import RunIdentity
from kubemill.models.scripts import Script
from kubemill.operator.script_catalog import ScriptCatalog, identity_of
from kubemill.testing.kubeapi import FakeKube


class NoApi:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the catalog called the API ({name}) for a path it knows")


def script(name: str, path: str, created: str) -> Script:
    return Script.model_validate(
        {
            "apiVersion": "kubemill.dev/v1alpha1",
            "kind": "Script",
            "metadata": {"name": name, "namespace": "t", "creationTimestamp": created},
            "spec": {"path": path, "language": "python3", "content": "def main():\n    return 1\n"},
        }
    )


OLD = script("zz-old", "f/a/x", "2026-12-03T10:00:00Z")
NEW = script("aa-new", "f/a/x", "2026-12-03T11:00:00Z")
TIE = script("bb-tie", "f/a/x", "2026-12-03T10:00:00Z")


def test_the_first_created_keeps_the_path_whatever_the_order_of_events() -> None:
    for order in itertools.permutations([OLD, NEW, TIE]):
        catalog = ScriptCatalog(NoApi())  # type: ignore[arg-type]
        for s in order:
            catalog.put(s)
        assert catalog.get("t", "f/a/x") is TIE, order  # created in the same second as zz-old: by name
        assert catalog.kept_by(OLD) is TIE and catalog.kept_by(NEW) is TIE and catalog.kept_by(TIE) is None


def test_the_path_is_handed_over_when_its_keeper_goes_or_moves() -> None:
    catalog = ScriptCatalog(NoApi())  # type: ignore[arg-type]
    assert catalog.put(NEW) == [] and catalog.put(OLD) == [NEW]  # heard of out of order: aa-new loses it
    assert catalog.get("t", "f/a/x") is OLD
    moved = script("zz-old", "f/a/elsewhere", "2026-12-03T10:00:00Z")
    assert catalog.put(moved) == [NEW]  # aa-new now keeps f/a/x: its PathConflict is over
    assert catalog.get("t", "f/a/x") is NEW and catalog.get("t", "f/a/elsewhere") is moved
    assert catalog.put(OLD) == [NEW]  # back on f/a/x, older: it keeps the path again, aa-new conflicts
    assert catalog.kept_by(NEW) is OLD
    assert catalog.remove("t", "zz-old") == [NEW]
    assert catalog.get("t", "f/a/x") is NEW and catalog.remove("t", "aa-new") == []


# --- the shared code ConfigMap: every Script and inline run with the same code owns it ---------------------


def owners(kube: FakeKube, catalog: ScriptCatalog, s: Script) -> list[str]:
    name = builders.code_configmap_name(catalog.target_of_script(s).content_hash)
    found = kube.find("ConfigMap", "t", name)
    assert found is not None, name
    return [ref["uid"] for ref in found["metadata"]["ownerReferences"]]


def test_every_script_with_the_same_code_owns_its_configmap_so_deleting_one_keeps_it_for_the_other() -> None:
    kube = FakeKube()
    catalog = ScriptCatalog(kube)
    first, second = (kube.put(s.model_dump(by_alias=True, exclude_none=True)) for s in (OLD, NEW))
    for body in (first, second, first):  # heard of twice (a resync): one owner each, never dropped
        s = Script.model_validate(body)
        catalog.ensure_code("t", catalog.target_of_script(s), identity_of(s))
    assert owners(kube, catalog, OLD) == [first["metadata"]["uid"], second["metadata"]["uid"]]
    assert [w for w in kube.writes if w[1] == "ConfigMap"] == [
        ("create", "ConfigMap", builders.code_configmap_name(catalog.target_of_script(OLD).content_hash)),
        ("patch", "ConfigMap", builders.code_configmap_name(catalog.target_of_script(OLD).content_hash)),
    ]  # the second Script is added once; the resync costs nothing


def test_an_inline_runs_ownership_is_checked_each_attempt_so_a_configmap_gone_with_its_run_comes_back() -> (
    None
):
    kube = FakeKube()
    catalog = ScriptCatalog(kube)
    target = catalog.target_of_script(OLD)
    name = builders.code_configmap_name(target.content_hash)
    one, two = (RunIdentity("t", n, f"uid-{n}") for n in ("run-1", "run-2"))
    catalog.ensure_code("t", target, one)
    kube.delete("v1", "ConfigMap", "t", name)  # run-1 retained away: the garbage collector took its code
    catalog.ensure_code("t", target, two)  # a process that remembered run-1's ConfigMap used to skip this
    found = kube.find("ConfigMap", "t", name)
    assert found is not None and [r["uid"] for r in found["metadata"]["ownerReferences"]] == ["uid-run-2"]
    catalog.ensure_code("t", target, one)
    found = kube.find("ConfigMap", "t", name)
    assert found is not None and [r["uid"] for r in found["metadata"]["ownerReferences"]] == [
        "uid-run-2",
        "uid-run-1",
    ]


def test_an_owner_added_concurrently_is_never_dropped() -> None:
    kube = FakeKube()
    catalog = ScriptCatalog(kube)
    target = catalog.target_of_script(OLD)
    name = builders.code_configmap_name(target.content_hash)
    catalog.ensure_code("t", target, RunIdentity("t", "run-1", "uid-1"))

    raced: list[str] = []

    def race(verb: str, kind: str, _name: str) -> None:
        # another writer adds its owner between our read and our write, once
        if verb == "patch" and kind == "ConfigMap" and not raced:
            raced.append(verb)
            body = kube.get("v1", "ConfigMap", "t", name)
            body["metadata"]["ownerReferences"].append({"uid": "uid-other", "kind": "ScriptRun", "name": "o"})
            kube.put(body)

    kube.before_write = race
    catalog.ensure_code("t", target, RunIdentity("t", "run-2", "uid-2"))
    found = kube.find("ConfigMap", "t", name)
    assert found is not None
    assert raced and [r["uid"] for r in found["metadata"]["ownerReferences"]] == [
        "uid-1",
        "uid-other",
        "uid-2",
    ]

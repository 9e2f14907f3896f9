"""Which Script keeps a path two Scripts claim (operator/script_catalog.py): the first created, then by name,
whatever order their events arrive in; the Scripts that take a path over when the keeper goes or moves."""

from __future__ import annotations

import itertools
from typing import Any

from kubemill.models.scripts import Script
from kubemill.operator.script_catalog import ScriptCatalog


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

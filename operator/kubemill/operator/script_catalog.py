"""The Scripts the operator knows, by namespace and Windmill path, and what a run of each executes.

Kept current from the Script watch (`scripts.py` feeds every event in), so starting a run costs no API call
for its script; a run that names a path not (yet) seen falls back to listing the namespace's Scripts once,
which covers the moments after a restart when runs may be handled before their Scripts. Schemas are derived
once per distinct code (keyed by its content hash). The content-addressed code ConfigMap is shared by every
Script and run with the same code, so each of them is one of its owners (it goes when the last does): a
Script's ownership is made once per process, an inline run's on each attempt (its uid never comes back).
Before that, a ConfigMap made for a Script that was then deleted went with it, and the next run of another
owner of the same code waited forever for it (a flow's inline step after its first FlowRun was retained away).

A path names one Script. When two Scripts of a namespace claim the same `spec.path`, the one created first
keeps it (then the one whose name sorts first), whatever order their events come in: before this rule the
last event won, so after an operator restart a path's runs could switch to the other Script's code. The
other Script's `Ready` condition says `PathConflict`, naming the one that runs (docs/operator.md).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pydantic

from kubemill import constants
from kubemill.engine.scriptrun import Failure
from kubemill.errors import Conflict, NotFound, NotOurs
from kubemill.k8s import builders
from kubemill.k8s.api import KubeApi
from kubemill.k8s.builders import RunIdentity, RunTarget
from kubemill.k8s.client import holds
from kubemill.models.scripts import Script, ScriptRun, runtime_of
from kubemill.runners import canonical_language
from kubemill.runners.lockfile import LockError, check_lock
from kubemill.signatures import SignatureError, derive_schema

API = constants.API_VERSION


def claim_order(creation_timestamp: str | None, name: str | None) -> tuple[str, str]:
    """How Scripts claiming one path are ranked: the first created, then by name, keeps it."""
    return creation_timestamp or "", name or ""


def identity_of(script: Script) -> RunIdentity:
    """A Script as the owner of what is made for it."""
    meta = script.metadata
    return RunIdentity(meta.namespace or "", meta.name or "", meta.uid or "", kind="Script")


def _rank(script: Script) -> tuple[str, str]:
    return claim_order(script.metadata.creation_timestamp, script.metadata.name)


class ScriptCatalog:
    """Scripts by (namespace, path); thread-safe."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self._claims: dict[tuple[str, str], dict[str, Script]] = {}  # every Script claiming a path, by name
        self._schemas: dict[str, dict[str, Any] | SignatureError] = {}
        self._code_maps: set[tuple[str, str, str]] = set()  # (namespace, digest, owner uid) made so
        self._lock = threading.Lock()

    # --- the watch feeds these -----------------------------------------------------------------------

    def put(self, script: Script) -> list[Script]:
        """Record a Script; the other Scripts that now keep a path they did not, or no longer keep one they
        did (it moved off or onto their path), whose Ready conditions change."""
        namespace, name = script.metadata.namespace or "", script.metadata.name or ""
        with self._lock:
            before = self._winners(namespace)
            self._drop(namespace, name)
            self._claims.setdefault((namespace, script.spec.path), {})[name] = script
            return self._changed(namespace, before, name)

    def remove(self, namespace: str, name: str) -> list[Script]:
        """A Script was deleted (its code ConfigMaps go with it, unless another owner keeps them); the Script
        that now keeps the path it kept."""
        with self._lock:
            before = self._winners(namespace)
            self._drop(namespace, name)
            self._code_maps = {k for k in self._code_maps if k[0] != namespace}
            return self._changed(namespace, before, name)

    def _drop(self, namespace: str, name: str) -> None:
        for key in [k for k, c in self._claims.items() if k[0] == namespace and name in c]:
            del self._claims[key][name]
            if not self._claims[key]:
                del self._claims[key]

    def _winners(self, namespace: str) -> dict[str, str]:
        return {k[1]: min(c.values(), key=_rank).metadata.name or "" for k, c in self._claims.items()
                if k[0] == namespace}  # fmt: skip

    def _changed(self, namespace: str, before: dict[str, str], changed: str) -> list[Script]:
        after = self._winners(namespace)
        names = {n for p, n in after.items() if before.get(p) != n} | {
            n for p, n in before.items() if after.get(p) != n
        }
        claimed = {n: s for k, c in self._claims.items() if k[0] == namespace for n, s in c.items()}
        return [claimed[n] for n in sorted(names - {changed}) if n in claimed]

    # --- lookups -------------------------------------------------------------------------------------

    def _known(self, namespace: str, path: str) -> Script | None:
        with self._lock:
            claims = self._claims.get((namespace, path))
            return min(claims.values(), key=_rank) if claims else None

    def get(self, namespace: str, path: str) -> Script | None:
        """The Script that keeps `path` in `namespace` (the first created when several claim it)."""
        found = self._known(namespace, path)
        if found is not None:
            return found
        for body in self.kube.list(API, "Script", namespace):
            try:
                script = Script.model_validate(body)
            except pydantic.ValidationError:
                continue
            self.put(script)
        return self._known(namespace, path)

    def kept_by(self, script: Script) -> Script | None:
        """The other Script that keeps `script`'s path (one created earlier claims it too), or None."""
        keeper = self._known(script.metadata.namespace or "", script.spec.path)
        return keeper if keeper is not None and keeper.metadata.name != script.metadata.name else None

    def owner_of(self, namespace: str, path: str) -> RunIdentity | None:
        """The Script that keeps `path`, as an owner (None if none does)."""
        script = self.get(namespace, path) if path else None
        return None if script is None else identity_of(script)

    def code_of(self, script: Script) -> str:
        """The Script's code, inline or from its ConfigMap key (NotFound/KeyError if missing)."""
        if script.spec.content is not None:
            return script.spec.content
        ref = script.spec.content_from.config_map_key_ref  # type: ignore[union-attr]  # one of the two is set
        body = self.kube.get("v1", "ConfigMap", script.metadata.namespace, ref.name)
        data: Mapping[str, str] = body.get("data") or {}
        if ref.key not in data:
            raise KeyError(f"ConfigMap {ref.name!r} has no key {ref.key!r}")
        return data[ref.key]

    def schema_for(self, language: str, code: str) -> dict[str, Any]:
        """The derived schema (cached by content); SignatureError if the code does not parse."""
        digest = builders.content_hash(language, code)
        cached = self._schemas.get(digest)
        if cached is None:
            try:
                cached = derive_schema(language, code)
            except SignatureError as exc:
                cached = exc
            self._schemas[digest] = cached
        if isinstance(cached, SignatureError):
            raise cached
        return cached

    def target_for(self, run: ScriptRun) -> tuple[RunTarget | None, Failure | None]:
        """What `run` executes, or why it cannot run (a lock the runner could not read is refused here,
        naming its line, rather than failing in the pod)."""
        target, failure = self._target_for(run)
        if target is not None and target.lock is not None:
            try:
                check_lock(target.language, target.lock)
            except LockError as exc:
                field = "spec.script.lock" if run.spec.script is not None else "the Script's spec.lock"
                return None, Failure("ScriptNotReady", f"{field}: {exc}")
        return target, failure

    def _target_for(self, run: ScriptRun) -> tuple[RunTarget | None, Failure | None]:
        namespace = run.metadata.namespace or ""
        inline = run.spec.script
        if inline is not None:
            language = canonical_language(runtime_of(inline.language))
            schema: dict[str, Any] | None
            try:
                schema = self.schema_for(language, inline.content)
            except SignatureError as exc:
                if run.spec.entrypoint is None:
                    return None, Failure("ScriptNotReady", f"the inline script does not parse: {exc}")
                schema = None  # a preprocessor step needs no main (the run checks its preprocessor)
            target = RunTarget(
                path=run.spec.script_path or "",
                language=language,
                code=inline.content,
                schema=schema,
                requirements=inline.requirements,
                lock=inline.lock,
                resources=inline.resources,
                timeout_seconds=run.spec.timeout_seconds,
                retry=run.spec.retry,
            )
            return target, None
        path = run.spec.script_path or ""
        script = self.get(namespace, path)
        if script is None:
            return None, Failure("ScriptNotFound", f"no Script in namespace {namespace} has spec.path {path}")
        try:
            target = self.target_of_script(script)
        except (SignatureError, KeyError, LookupError, NotFound) as exc:
            return None, Failure("ScriptNotReady", f"Script {script.metadata.name} is not ready: {exc}")
        if run.spec.timeout_seconds:
            target = RunTarget(**{**target.__dict__, "timeout_seconds": run.spec.timeout_seconds})
        return target, None

    def target_of_script(self, script: Script) -> RunTarget:
        """A Script as a run target (raises SignatureError if the code does not parse)."""
        spec = script.spec
        language = canonical_language(runtime_of(spec.language))
        code = self.code_of(script)
        schema = dict(spec.schema_) if spec.schema_ is not None else self.schema_for(language, code)
        return RunTarget(
            path=spec.path,
            language=language,
            code=code,
            schema=schema,
            requirements=spec.requirements,
            lock=spec.lock,
            resources=spec.resources,
            timeout_seconds=spec.timeout_seconds,
            retry=spec.retry,
            concurrency_limit=spec.concurrency_limit,
            env=spec.env,
            runner=spec.runner,
        )

    def ensure_code(self, namespace: str, target: RunTarget, owner: RunIdentity | None) -> str:
        """The content-addressed code ConfigMap, created or found, with `owner` among its owners; its name.
        Raises NotOurs if something else holds that name."""
        digest = target.content_hash
        name = builders.code_configmap_name(digest)
        key = (namespace, digest, owner.uid if owner is not None else "")
        with self._lock:
            if key in self._code_maps:
                return name
        desired = builders.build_code_configmap(namespace, target, owner)
        # Shared by every run of the same code, whoever owns it: only its content must be ours.
        content = {k: v for k, v in desired.items() if k != "metadata"} | {"metadata": {}}
        for _attempt in range(5):
            existing, created = self.kube.create(desired, adopt_any=True)
            if not created:
                if (problem := holds(existing, content)) is not None:
                    raise NotOurs(
                        f"ConfigMap {namespace}/{name} already exists and is not the one kubemill would "
                        f"create ({problem}): it does not hold this script's code; delete it, or find who "
                        "made it"
                    )
                if owner is not None and not self._owned_by(existing, owner):
                    continue  # changed or deleted meanwhile (the garbage collector): look again
            break
        else:
            who = f"{owner.kind} {owner.name}" if owner is not None else "kubemill"
            raise Conflict(f"ConfigMap {namespace}/{name} kept changing: {who} is not yet its owner")
        if owner is None or owner.kind == "Script":
            with self._lock:
                self._code_maps.add(key)
        return name

    def _owned_by(self, existing: Mapping[str, Any], owner: RunIdentity) -> bool:
        """True if `owner` owns `existing` now, adding it if it does not; False if the ConfigMap changed or
        went meanwhile. The patch carries the resourceVersion it read, so an owner added by a concurrent
        caller is never dropped, and the garbage collector (which deletes on the resourceVersion it checked)
        never deletes a ConfigMap that gained a living owner."""
        meta = existing.get("metadata") or {}
        refs = list(meta.get("ownerReferences") or [])
        if any(ref.get("uid") == owner.uid for ref in refs):
            return True
        refs.append(builders.owner_reference(owner, controller=False))
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion"), "ownerReferences": refs}}
        try:
            self.kube.patch("v1", "ConfigMap", meta.get("namespace"), meta.get("name") or "", patch)
        except (Conflict, NotFound):
            return False
        return True

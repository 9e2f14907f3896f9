"""The Scripts the operator knows, by namespace and Windmill path, and what a run of each executes.

Kept current from the Script watch (`scripts.py` feeds every event in), so starting a run costs no API call
for its script; a run that names a path not (yet) seen falls back to listing the namespace's Scripts once,
which covers the moments after a restart when runs may be handled before their Scripts. Schemas are derived
once per distinct code (keyed by its content hash), and each content-addressed code ConfigMap is created once
per process (409 adopts it).

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
from kubemill.errors import NotFound, NotOurs
from kubemill.k8s import builders
from kubemill.k8s.api import KubeApi
from kubemill.k8s.builders import RunIdentity, RunTarget
from kubemill.k8s.client import holds
from kubemill.models.scripts import Script, ScriptRun, runtime_of
from kubemill.runners import canonical_language
from kubemill.signatures import SignatureError, derive_schema

API = constants.API_VERSION


def claim_order(creation_timestamp: str | None, name: str | None) -> tuple[str, str]:
    """How Scripts claiming one path are ranked: the first created, then by name, keeps it."""
    return creation_timestamp or "", name or ""


def _rank(script: Script) -> tuple[str, str]:
    created = (script.metadata.model_extra or {}).get("creationTimestamp")  # kept as is, as elsewhere
    return claim_order(str(created) if created else None, script.metadata.name)


class ScriptCatalog:
    """Scripts by (namespace, path); thread-safe."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self._claims: dict[tuple[str, str], dict[str, Script]] = {}  # every Script claiming a path, by name
        self._schemas: dict[str, dict[str, Any] | SignatureError] = {}
        self._code_maps: set[tuple[str, str]] = set()
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
        script = self.get(namespace, path) if path else None
        if script is None:
            return None
        return RunIdentity(namespace, script.metadata.name or "", script.metadata.uid or "", kind="Script")

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
        """What `run` executes, or why it cannot run."""
        namespace = run.metadata.namespace or ""
        inline = run.spec.script
        if inline is not None:
            language = canonical_language(runtime_of(inline.language))
            try:
                schema = self.schema_for(language, inline.content)
            except SignatureError as exc:
                return None, Failure("ScriptNotReady", f"the inline script does not parse: {exc}")
            target = RunTarget(
                path=run.spec.script_path or "",
                language=language,
                code=inline.content,
                schema=schema,
                requirements=inline.requirements,
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
            resources=spec.resources,
            timeout_seconds=spec.timeout_seconds,
            retry=spec.retry,
            concurrency_limit=spec.concurrency_limit,
            env=spec.env,
            runner=spec.runner,
        )

    def ensure_code(self, namespace: str, target: RunTarget, owner: RunIdentity | None) -> str:
        """Create the content-addressed code ConfigMap once; returns its name."""
        digest = target.content_hash
        name = builders.code_configmap_name(digest)
        with self._lock:
            known = (namespace, digest) in self._code_maps
        if not known:
            desired = builders.build_code_configmap(namespace, target, owner)
            existing, created = self.kube.create(desired, adopt_any=True)
            # Shared by every run of the same code, whoever owns it: only its content must be ours.
            content = {k: v for k, v in desired.items() if k != "metadata"} | {"metadata": {}}
            if not created and (problem := holds(existing, content)) is not None:
                raise NotOurs(
                    f"ConfigMap {namespace}/{name} already exists and is not the one kubemill would create "
                    f"({problem}): it does not hold this script's code; delete it, or find who made it"
                )
            with self._lock:
                self._code_maps.add((namespace, digest))
        return name

    def forget_code(self, namespace: str, digest: str) -> None:
        with self._lock:
            self._code_maps.discard((namespace, digest))

"""The Scripts the operator knows, by namespace and Windmill path, and what a run of each executes.

Kept current from the Script watch (`scripts.py` feeds every event in), so starting a run costs no API call
for its script; a run that names a path not (yet) seen falls back to listing the namespace's Scripts once,
which covers the moments after a restart when runs may be handled before their Scripts. Schemas are derived
once per distinct code (keyed by its content hash), and each content-addressed code ConfigMap is created once
per process (409 adopts it).
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
from kubemill.runners.lockfile import LockError, parse_python_lock
from kubemill.signatures import SignatureError, derive_schema

API = constants.API_VERSION


class ScriptCatalog:
    """Scripts by (namespace, path); thread-safe."""

    def __init__(self, kube: KubeApi) -> None:
        self.kube = kube
        self._scripts: dict[tuple[str, str], Script] = {}
        self._schemas: dict[str, dict[str, Any] | SignatureError] = {}
        self._code_maps: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # --- the watch feeds these -----------------------------------------------------------------------

    def put(self, script: Script) -> None:
        namespace = script.metadata.namespace or ""
        with self._lock:
            stale = [
                k
                for k, s in self._scripts.items()
                if k[0] == namespace and s.metadata.name == script.metadata.name
            ]
            for key in stale:
                del self._scripts[key]
            self._scripts[(namespace, script.spec.path)] = script

    def remove(self, namespace: str, name: str) -> None:
        """A Script was deleted (its code ConfigMaps go with it, unless another owner keeps them)."""
        with self._lock:
            for key in [k for k, s in self._scripts.items() if k[0] == namespace and s.metadata.name == name]:
                del self._scripts[key]
            self._code_maps = {k for k in self._code_maps if k[0] != namespace}

    # --- lookups -------------------------------------------------------------------------------------

    def get(self, namespace: str, path: str) -> Script | None:
        with self._lock:
            found = self._scripts.get((namespace, path))
        if found is not None:
            return found
        for body in self.kube.list(API, "Script", namespace):
            try:
                script = Script.model_validate(body)
            except pydantic.ValidationError:
                continue
            self.put(script)
        with self._lock:
            return self._scripts.get((namespace, path))

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
        """What `run` executes, or why it cannot run (a lock the runner could not read is refused here,
        naming its line, rather than failing in the pod)."""
        target, failure = self._target_for(run)
        if target is not None and target.lock is not None:
            try:
                parse_python_lock(target.lock)
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

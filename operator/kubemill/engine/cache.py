"""Result caching (`cache_ttl`), as Windmill does it: a step (or a whole flow) with `cache_ttl` whose script
and arguments are the same as those of an earlier successful run within `cache_ttl` seconds takes that
run's result instead of running again.

Pure: the key is a digest of what the step runs (script path or inline code and language, subflow path, or
the flow document) and its arguments; the executors keep the entries (`kubemill run` in files under
`$KUBEMILL_HOME/cache/results`, the operator in ConfigMaps labelled `kubemill.dev/cache`) and hand the live
ones to `advance()` in `Observations.cache`; `StoreCache` asks them to keep a new one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta

from pydantic import JsonValue

from kubemill.engine.actions import CacheEntry, StoreCache
from kubemill.models.openflow import OpenFlow, PathFlow, PathScript, RawScript


def _digest(what: Mapping[str, JsonValue]) -> str:
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def step_key(value: PathScript | RawScript | PathFlow, args: Mapping[str, JsonValue]) -> str:
    """The cache key of a script, rawscript or flow step called with `args`."""
    if isinstance(value, RawScript):
        target: dict[str, JsonValue] = {"language": value.language, "content": value.content}
    else:
        target = {"type": value.type, "path": value.path}
    return _digest({"step": target, "args": dict(args)})


def flow_key(flow: OpenFlow, args: Mapping[str, JsonValue]) -> str:
    """The cache key of a whole flow (`value.cache_ttl`) run with `args`."""
    return _digest({"flow": flow.value.model_dump(mode="json", by_alias=True), "args": dict(args)})


def lookup(cache: Mapping[str, CacheEntry], key: str, now: datetime) -> CacheEntry | None:
    """The live entry for `key`, or None (missing or expired)."""
    entry = cache.get(key)
    return entry if entry is not None and entry.expires_at > now else None


def store(key: str, result: JsonValue, ttl: float, now: datetime) -> StoreCache:
    return StoreCache(key=key, result=result, expires_at=now + timedelta(seconds=ttl))


def uses_cache(flow: OpenFlow) -> bool:
    """Whether the flow or any of its steps has a `cache_ttl` (executors read the cache only then)."""
    return bool(flow.value.cache_ttl) or any(m.cache_ttl for m in flow.value.all_modules())

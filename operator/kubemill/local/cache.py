"""`cache_ttl` results for `kubemill run`: one JSON file per key under `$KUBEMILL_HOME/cache/results`, so a
second `kubemill run` of a cached step (or flow) with the same arguments within the TTL takes the result, as
in Windmill. Expired files are removed when the cache is read."""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path

from kubemill.engine import CacheEntry
from kubemill.runners.runtimes import cache_root


class FileCache(MutableMapping[str, CacheEntry]):
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or cache_root() / "cache" / "results"

    def _file(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def __getitem__(self, key: str) -> CacheEntry:
        file = self._file(key)
        try:
            entry = CacheEntry.model_validate_json(file.read_bytes())
        except (OSError, ValueError):
            raise KeyError(key) from None
        if entry.expires_at <= datetime.now(UTC):
            file.unlink(missing_ok=True)
            raise KeyError(key)
        return entry

    def __setitem__(self, key: str, entry: CacheEntry) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self._file(key).with_suffix(".tmp")
        temporary.write_text(json.dumps(entry.model_dump(mode="json")), encoding="utf-8")
        temporary.replace(self._file(key))

    def __delitem__(self, key: str) -> None:
        self._file(key).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[str]:
        keys = [file.stem for file in self.folder.glob("*.json")] if self.folder.is_dir() else []
        return iter([key for key in keys if key in self])

    def __len__(self) -> int:
        return sum(1 for _ in self)

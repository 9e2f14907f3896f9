"""A pool run's inputs, sealed onto its offered Job for the pool's workers alone. Pure: bytes in, bytes out.

A Job's pod reads its run's files from volumes (the code ConfigMap, the per-run Secret, the state ConfigMap,
the resume links). A pool worker gets the same files without reading any of those objects: when the operator
offers the Job it gathers the files of every volume the runner mounts, exactly as the kubelet would lay them
out (`volume_files`), and seals them into the Job's annotation `kubemill.dev/pool-inputs` with the pool's key
(AES-256-GCM from `cryptography`, the key in a Secret that only the pool's agent containers mount). The
associated data names the namespace, the Job and the pool, so a sealed blob copied onto another Job, or
offered to another pool, does not open. Whoever may read Jobs (a namespace viewer, another pool) sees only
ciphertext; the pool's identity needs no `get` on any Secret or ConfigMap (docs/security.md, "Warm runner
pools").

Why not a per-run RBAC grant, as before: every Role or RoleBinding a non-escalating identity creates passes
the API server's escalation check, which cost about 100 ms a request here against 2-5 ms for a Secret
(docs/pools.md, "Figures"), four requests on every pool step's critical path.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

INPUTS = "kubemill.dev/pool-inputs"
"""The offered Job's annotation holding its sealed files (written by the operator only; admission keeps the
workers from changing it)."""
INPUTS_MAX = 48 * 1024
"""Characters of sealed inputs an offered Job carries (annotations hold 256 KiB in all, and the outcome a
worker reports takes up to 200 KiB of them); a run whose files seal larger runs as a Job."""
KEY_BYTES = 32
KEY_FILE = "key"
"""The key's entry in the pool's key Secret, and its file where the agent container mounts that Secret."""
KEY_DIR = "/var/run/kubemill-pool-key"
NONCE_BYTES = 12
VERSION = b"kubemill-pool-inputs/1"

Files = dict[str, dict[str, bytes]]
"""Volume name -> path inside the volume -> content."""


class SealError(ValueError):
    """Sealed inputs that do not open with this key for this Job (tampered, copied, or another key)."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _aad(namespace: str, job: str, pool: str) -> bytes:
    return b"\0".join((VERSION, namespace.encode(), job.encode(), pool.encode()))


def volume_files(
    job: Mapping[str, Any], sources: Mapping[tuple[str, str], Mapping[str, bytes] | None]
) -> Files:
    """The files of each ConfigMap and Secret volume of the Job's runner, as its pod would see them.
    `sources` maps (kind, name) to that object's data (None: absent, which only an optional volume may be).
    Raises KeyError naming a required volume's object that is missing."""
    pod = job["spec"]["template"]["spec"]
    mounted = {m["name"] for m in pod["containers"][0].get("volumeMounts") or []}
    files: Files = {}
    for volume in pod.get("volumes") or []:
        if volume["name"] not in mounted:
            continue
        if "configMap" in volume:
            source, kind, name_key = volume["configMap"], "ConfigMap", "name"
        elif "secret" in volume:
            source, kind, name_key = volume["secret"], "Secret", "secretName"
        else:
            continue  # emptyDir: the directory itself
        data = sources.get((kind, source[name_key]))
        if data is None:
            if not source.get("optional"):
                raise KeyError(f"{kind} {source[name_key]}")
            files[volume["name"]] = {}
            continue
        items = source.get("items") or [{"key": k, "path": k} for k in sorted(data)]
        files[volume["name"]] = {i["path"]: data[i["key"]] for i in items if i["key"] in data}
    return files


def seal(key: bytes, namespace: str, job: str, pool: str, files: Files) -> str:
    payload = {v: {p: base64.b64encode(c).decode() for p, c in f.items()} for v, f in files.items()}
    plain = gzip.compress(json.dumps(payload, sort_keys=True).encode(), mtime=0)
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plain, _aad(namespace, job, pool))
    return base64.b64encode(nonce + sealed).decode()


def unseal(key: bytes, namespace: str, job: str, pool: str, text: str) -> Files:
    try:
        raw = base64.b64decode(text, validate=True)
        plain = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(namespace, job, pool))
    except (ValueError, InvalidTag) as exc:
        raise SealError(
            f"the sealed inputs of Job {namespace}/{job} do not open with pool {pool}'s key "
            "(altered, copied from another Job, or sealed with another key)"
        ) from exc
    payload = json.loads(gzip.decompress(plain))
    return {v: {p: base64.b64decode(c) for p, c in f.items()} for v, f in payload.items()}


def key_from_secret_data(data: Mapping[str, str] | None) -> bytes | None:
    """The pool key from its Secret's `data` (base64, as the API returns it); None: absent or malformed."""
    text = (data or {}).get(KEY_FILE)
    if not text:
        return None
    try:
        return key_from_file_text(base64.b64decode(text, validate=True).decode())
    except (ValueError, UnicodeDecodeError):
        return None


def key_secret_value(key: bytes) -> str:
    """The key as the Secret's `stringData` carries it (base64 text, so the mounted file is text too)."""
    return base64.b64encode(key).decode()


def key_from_file_text(text: str) -> bytes | None:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        return None
    return key if len(key) == KEY_BYTES else None

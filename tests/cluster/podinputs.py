"""What a pod's containers are given: its volumes' files, its environment, the user it runs as.

Read from the pod spec and the API server (ConfigMaps, Secrets, TokenRequest) with the node's identity, which
the Node authorizer limits to what pods bound to this node reference, as for a kubelet.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class PodFailure(Exception):
    """The pod cannot run at all (bad spec): it fails with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion in command, args and env values; `$$` escapes a dollar."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


@dataclass
class PodInputs:
    core: kubernetes.client.CoreV1Api
    pod: dict[str, Any]
    dir: Path
    node_name: str
    api_server: str
    container_path: str

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod["spec"]  # type: ignore[no-any-return]

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]  # type: ignore[no-any-return]

    @property
    def namespace(self) -> str:
        return self.pod["metadata"]["namespace"]  # type: ignore[no-any-return]

    @property
    def uid(self) -> str:
        return self.pod["metadata"]["uid"]  # type: ignore[no-any-return]

    def volume(self, v: dict[str, Any]) -> Path:  # noqa: C901 - complexity debt, docs/architecture.md
        path = self.dir / "volumes" / v["name"]
        path.mkdir(parents=True, exist_ok=True)
        if "emptyDir" in v:
            path.chmod(0o777)
        elif "hostPath" in v:
            host = Path(v["hostPath"]["path"])
            if v["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                host.mkdir(parents=True, exist_ok=True)
            return host
        elif "persistentVolumeClaim" in v:
            return self.claim_path(v["persistentVolumeClaim"]["claimName"])
        elif "configMap" in v:
            self._write_source(path, v["configMap"], self.configmap_data(v["configMap"]))
        elif "secret" in v:
            src = dict(v["secret"], name=v["secret"].get("secretName"))
            self._write_source(path, src, self.secret_data(src))
        elif "downwardAPI" in v:
            self._write_downward(
                path, v["downwardAPI"].get("items") or [], v["downwardAPI"].get("defaultMode")
            )
        elif "projected" in v:
            mode = v["projected"].get("defaultMode")
            for source in v["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    self._write_token(path, source["serviceAccountToken"], mode)
                elif "configMap" in source:
                    self._write_source(
                        path,
                        dict(source["configMap"], defaultMode=mode),
                        self.configmap_data(source["configMap"]),
                    )
                elif "secret" in source:
                    self._write_source(
                        path, dict(source["secret"], defaultMode=mode), self.secret_data(source["secret"])
                    )
                elif "downwardAPI" in source:
                    self._write_downward(path, source["downwardAPI"].get("items") or [], mode)
        else:
            kinds = sorted(set(v) - {"name"})
            raise PodFailure(
                "UnsupportedVolume", f"volume {v['name']!r}: {kinds} is not supported by the node agent"
            )
        return path

    def claim_path(self, claim: str) -> Path:
        """The host directory of a bound claim's volume (a `hostPath` or `local` PersistentVolume); a claim
        not bound yet is retried like a missing ConfigMap (404)."""
        pvc = self.core.read_namespaced_persistent_volume_claim(claim, self.namespace)
        if not pvc.spec.volume_name or (pvc.status.phase or "") != "Bound":
            raise ApiException(status=404, reason=f"persistentvolumeclaim {claim!r} is not bound")
        pv = self.core.read_persistent_volume(pvc.spec.volume_name)
        source = pv.spec.host_path or pv.spec.local
        if source is None:
            raise PodFailure("UnsupportedVolume", f"volume of claim {claim!r}: only hostPath and local")
        return Path(source.path)

    def configmap_data(self, src: dict[str, Any]) -> dict[str, bytes] | None:
        try:
            cm = self.core.read_namespaced_config_map(src["name"], self.namespace)
        except ApiException as exc:
            if exc.status == 404 and src.get("optional"):
                return None
            raise
        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return data

    def secret_data(self, src: dict[str, Any]) -> dict[str, bytes] | None:
        try:
            secret = self.core.read_namespaced_secret(src["name"], self.namespace)
        except ApiException as exc:
            if exc.status == 404 and src.get("optional"):
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    @staticmethod
    def _write_file(path: Path, data: bytes, mode: int | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode if mode is not None else 0o644)

    def _write_source(self, root: Path, src: dict[str, Any], data: dict[str, bytes] | None) -> None:
        if data is None:
            return
        mode = src.get("defaultMode")
        items = src.get("items")
        if items:
            for item in items:
                if item["key"] not in data:
                    if src.get("optional"):
                        continue
                    raise PodFailure(
                        "CreateContainerConfigError", f"key {item['key']!r} not found in {src.get('name')!r}"
                    )
                self._write_file(root / item["path"], data[item["key"]], item.get("mode", mode))
        else:
            for key, value in data.items():
                self._write_file(root / key, value, mode)

    def _write_downward(self, root: Path, items: list[dict[str, Any]], mode: int | None) -> None:
        for item in items:
            if "fieldRef" in item:
                value = self.field(item["fieldRef"]["fieldPath"])
            else:
                value = self.resource_field(item["resourceFieldRef"])
            self._write_file(root / item["path"], value.encode(), item.get("mode", mode))

    def _write_token(self, root: Path, src: dict[str, Any], mode: int | None) -> None:
        body = {
            "spec": {
                "audiences": [src["audience"]] if src.get("audience") else None,
                "expirationSeconds": src.get("expirationSeconds", 3607),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            }
        }
        sa = self.spec.get("serviceAccountName") or "default"
        resp = self.core.create_namespaced_service_account_token(sa, self.namespace, body)
        self._write_file(root / src["path"], resp.status.token.encode(), mode if mode is not None else 0o644)

    def field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node_name,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path in simple:
            return str(simple[path])
        for prefix, key in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
            if path == prefix:
                return "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get(key) or {}).items()))
            if path.startswith(prefix + "['") and path.endswith("']"):
                return str((meta.get(key) or {}).get(path[len(prefix) + 2 : -2], ""))
        raise PodFailure("CreateContainerConfigError", f"unsupported fieldRef {path!r}")

    def resource_field(self, ref: dict[str, Any]) -> str:
        for c in self.spec.get("containers") or []:
            if c["name"] == ref.get("containerName", c["name"]):
                kind, _, res = ref["resource"].partition(".")
                return str((c.get("resources") or {}).get(kind + "s", {}).get(res, "0"))
        return "0"

    # -- containers -----------------------------------------------------------------------------------------

    def env(self, c: dict[str, Any]) -> dict[str, str]:
        host, _, port = self.api_server.rpartition(":")
        env = {
            "PATH": self.container_path,
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
        }
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = self.configmap_data(src["configMapRef"]) or {}
            else:
                data = self.secret_data(src["secretRef"]) or {}
            env.update({prefix + k: v.decode() for k, v in data.items()})
        for var in c.get("env") or []:
            if "valueFrom" not in var:
                env[var["name"]] = expand(var.get("value", ""), env)
                continue
            vf = var["valueFrom"]
            if "fieldRef" in vf:
                env[var["name"]] = self.field(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[var["name"]] = self.resource_field(dict(vf["resourceFieldRef"], containerName=c["name"]))
            else:
                ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef") or {}
                data = (self.configmap_data(ref) if "configMapKeyRef" in vf else self.secret_data(ref)) or {}
                if ref["key"] in data:
                    env[var["name"]] = data[ref["key"]].decode()
                elif not ref.get("optional"):
                    kind = "configmap" if "configMapKeyRef" in vf else "secret"
                    raise PodFailure(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {kind} {self.namespace}/{ref['name']}",
                    )
        return env

    def user(self, c: dict[str, Any]) -> tuple[int | None, int | None]:
        pod_sc = self.spec.get("securityContext") or {}
        sc = c.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and not uid:
            raise PodFailure(
                "CreateContainerConfigError",
                "container has runAsNonRoot and image will run as root (set runAsUser: images are "
                "not inspected by the node agent)",
            )
        return uid, gid

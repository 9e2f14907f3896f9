"""kubemill's Python runner: calls the script's `main` with the run's args and writes the result envelope.

Runs as `python3 /opt/kubemill/runner/run.py` inside the runner image (or on the test node agent, where this
directory is bind-mounted there). It uses only the standard library, this directory (the `wmill` client lives
beside it) and `uv` for dependencies, so it works the same in a pod and on a laptop. The file contract is in
docs/runners.md; every path can be overridden by an environment variable for local runs.
"""

import json
import os
import sys

PREFIX = "KUBEMILL_RESULT:"
SUMMARY_LIMIT = 4096  # bytes Kubernetes keeps of a termination message
LOG_LIMIT = 1 << 20  # envelopes up to this size are also printed as the last line of stdout
STORE_OVER = LOG_LIMIT - 8192  # larger envelopes go to workspace storage: the operator keeps < 1 MiB - 1 KiB
ROOT = "/var/run/kubemill"
LOCK_FILE = "script.lock"  # beside main.py: the pinned dependencies (`kubemill lock`)


def _setting(name: str, default: str) -> str:
    return os.environ.get(name) or default


def _requirements(source: str) -> list[str]:
    """Dependencies the script declares: a `# requirements:` header or a PEP 723 `# /// script` block."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "# requirements:":
            found = []
            for extra in lines[i + 1 :]:
                if not extra.startswith("#"):
                    break
                text = extra[1:].strip()
                if text:
                    found.append(text)
            return found
        if line.strip() == "# /// script":
            block = []
            for extra in lines[i + 1 :]:
                if extra.strip() == "# ///":
                    import tomllib

                    meta = tomllib.loads("\n".join(block))
                    return [str(d) for d in meta.get("dependencies", [])]
                block.append(extra[2:] if extra.startswith("# ") else extra.lstrip("#"))
    return []


# Import names whose PyPI distribution is called something else.
_DISTRIBUTIONS = {
    "psycopg2": "psycopg2-binary",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "bs4": "beautifulsoup4",
    "cv2": "opencv-python",
    "dateutil": "python-dateutil",
    "jwt": "pyjwt",
    "dotenv": "python-dotenv",
    "google": "google-cloud",
}


def _third_party(source: str) -> list[str]:
    """Top-level modules the script imports that are not the standard library (nor `wmill`)."""
    names = []
    for line in source.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in ("import", "from") and not words[1].startswith("."):
            for part in words[1:] if words[0] == "import" else words[1:2]:
                if part == "as":
                    break
                name = part.rstrip(",").split(".")[0]
                if name.isidentifier() and name not in names:
                    names.append(name)
    stdlib = sys.stdlib_module_names
    return [n for n in names if n not in stdlib and n != "wmill"]


def _imports(source: str) -> list[str]:
    """The distributions of the script's third-party imports (what `kubemill lock` pins)."""
    return [_DISTRIBUTIONS.get(n, n) for n in _third_party(source)]


def _missing_imports(source: str) -> list[str]:
    """Third-party imports that are not importable here: Windmill installs those when a script declares
    nothing, so the brief's scripts run unchanged."""
    candidates = _third_party(source)
    if not candidates:
        return []
    import importlib.util

    return [_DISTRIBUTIONS.get(n, n) for n in candidates if importlib.util.find_spec(n) is None]


def _lock_requirements(text: str) -> tuple:
    """A `.script.lock` (Windmill's: `# py: 3.X`, then one `name==version` a line) as a requirements file
    for uv, each pin with the `--hash` options of its `# hash: name==version sha256:...` comment line (the
    comments `kubemill lock` adds; Windmill skips comment lines). Returns (text, hashed, python version)."""
    pins, hashes, python = [], {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# py:"):
            python = line[len("# py:") :].strip()
        elif line.startswith("# hash:"):
            words = line[len("# hash:") :].split()
            if words:
                hashes[words[0].lower()] = words[1:]
        elif line and not line.startswith(("#", "-")):
            pins.append(line)
    unhashed = [pin for pin in pins if pin.lower() not in hashes]
    if hashes and unhashed:
        raise DependencyError(f"the lock has hashes, but none for {', '.join(unhashed)}")
    lines = [" ".join([pin, *(f"--hash={h}" for h in hashes.get(pin.lower(), ()))]) for pin in pins]
    return "\n".join(lines) + "\n", bool(hashes), python


def _install(requirements: list[str], lock: str | None = None, no_build: bool = False) -> str:
    """One target directory per requirement set, or per lock (its sha256), and Python version, installed
    once with uv into a staging directory that is renamed into place only when uv succeeded (so a directory
    under the key is always a complete, verified install). A lock is installed exactly: `--no-deps`, and
    `--require-hashes` when it carries hashes."""
    import hashlib

    cache = _setting("KUBEMILL_CACHE_DIR", os.path.expanduser("~/.cache/kubemill/deps"))
    version = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    if lock is not None:
        digest = "lock-" + hashlib.sha256(lock.encode()).hexdigest()[:32]
        text, hashed, python = _lock_requirements(lock)
        if python and python != version[2:]:
            note = f"kubemill: the lock was resolved for Python {python}, this is {version[2:]}"
            print(note, file=sys.stderr, flush=True)
        what = "the lock's " + " ".join(line.split()[0] for line in text.splitlines())
    else:
        digest = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:16]
        what = " ".join(requirements)
    target = os.path.join(cache, "python", version, digest)
    shared = os.environ.get("KUBEMILL_SHARED_DEPS_DIR")  # the namespace's cache, read-only here
    if lock is not None and shared and os.path.isdir(os.path.join(shared, "python", version, digest)):
        return os.path.join(shared, "python", version, digest)
    if os.path.isdir(target):
        return target
    import shutil
    import subprocess
    import tempfile

    uv = os.environ.get("KUBEMILL_UV") or shutil.which("uv")
    command = [uv] if uv else [sys.executable, "-m", "uv"]
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".install-", dir=os.path.dirname(target))
    print("kubemill: installing " + what, file=sys.stderr, flush=True)
    env = dict(os.environ, UV_CACHE_DIR=os.path.join(cache, "uv"))
    options = ["--quiet", "--target", staging, "--python", sys.executable]
    if lock is not None:
        listing = os.path.join(staging, ".kubemill-lock.txt")
        with open(listing, "w", encoding="utf-8") as f:
            f.write(text)
        options += ["--no-deps", "--no-config", "-r", listing] + (["--require-hashes"] if hashed else [])
        options += ["--no-build"] if no_build else []
    else:
        options += requirements
    done = subprocess.run(  # noqa: S603 - a fixed argv, no shell
        [*command, "pip", "install", *options],
        stdout=sys.stderr,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
        text=True,
    )
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        lines = [line.strip() for line in done.stderr.splitlines()]
        reasons = [line for line in lines if line.startswith(("error:", "cause:"))]
        why = (": " + " ".join(reasons))[:1000] if reasons else "; see the log"
        raise DependencyError(f"installing {what} failed (uv exit {done.returncode}){why}")
    try:
        os.rename(staging, target)
    except OSError:  # another run installed the same set first
        shutil.rmtree(staging, ignore_errors=True)
    return target


class DependencyError(Exception):
    pass


class ResultNotSerializable(Exception):
    pass


def _jsonable(value: object) -> object:
    """What json cannot encode by itself but a script commonly returns (dates, numpy/pandas, sets...)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(value).decode()
    kind = type(value).__name__
    if kind == "Decimal":
        return float(value)  # type: ignore[arg-type]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(value)  # type: ignore[call-overload]
    for method in ("tolist", "to_dict"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    import enum

    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"Object of type {kind} is not JSON serializable")


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None  # noqa: PLR0124
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _encode(envelope: dict) -> str:
    try:
        return json.dumps(envelope, default=_jsonable, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise ResultNotSerializable(
                f"main returned a value that is not JSON-serialisable: {exc}"
            ) from exc
        # NaN and infinities become null, as JSON has no spelling for them.
        plain = json.loads(json.dumps(envelope, default=_jsonable))
        return json.dumps(_finite(plain), separators=(",", ":"))
    except (TypeError, RecursionError) as exc:
        raise ResultNotSerializable(f"main returned a value that is not JSON-serialisable: {exc}") from exc


def _error(exc: BaseException, with_stack: bool = True) -> dict:
    stack = None
    if with_stack:
        import traceback

        stack = "".join(traceback.format_exception(exc))
    message = str(exc)
    if isinstance(exc, SyntaxError):
        message = f"{exc.msg} (line {exc.lineno})"
    return {"name": type(exc).__name__, "message": message, "stack": stack}


ENTRYPOINTS = ("main", "preprocessor", "preprocessor-then-main")


def _json_kind(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _invoke(function, args: dict) -> object:
    """`function` called with the args whose names it takes (all of them with **kwargs), awaited if async."""
    params = function.__code__
    accepted = params.co_varnames[: params.co_argcount + params.co_kwonlyargcount]
    takes_any = bool(params.co_flags & 0x08)  # **kwargs
    kwargs = args if takes_any else {k: v for k, v in args.items() if k in accepted}
    result = function(**kwargs)
    if params.co_flags & 0x80 or hasattr(result, "__await__"):  # async def
        import asyncio

        async def wait() -> object:
            return await result

        result = asyncio.run(wait())
    return result


def _function(module, name: str, code_file: str):
    function = module.__dict__.get(name)
    if not callable(function):
        step = os.environ.get("WM_FLOW_STEP_ID")
        where = f" (step {step})" if step and name == "preprocessor" else ""
        raise NameError(f"{os.path.basename(code_file)} defines no {name} function{where}")
    return function


def _call_main(code_file: str, args: dict, entrypoint: str = "main") -> object:
    """Load the script and call its `main`, or (`entrypoint`, which only the operator sets, in the
    environment) its `preprocessor`, or its `preprocessor` then `main` on the object it returns."""
    if entrypoint not in ENTRYPOINTS:
        raise ValueError(f"unknown entrypoint {entrypoint!r} (expected one of {', '.join(ENTRYPOINTS)})")
    with open(code_file, encoding="utf-8") as f:
        source = f.read()
    lock_file = os.path.join(os.path.dirname(code_file), LOCK_FILE)
    if os.path.isfile(lock_file):  # a lock is installed exactly, whatever the script declares
        with open(lock_file, encoding="utf-8") as f:
            sys.path.insert(0, _install([], f.read()))
    else:
        extra = [r for r in os.environ.get("KUBEMILL_REQUIREMENTS", "").splitlines() if r.strip()]
        requirements = _requirements(source) + extra
        if not requirements:
            requirements = _missing_imports(source)
        if requirements:
            sys.path.insert(0, _install(requirements))
    code = compile(source, code_file, "exec")
    import types

    module = types.ModuleType("main")
    module.__file__ = code_file
    sys.modules["main"] = module
    sys.path.insert(0, os.path.dirname(code_file))
    exec(code, module.__dict__)  # noqa: S102 - running the user's script is the runner's job
    if entrypoint == "main":
        return _invoke(_function(module, "main", code_file), args)
    preprocessor = _function(module, "preprocessor", code_file)
    main_function = _function(module, "main", code_file) if entrypoint != "preprocessor" else None
    result = _invoke(preprocessor, args)
    if main_function is None:
        return result
    if not isinstance(result, dict):
        raise TypeError(f"the preprocessor must return an object (main's args), not {_json_kind(result)}")
    return _invoke(main_function, result)


def _mask_forms() -> list:
    """The forms of the run's secret values (the operator lists them, longest first), or [] without any."""
    path = os.environ.get("KUBEMILL_MASKS_FILE")
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as f:
            forms = json.load(f)
    except (OSError, ValueError):
        return []
    return [f for f in forms if isinstance(f, str) and f] if isinstance(forms, list) else []


def _mask(value, forms: list):
    """`value` (plain JSON) with every form replaced by `***`, in keys too."""
    if isinstance(value, str):
        for form in forms:
            if form in value:
                value = value.replace(form, "***")
        return value
    if isinstance(value, dict):
        return {_mask(k, forms): _mask(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, forms) for v in value]
    return value


class _MaskedStream:
    """Pipes file descriptor `fd` (1 or 2) through a thread that masks each line before it reaches the
    container's log: what the script prints, and what its subprocesses print, never shows a secret."""

    LINE_MAX = 1 << 20  # a longer line is masked and written in pieces

    def __init__(self, fd: int, forms: list) -> None:
        import threading

        self.fd, self.forms = fd, forms
        self.saved = os.dup(fd)
        read, write = os.pipe()
        os.dup2(write, fd)
        os.close(write)
        self.read = read
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _emit(self, data: bytes) -> None:
        text = _mask(data.decode("utf-8", "surrogateescape"), self.forms)
        out = text.encode("utf-8", "surrogateescape")
        while out:
            out = out[os.write(self.saved, out) :]

    def _pump(self) -> None:
        pending = b""
        while chunk := os.read(self.read, 65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._emit(line + b"\n")
            if len(pending) > self.LINE_MAX:
                self._emit(pending)
                pending = b""
        if pending:
            self._emit(pending)

    def close(self) -> None:
        os.dup2(self.saved, self.fd)  # the pipe's last writer is gone: the thread reads EOF
        self.thread.join(timeout=10)
        os.close(self.read)


def _write(path: str, text: str) -> bool:
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return True
    except OSError:
        return False


def _summary(text: str, envelope: dict) -> str:
    """The termination message: the envelope itself when it fits in 4 KiB, else what fits of the error."""
    if len(text.encode()) <= SUMMARY_LIMIT:
        return text
    error = envelope.get("error")
    if error:
        error = {
            "name": str(error.get("name"))[:200],
            "message": str(error.get("message"))[:1500],
            "stack": (error.get("stack") or "")[-1500:] or None,
        }
    return json.dumps({"result": None, "error": error, "state": None, "truncated": True, "bytes": len(text)})


def _result_to_storage(text: str) -> tuple:
    """A result over 1 MiB goes to the namespace's workspace storage (wmill/s3.py) when it has one: the
    envelope then carries `result_ref` {"s3": key, "bytes": n} instead (the result is masked already)."""
    from wmill import s3

    envelope = json.loads(text)
    try:
        result = json.dumps(envelope["result"], separators=(",", ":"))
        ref = s3.store_result(result, _setting("KUBEMILL_RUN_NAME", "run"))
    except (s3.S3Error, OSError, ValueError) as exc:
        error = {**_error(exc, with_stack=False), "name": "ResultStoreFailed"}
        envelope = {**envelope, "result": None, "error": error}
        return envelope, json.dumps(envelope, separators=(",", ":"))
    if ref is None:
        return envelope, text
    envelope = {**envelope, "result": None, "result_ref": ref}
    return envelope, json.dumps(envelope, separators=(",", ":"))


def _install_only() -> int:
    """The init container's step (KUBEMILL_INSTALL_ONLY): the lock's install into the namespace cache, wheels
    only. It never fails the pod: without the install, the script's container installs the lock itself
    and reports what went wrong as the run's error."""
    lock_file = os.path.join(_setting("KUBEMILL_CODE_DIR", ROOT + "/code"), LOCK_FILE)
    if os.path.isfile(lock_file):
        with open(lock_file, encoding="utf-8") as f:
            lock = f.read()
        try:
            _install([], lock, no_build=True)
        except (DependencyError, OSError) as exc:
            print(f"kubemill: not cached: {exc}", file=sys.stderr, flush=True)
    return 0


def _encoded(envelope: dict, wmill) -> tuple[dict, str]:
    """The envelope as JSON; a result JSON cannot hold becomes the run's error (and a state, its absence)."""
    try:
        return envelope, _encode(envelope)
    except ResultNotSerializable as exc:
        envelope = {"result": None, "error": _error(exc, with_stack=False), "state": wmill._current_state()}
        try:
            return envelope, _encode(envelope)
        except ResultNotSerializable:
            envelope["state"] = None
            return envelope, _encode(envelope)


def main() -> int:
    if os.environ.get("KUBEMILL_INSTALL_ONLY") == "1":
        return _install_only()
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import wmill

    code_file = os.path.join(_setting("KUBEMILL_CODE_DIR", ROOT + "/code"), "main.py")
    state_file = _setting("KUBEMILL_STATE_FILE", ROOT + "/state/state.json")
    result_file = _setting("KUBEMILL_RESULT_FILE", ROOT + "/out/result.json")
    wmill._load_state(state_file)
    forms = _mask_forms()
    streams = []
    if forms:
        sys.stdout.flush()
        sys.stderr.flush()
        streams = [_MaskedStream(1, forms), _MaskedStream(2, forms)]
    try:
        with open(_setting("KUBEMILL_ARGS_FILE", ROOT + "/args.json"), encoding="utf-8") as f:
            args = json.load(f)
        entrypoint = os.environ.get("KUBEMILL_ENTRYPOINT") or "main"  # the operator's, never an arg
        result = _call_main(code_file, args if isinstance(args, dict) else {}, entrypoint)
        envelope = {"result": result, "error": None, "state": wmill._current_state()}
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        envelope = {"result": None, "error": _error(exc), "state": wmill._current_state()}
    flow_states = wmill._changed_flow_user_states()
    if flow_states is not None:  # wmill.set_flow_user_state: the flow engine keeps them for later steps
        envelope["flow_user_states"] = flow_states
    envelope, text = _encoded(envelope, wmill)
    if forms:  # what viewers can read (termination message, log line) never holds a secret
        envelope = _mask(json.loads(text), forms)
        text = json.dumps(envelope, separators=(",", ":"))
    if len(text.encode()) > STORE_OVER and not envelope["error"]:
        envelope, text = _result_to_storage(text)
    if wmill._state_changed():
        _write(state_file, json.dumps(envelope["state"], default=_jsonable))
    _write(result_file, text)
    _write(_setting("KUBEMILL_TERMINATION_LOG", "/dev/termination-log"), _summary(text, envelope))
    sys.stdout.flush()
    sys.stderr.flush()
    for stream in streams:
        stream.close()
    if os.environ.get("KUBEMILL_LOG_RESULT", "1") != "0" and len(text.encode()) <= LOG_LIMIT:
        sys.stdout.write("\n" + PREFIX + text + "\n")
        sys.stdout.flush()
    return 1 if envelope["error"] else 0


if __name__ == "__main__":
    sys.exit(main())

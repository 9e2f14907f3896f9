"""The runner images, built from runner_images/*/Dockerfile by scripts/build-images, run real scripts.

Each run is a real container under podman with what the restricted Pod Security Standard and the operator's
pod spec impose: a read-only root file system, user 65532, every capability dropped, no privilege escalation,
no network, /tmp as the only writable scratch (the pod's emptyDir) and the run's files mounted where the
operator mounts them. The image's own entrypoint (CMD) runs the script: nothing of the host is bind-mounted
over the wrapper, unlike the test node agent.

The session fixture builds the images (a no-op when warm) and fails, not skips, when podman or a build fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_runners_contract import SCRIPTS

ROOT = Path(__file__).parents[2]
VERSION = "0.1.0"
LANGUAGES = ["python3", "bash", "deno", "bun", "go"]
FILENAMES = {"python3": "main.py", "bash": "main.sh", "deno": "main.ts", "bun": "main.ts", "go": "main.go"}

pytestmark = pytest.mark.images


SHOW_FLAGS = 'source scripts/podman-env; printf "%s\\n" "${PODMAN_GLOBAL[@]}" -- "${PODMAN_ULIMITS[@]}"'


def podman_flags() -> tuple[list[str], list[str]]:
    """The global and `run` flags of scripts/podman-env (runc, the host's ulimits)."""
    out = subprocess.run(
        ["bash", "-c", SHOW_FLAGS],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    split = out.index("--")
    return out[:split], out[split + 1 :]


@pytest.fixture(scope="session")
def images() -> None:
    if shutil.which("podman") is None and os.geteuid() != 0:
        pytest.fail("podman is not installed (scripts/build-images installs it when run as root)")
    # KUBEMILL_TEST_IMAGES narrows what is built while working on one image; tests of the others then fail.
    names = os.environ.get("KUBEMILL_TEST_IMAGES", " ".join(["operator", *LANGUAGES])).split()
    done = subprocess.run(["scripts/build-images", *names], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"scripts/build-images failed ({done.returncode}):\n{done.stderr[-4000:]}")


def run_in_image(
    language: str, code: str, args: dict[str, Any], tmp_path: Path, state: Any = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Run `code` with the image's own command under restricted settings; (process, result envelope)."""
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / FILENAMES[language]).write_text(code)
    (tmp_path / "args.json").write_text(json.dumps(args))
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the emptyDir the pod writes its result to
    mounts = [
        f"{code_dir}:/var/run/kubemill/code:ro",
        f"{tmp_path / 'args.json'}:/var/run/kubemill/args.json:ro",
        f"{out}:/var/run/kubemill/out",
    ]
    if state is not None:
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "state.json").write_text(json.dumps(state))
        mounts.append(f"{tmp_path / 'state'}:/var/run/kubemill/state:ro")
    global_flags, run_flags = podman_flags()
    command = [
        "podman",
        *global_flags,
        "run",
        "--rm",
        *run_flags,
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs=/tmp:rw,mode=1777",
        "--user=65532:65532",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--network=none",
        "--pids-limit=512",
        "--memory=1g",
        *[f"--volume={m}" for m in mounts],
        "--env=WM_WORKSPACE=images",
        f"ghcr.io/kubemill/runner-{language}:{VERSION}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    result = out / "result.json"
    return done, json.loads(result.read_text()) if result.exists() else None


@pytest.mark.parametrize("language", LANGUAGES)
def test_script_runs_in_its_image(images: None, language: str, tmp_path: Path) -> None:
    done, envelope = run_in_image(language, SCRIPTS[language]["echo"], {"name": "Ada"}, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert envelope is not None
    assert envelope["error"] is None
    assert envelope["result"] == {"hello": "Ada"}
    assert "greeting Ada" in done.stdout + done.stderr
    # The result is also the log's last line, where the operator reads it from `kubectl logs`.
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("KUBEMILL_RESULT:")
    assert json.loads(last.removeprefix("KUBEMILL_RESULT:"))["result"] == {"hello": "Ada"}


@pytest.mark.parametrize("language", LANGUAGES)
def test_state_through_the_windmill_client(images: None, language: str, tmp_path: Path) -> None:
    """The in-image Windmill client (wmill, windmill-client, the Go client, bash helpers) reads a read-only
    state file and returns the new state in the envelope."""
    done, envelope = run_in_image(language, SCRIPTS[language]["state"], {}, tmp_path, state=41)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert envelope is not None
    assert envelope["error"] is None, envelope["error"]
    assert envelope["result"] == 42
    assert envelope["state"] == 42


@pytest.mark.parametrize("language", LANGUAGES)
def test_error_envelope(images: None, language: str, tmp_path: Path) -> None:
    done, envelope = run_in_image(language, SCRIPTS[language]["raise"], {}, tmp_path)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert envelope is not None
    assert envelope["error"] is not None
    assert "boom" in envelope["error"]["message"] + json.dumps(envelope["error"])


def test_root_filesystem_is_read_only(images: None, tmp_path: Path) -> None:
    """The settings hold: a script can write /tmp, not the image, and is not root."""
    code = (
        "import os, pathlib\n\ndef main():\n"
        "    pathlib.Path('/tmp/x').write_text('ok')\n"
        "    try:\n        open('/opt/kubemill/runner/x', 'w')\n        wrote = True\n"
        "    except OSError:\n        wrote = False\n"
        "    return {'uid': os.getuid(), 'home': os.path.expanduser('~'), 'wrote_image': wrote}\n"
    )
    done, envelope = run_in_image("python3", code, {}, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert envelope is not None
    assert envelope["result"] == {"uid": 65532, "home": "/tmp", "wrote_image": False}


def run_operator_image(*args: str) -> subprocess.CompletedProcess[str]:
    global_flags, run_flags = podman_flags()
    restricted = ["--read-only", "--tmpfs=/tmp:rw,mode=1777", "--user=65532:65532", "--cap-drop=ALL"]
    restricted += ["--security-opt=no-new-privileges", "--network=none"]
    command = ["podman", *global_flags, "run", "--rm", *run_flags, *restricted, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


UI_CHECK = (
    "import kubemill.ui, pathlib; "
    "print((pathlib.Path(kubemill.ui.__file__).parent / 'static/index.html').exists())"
)


def test_operator_image_starts(images: None) -> None:
    """The operator image's entrypoint imports the operator under the same settings (`kubemill operator
    --help`: what the chart's Deployment runs, less the cluster), and it carries the web UI's bundle."""
    done = run_operator_image(f"ghcr.io/kubemill/operator:{VERSION}", "operator", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "operator" in done.stdout
    ui = run_operator_image("--entrypoint=python3", f"ghcr.io/kubemill/operator:{VERSION}", "-c", UI_CHECK)
    assert ui.stdout.strip() == "True", ui.stderr[-2000:]

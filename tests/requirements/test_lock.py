"""The dependency locks: they match pyproject.toml, and a change to its dependencies is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK_PY = REPO / "requirements" / "lock.py"


def _lock_module() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("relaydesk_lock", LOCK_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_locks_match_pyproject() -> None:
    result = subprocess.run(
        [sys.executable, str(LOCK_PY), "check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_locked_package_is_pinned_with_hashes() -> None:
    for name in ("run.txt", "dev.txt"):
        text = (REPO / "requirements" / name).read_text()
        entries = [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]
        assert entries, name
        for entry in entries:
            assert "==" in entry and entry.endswith("\\"), f"{name}: {entry} is not pinned with hashes"


def test_a_dependency_change_without_make_lock_is_refused(tmp_path: Path) -> None:
    lock = _lock_module()
    changed = tmp_path / "pyproject.toml"
    original = (REPO / "pyproject.toml").read_text()
    changed.write_text(original.replace('"PyYAML>=6.0",', '"PyYAML>=6.0",\n    "left-pad>=1",'))
    reformatted = tmp_path / "same.toml"
    reformatted.write_text(original.replace("dependencies = [", "dependencies   =   ["))
    digest = lock.pyproject_digest  # type: ignore[attr-defined]
    assert digest(changed) != digest(REPO / "pyproject.toml")
    assert digest(reformatted) == digest(REPO / "pyproject.toml")  # formatting alone is not a change

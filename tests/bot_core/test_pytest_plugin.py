"""The pytest plugin for plugin authors: the README's "Testing a plugin" example passes as written."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_example() -> str:
    """The first Python block of the README's "Testing a plugin" section."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Testing a plugin", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "no python block in the README's Testing a plugin section"
    return match.group(1)


def _plugin_args() -> list[str]:
    """``-p bot_core.pytest_plugin`` unless the installed relaydesk registers it already (pytest11)."""
    installed = {ep.value for ep in entry_points(group="pytest11")}
    return [] if "bot_core.pytest_plugin" in installed else ["-p", "bot_core.pytest_plugin"]


async def test_the_readme_plugin_test_passes_and_a_wrong_expectation_fails(tmp_path: Path) -> None:
    example = readme_example()
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "test_opening_hours.py").write_text(example, encoding="utf-8")
    wrong = example.replace('"We are open 9-17."]', '"We are closed."]')
    assert wrong != example
    (tmp_path / "test_wrong.py").write_text(wrong.replace("OpeningHours", "Hours2"), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_plugin_args()),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    output = out.decode()
    assert "1 failed, 1 passed" in output, output
    assert "FAILED test_wrong.py::test_the_hours_are_answered" in output, output
    assert "We are open 9-17." in output, output  # the failure shows what the customer got


def test_the_plugin_is_registered_for_pytest_in_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["entry-points"]["pytest11"] == {"relaydesk": "bot_core.pytest_plugin"}

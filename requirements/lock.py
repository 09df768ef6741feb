"""The dependency locks: `make lock` writes them, every install checks them first (stdlib only).

Two lock files, both made by pip-compile with hashes from pyproject.toml:

- ``requirements/run.txt``: relaydesk and the `demo` extra (what `make run` needs, nothing more);
- ``requirements/dev.txt``: every extra (tests, linters, the FAQ's matchers, the dev homeserver).

Each starts with a digest of the parts of pyproject.toml that decide what gets installed (the
dependencies, every extra, the Python and build requirements). ``check`` recomputes it: a change to
pyproject.toml without ``make lock`` stops the install with one line saying so, instead of installing
something nobody reviewed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
DIGEST_PREFIX = "# pyproject-digest: "
LOCKS: dict[str, list[str]] = {
    "run.txt": ["--extra", "demo"],
    "dev.txt": ["--all-extras"],
}
PIP_COMPILE_FLAGS = [
    "--quiet",
    "--generate-hashes",
    "--allow-unsafe",  # setuptools: the editable install builds without isolation, from the lock
    "--all-build-deps",
    "--strip-extras",
    "--no-emit-index-url",
    "--no-emit-find-links",
    "--no-emit-options",
]


def pyproject_digest(path: Path = PYPROJECT) -> str:
    """The sha256 of what pyproject.toml says to install (key order and formatting do not count)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    project = data.get("project", {})
    relevant = {
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {
            extra: sorted(reqs) for extra, reqs in sorted(project.get("optional-dependencies", {}).items())
        },
        "requires-python": project.get("requires-python", ""),
        "build-requires": sorted(data.get("build-system", {}).get("requires", [])),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    """The digest a lock file was made from, or None when it has none."""
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX) :].strip()
    return None


def check(names: list[str]) -> int:
    """Exit status 0 when every named lock matches pyproject.toml, 1 (with one line each) otherwise."""
    want = pyproject_digest()
    failed = 0
    for name in names or list(LOCKS):
        lock = ROOT / "requirements" / name
        if not lock.exists():
            print(f"requirements/{name} is missing: run `make lock`", file=sys.stderr)
            failed = 1
        elif recorded_digest(lock) != want:
            print(
                f"requirements/{name} does not match pyproject.toml (its dependencies changed):"
                " run `make lock` and commit both",
                file=sys.stderr,
            )
            failed = 1
    return failed


def lock(pip_compile: str, upgrade: bool) -> int:
    """Write every lock file with pip-compile, keeping pinned versions unless ``upgrade``."""
    digest = pyproject_digest()
    for name, extras in LOCKS.items():
        out = ROOT / "requirements" / name
        print(f"locking requirements/{name} ...", flush=True)
        # relative paths: they are written into the lock's header
        args = [
            pip_compile,
            *PIP_COMPILE_FLAGS,
            *extras,
            "--output-file",
            f"requirements/{name}",
            "pyproject.toml",
        ]
        if upgrade:
            args.append("--upgrade")
        env = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}  # what the header tells to run
        result = subprocess.run(args, cwd=ROOT, env=env, check=False)
        if result.returncode != 0:
            return result.returncode
        lines = out.read_text(encoding="utf-8").splitlines()
        lines = [line for line in lines if not line.startswith(DIGEST_PREFIX)]
        # after pip-compile's own header comment
        at = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
        lines.insert(at, DIGEST_PREFIX + digest)
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


def main(argv: list[str]) -> int:
    """``lock.py check [NAME...]`` or ``lock.py lock PIP_COMPILE [--upgrade]``."""
    if argv[:1] == ["check"]:
        return check(argv[1:])
    if argv[:1] == ["lock"] and len(argv) >= 2:
        return lock(argv[1], "--upgrade" in argv[2:])
    print(
        "usage: lock.py check [run.txt|dev.txt ...] | lock.py lock PATH/TO/pip-compile [--upgrade]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

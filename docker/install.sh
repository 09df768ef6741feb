#!/bin/sh
# The image's install steps, in one place: docker/Dockerfile runs them, and
# tests/docker/test_image_install.py runs the very same script in a clean venv (no Docker engine needed).
#
#   docker/install.sh deps <venv>   the locked dependencies of `make run` (requirements/run.txt, hashes)
#   docker/install.sh app <venv>    relaydesk itself from the sources in the current directory
#
# Both install exactly what the lock says: --require-hashes, --no-deps, no build isolation (setuptools
# comes from the lock too), so the image is the same on any day.
set -eu
step=${1:?usage: install.sh deps|app <venv>}
venv=${2:?usage: install.sh deps|app <venv>}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check --no-input"
case "$step" in
  deps)
    python3 requirements/lock.py check  # the lock matches pyproject.toml (stdlib only)
    $pip install --require-hashes --no-deps -r requirements/run.txt
    ;;
  app)
    PYTHONWARNINGS="ignore:Editable installation" $pip install --no-deps --no-build-isolation .
    $pip check
    ;;
  *)
    echo "install.sh: unknown step '$step' (deps or app)" >&2
    exit 2
    ;;
esac

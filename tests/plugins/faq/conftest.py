"""A desk with the memory channel and workspace doubles and the FAQ plugin on a copy of the sample knowledge base."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from bot_core.desk import Desk
from plugins.faq import FaqPlugin
from tests.conftest import DOUBLES_YAML, DeskFactory

SAMPLE = Path(__file__).resolve().parents[3] / "plugins" / "faq" / "examples" / "shop.yaml"


def tuned_cache() -> Path:
    """The tuned matcher's cache shared by the tests and kept between runs (``$RELAYDESK_FAQ_CACHE``, else
    a directory in the system's temporary one): fine-tuning on the sample takes a minute or more on 2 cores.
    """
    path = Path(
        os.environ.get("RELAYDESK_FAQ_CACHE") or Path(tempfile.gettempdir()) / "relaydesk-faq-test-cache"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def share_tuned_cache(trained: Path, shared: Path) -> None:
    """Copy what a test trained in its own cache ``trained`` into the shared one (:func:`tuned_cache`):
    the files it lacks, each written whole under a temporary name first, so later tests load them."""
    for file in [*trained.glob("minilm-*.int8.onnx"), *trained.glob("softmax-*.npz")]:
        target = shared / file.name
        if not target.exists():
            partial = target.with_name(f".{file.name}.{os.getpid()}.tmp")
            shutil.copyfile(file, partial)
            partial.replace(target)


def faq_yaml(kb: Path, extra: str = "") -> str:
    """plugins.yaml: the doubles, then the FAQ on ``kb`` (re-read every 0.05 s), as in the shipped plugins.yaml."""
    return (
        DOUBLES_YAML
        + f"""\
  - faq:
      knowledge_base: "{kb}"
      reload_interval: 0.05
{extra}"""
    )


@pytest.fixture
def kb_file(tmp_path: Path) -> Path:
    """A private copy of the sample knowledge base (tests edit it)."""
    path = tmp_path / "shop.yaml"
    shutil.copy(SAMPLE, path)
    return path


FaqDesk = Callable[..., Awaitable[Desk]]


@pytest.fixture
def faq_desk(sqlite_url: str, make_desk: DeskFactory, kb_file: Path) -> FaqDesk:
    """Start a desk with the FAQ plugin on ``kb_file`` (extra config lines may be given, indented 6)."""

    async def start(extra: str = "", kb: Path | None = None) -> Desk:
        return await make_desk(sqlite_url, faq_yaml(kb or kb_file, extra))

    return start


def faq_of(desk: Desk) -> FaqPlugin:
    """The FAQ plugin instance of a desk."""
    return cast(FaqPlugin, desk.plugins["faq"])

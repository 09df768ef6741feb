"""A desk with the memory channel and workspace doubles and the FAQ plugin on a copy of the sample knowledge base."""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest

from bot_core.desk import Desk
from plugins.faq import FaqPlugin
from tests.conftest import DOUBLES_YAML, DeskFactory

SAMPLE = Path(__file__).resolve().parents[3] / "plugins" / "faq" / "examples" / "shop.yaml"


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

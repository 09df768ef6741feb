"""Structured logging: one JSON object per line (or plain text), with known secret values redacted.

Message bodies are never logged at INFO: the engine logs ids and sizes, and only DEBUG carries text.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class Redactor(logging.Filter):
    """Replaces every registered secret value in a record's final message and fields with ``***``."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, values: Iterable[str]) -> None:
        """Register secret values (short ones are ignored: they would redact ordinary words)."""
        self._secrets.update(v for v in values if len(v) >= 6)

    def scrub(self, text: str) -> str:
        """``text`` with every registered secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops it."""
        if self._secrets:
            record.msg = self.scrub(record.getMessage())
            record.args = None
            for key, value in list(vars(record).items()):
                if key not in _STANDARD_ATTRS and isinstance(value, str):
                    setattr(record, key, self.scrub(value))
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a single JSON line."""
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                data[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the ``extra=`` fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one line of text plus its extra fields."""
        base = super().format(record)
        extras = " ".join(
            f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")
        )
        return f"{base} {extras}" if extras else base


REDACTOR = Redactor()


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """Configure the root logger once for a relaydesk process."""
    REDACTOR.add(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # tortoise logs every SQL statement (with values, i.e. message bodies) at DEBUG: keep it out.
    logging.getLogger("tortoise").setLevel(max(logging.INFO, root.level))
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)

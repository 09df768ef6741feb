"""Files customers send from the widget: type and size checks, storage on disk, and what to call them.

A file is kept under ``upload_dir/<id>`` with a small JSON sidecar (name, type, size). Ids are random
(128 bits), and links to them are signed on top, with an expiry (see :mod:`bot_core.downloads`).
The type a browser declares is not trusted for images and PDFs: the first bytes must match it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

# The types the widget accepts by default, with a word for people and the bytes they must start with.
KNOWN_TYPES: dict[str, tuple[str, tuple[bytes, ...]]] = {
    "image/png": ("PNG image", (b"\x89PNG\r\n\x1a\n",)),
    "image/jpeg": ("JPEG image", (b"\xff\xd8\xff",)),
    "image/gif": ("GIF image", (b"GIF87a", b"GIF89a")),
    "image/webp": ("WebP image", (b"RIFF",)),
    "application/pdf": ("PDF", (b"%PDF-",)),
    "text/plain": ("text file", ()),
}
DEFAULT_TYPES = list(KNOWN_TYPES)
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


class UploadRefused(Exception):
    """The file cannot be accepted; ``str()`` says why in words for the customer; ``status`` is HTTP's."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def human_size(size: int) -> str:
    """``10 MB``, ``512 KB``, ``12 bytes``."""
    if size >= 1024 * 1024:
        value = size / (1024 * 1024)
        return f"{value:.1f}".rstrip("0").rstrip(".") + " MB"
    if size >= 1024:
        return f"{size // 1024} KB"
    return f"{size} bytes"


def describe_types(types: list[str]) -> str:
    """``PNG image, JPEG image or PDF``."""
    words = [KNOWN_TYPES[t][0] if t in KNOWN_TYPES else t for t in types]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def clean_name(name: str | None) -> str:
    """A file name safe to show and to put in a URL path: no directories, no control characters."""
    base = (name or "file").replace("\\", "/").rsplit("/", 1)[-1]
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip() or "file"
    return base[:120]


def too_large(name: str, limit: int) -> UploadRefused:
    """The refusal of a file over the size limit (read as a stream: its full size is not known)."""
    return UploadRefused(f"“{name}” is too large: files can be at most {human_size(limit)}.", status=413)


def check_type(name: str, declared: str, head: bytes, allowed: list[str]) -> str:
    """The file's type if it is allowed and its first bytes agree; raises :class:`UploadRefused`."""
    mime = (declared or "application/octet-stream").split(";", 1)[0].strip().lower()
    if mime not in allowed:
        raise UploadRefused(
            f"“{name}” is a type of file we cannot accept ({mime}). You can send: {describe_types(allowed)}.",
            status=415,
        )
    magic = KNOWN_TYPES.get(mime, ("", ()))[1]
    if magic and not any(head.startswith(m) for m in magic):
        raise UploadRefused(
            f"“{name}” does not look like a {KNOWN_TYPES[mime][0]}: it was not sent.", status=415
        )
    if mime == "image/webp" and head[8:12] != b"WEBP":
        raise UploadRefused(f"“{name}” does not look like a WebP image: it was not sent.", status=415)
    return mime


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file on disk."""

    file_id: str
    name: str
    mime_type: str
    size: int
    path: Path

    @property
    def kind(self) -> str:
        """``image`` for images, ``file`` otherwise (the core event model's attachment kinds)."""
        return "image" if self.mime_type.startswith("image/") else "file"


class FileStore:
    """Uploaded files in one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, name: str, mime_type: str, data: bytes) -> StoredFile:
        """Store ``data``; returns it with its new random id (blocking: call it in a thread)."""
        self.root.mkdir(parents=True, exist_ok=True)
        file_id = secrets.token_urlsafe(16)
        path = self.root / file_id
        path.write_bytes(data)
        meta = {"name": name, "mime_type": mime_type, "size": len(data)}
        (self.root / f"{file_id}.json").write_text(json.dumps(meta), encoding="utf-8")
        return StoredFile(file_id, name, mime_type, len(data), path)

    def load(self, file_id: str) -> StoredFile | None:
        """The stored file with this id, or None (blocking: call it in a thread)."""
        if not _ID.match(file_id):
            return None
        try:
            meta = json.loads((self.root / f"{file_id}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        path = self.root / file_id
        if not path.is_file():
            return None
        return StoredFile(file_id, str(meta["name"]), str(meta["mime_type"]), int(meta["size"]), path)

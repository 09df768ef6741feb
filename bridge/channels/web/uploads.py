"""Files customers send from the widget: type and size checks, storage on disk, and what to call them.

A file is kept under ``upload_dir/<id>`` with a small JSON sidecar (name, type, size); while it arrives
it is written to ``upload_dir/.part-<random>`` (never held in memory), renamed once accepted and removed
otherwise. Ids are random (128 bits), and links to them are signed on top, with an expiry (see
:mod:`bot_core.downloads`).
The type a browser declares is not trusted for images and PDFs: the first bytes must match it.
The directory has a quota: a file that would take it past ``quota_bytes`` is refused (HTTP 507) and the
operator is told in the log; a file whose message is then refused is removed again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

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
PARTIAL_PREFIX = ".part-"
PARTIAL_MAX_AGE_SECONDS = 3600.0  # a partial file this old was left by a crash: removed at start
USAGE_RESCAN_SECONDS = 30.0  # how old the directory's measured size may get (other workers write too)
log = logging.getLogger("relaydesk.web.uploads")


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


class PartialFile:
    """An upload being received, written to disk as it arrives (blocking methods: call them in a thread)."""

    HEAD_BYTES = 16  # what the type check looks at

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.head = b""
        self._handle: BinaryIO | None = path.open("xb")

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``."""
        assert self._handle is not None
        self._handle.write(chunk)
        if len(self.head) < self.HEAD_BYTES:
            self.head = (self.head + chunk)[: self.HEAD_BYTES]
        self.size += len(chunk)

    def close(self) -> None:
        """Flush and close (the file stays)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        """Close and remove the file (an upload refused or broken off)."""
        self.close()
        self.path.unlink(missing_ok=True)


class FileStore:
    """Uploaded files in one directory, at most ``quota_bytes`` of them (``None``: no quota)."""

    def __init__(self, root: Path, quota_bytes: int | None = None) -> None:
        self.root = root
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._usage: int | None = None
        self._measured_at = 0.0

    def usage(self) -> int:
        """Bytes the directory holds now (measured again every few seconds; blocking)."""
        with self._lock:
            return self._current_usage()

    def _current_usage(self) -> int:
        now = time.monotonic()
        if self._usage is None or now - self._measured_at > USAGE_RESCAN_SECONDS:
            self._usage, self._measured_at = _directory_size(self.root), now
        return self._usage

    def begin(self) -> PartialFile:
        """A new file to receive an upload into (blocking: call it in a thread)."""
        self.root.mkdir(parents=True, exist_ok=True)
        return PartialFile(self.root / f"{PARTIAL_PREFIX}{secrets.token_urlsafe(16)}")

    def commit(self, partial: PartialFile, name: str, mime_type: str) -> StoredFile:
        """Keep a received file; returns it with its new random id (blocking: call it in a thread).

        Raises :class:`UploadRefused` (507), and removes the file, when it would take the directory
        past its quota.
        """
        partial.close()
        meta = json.dumps({"name": name, "mime_type": mime_type, "size": partial.size})
        with self._lock:
            used = self._current_usage()
            if self.quota_bytes is not None and used + partial.size + len(meta) > self.quota_bytes:
                partial.discard()
                log.warning(
                    "the upload directory is full: a file was refused (raise upload_quota_bytes or "
                    "remove old files)",
                    extra={"directory": str(self.root), "used": used, "quota": self.quota_bytes},
                )
                raise UploadRefused("We cannot accept files right now: try again later.", status=507)
            self._usage = used + partial.size + len(meta)
        file_id = secrets.token_urlsafe(16)
        path = self.root / file_id
        (self.root / f"{file_id}.json").write_text(meta, encoding="utf-8")
        partial.path.rename(path)
        return StoredFile(file_id, name, mime_type, partial.size, path)

    def save(self, name: str, mime_type: str, data: bytes) -> StoredFile:
        """Store ``data`` at once (blocking: call it in a thread); see :meth:`commit`."""
        partial = self.begin()
        partial.write(data)
        return self.commit(partial, name, mime_type)

    def sweep_partials(self) -> int:
        """Remove partial files a crash left behind (older than an hour); returns how many (blocking)."""
        removed = 0
        cutoff = time.time() - PARTIAL_MAX_AGE_SECONDS
        for path in self.root.glob(f"{PARTIAL_PREFIX}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def remove(self, file_id: str) -> None:
        """Delete a stored file whose message was not accepted after all (blocking)."""
        if not _ID.match(file_id):
            return
        freed = 0
        for path in (self.root / file_id, self.root / f"{file_id}.json"):
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
        with self._lock:
            if self._usage is not None:
                self._usage = max(0, self._usage - freed)

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


def _directory_size(root: Path) -> int:
    """The bytes of the files directly in ``root`` (0 if it does not exist yet)."""
    total = 0
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.name.startswith(PARTIAL_PREFIX):
                    continue  # uploads still arriving are bounded by max_upload_bytes, not the quota
                try:
                    total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue  # removed meanwhile
    except FileNotFoundError:
        return 0
    return total

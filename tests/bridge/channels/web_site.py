"""A relaydesk with the web channel on a real database and HTTP port, as the edge and fuzz tests use it."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp

from bot_core.desk import Desk
from bridge.channels.web import WebChannel
from storage.models import InboundReceipt, PluginState

IDENTITY_SECRET = "shop-backend-shares-this"
ENVIRON = {"SHOP_IDENTITY_SECRET": IDENTITY_SECRET}


def site_yaml(tmp_path: Path, port: int, *, web: str = "", server: str = "") -> str:
    """plugins.yaml of a desk with the in-memory workspace and the web channel (``web``: more settings,
    each line indented by six spaces; ``server``: more ``server`` settings, ``, key: value`` each)."""
    return f"""
server: {{host: 127.0.0.1, port: {port}{server}}}
plugins:
  - desk: {{use: "bot_core.testing:MemoryWorkspace"}}
  - web:
      identity_secret: "${{SHOP_IDENTITY_SECRET}}"
      dev_secret_file: "{tmp_path / "web-secret"}"
      upload_dir: "{tmp_path / "uploads"}"
{web}
"""


def backend_claim(
    secret: str = IDENTITY_SECRET, *, issued_at: int | None = None, **fields: str
) -> dict[str, Any]:
    """What a shop's backend hands the widget, computed with the standard library as the README shows."""
    claims: dict[str, Any] = {**fields, "issued_at": int(time.time()) if issued_at is None else issued_at}
    signed = json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return {**claims, "user_hash": hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}


@dataclass
class WebSite:
    """A running desk with the web channel, and how to reach it."""

    desk: Desk
    port: int
    upload_dir: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def web(self) -> WebChannel:
        return cast(WebChannel, self.desk.plugins["web"])

    async def token(self, http: aiohttp.ClientSession) -> str:
        """A new anonymous visitor's token."""
        async with http.post(f"{self.base}/web/api/session", json={}) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["token"])

    async def snapshot(self) -> tuple[object, ...]:
        """What a request could have changed, once the desk handled what it was given: the events stored,
        the channel's state rows (watermarks), the upload directory."""
        assert await self.desk.wait_settled(10)
        events = await InboundReceipt.all().count()
        rows = (
            await PluginState.filter(plugin="web")
            .order_by("scope", "key")
            .values_list("scope", "key", "value")
        )
        files = sorted(p.name for p in self.upload_dir.glob("*")) if self.upload_dir.is_dir() else []
        return (events, rows, files)

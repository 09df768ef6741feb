"""Visitor sessions of the web widget: signed tokens, and the identity check a site's backend makes possible.

A token is ``rdw1.<payload>.<signature>``: the payload (base64url JSON) names the visitor and when the
token expires; the signature is an HMAC-SHA256 of it under a key derived from the channel's secret.
Anonymous visitors get an unguessable random id (128 bits); a *verified* visitor's id comes from
the site's own user id or email, accepted only with the HMAC the site's backend computed for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

TOKEN_PREFIX = "rdw1"
MAX_CLAIM_CHARS = 128  # longest user id or email accepted as a verified identity


class BadSession(Exception):
    """The token is forged, damaged or expired, or an identity claim did not verify (HTTP 401)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (sessions, file links) from the channel's secret."""
    return hmac.new(secret, f"relaydesk web {purpose}".encode(), hashlib.sha256).digest()


def identity_hash(identity_secret: str, value: str) -> str:
    """What a site's backend computes for a logged-in user: hex HMAC-SHA256 of the user id (or email)."""
    return hmac.new(identity_secret.encode(), value.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class VisitorSession:
    """Who a token speaks for."""

    subject: str  # the identity's external id on the channel: v-<random> or u-<user id> / e-<email>
    name: str
    email: str | None
    verified: bool
    expires_at: float


class SessionSigner:
    """Issues and checks visitor tokens."""

    def __init__(self, secret: bytes, ttl_seconds: float) -> None:
        self._key = derive_key(secret, "sessions")
        self.ttl = ttl_seconds

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, session: VisitorSession) -> str:
        """The token for ``session`` (its ``expires_at`` is used as given)."""
        body = {"sub": session.subject, "name": session.name, "exp": int(session.expires_at)}
        if session.email:
            body["email"] = session.email
        if session.verified:
            body["ver"] = 1
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}.{payload}.{self._sign(payload)}"

    def verify(self, token: str, *, now: float | None = None) -> VisitorSession:
        """The session a token carries; raises :class:`BadSession` if it is forged, damaged or expired."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise BadSession("not a visitor token")
        payload, signature = parts[1], parts[2]
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise BadSession("bad signature")
        try:
            body = json.loads(_unb64(payload))
            session = VisitorSession(
                subject=str(body["sub"]),
                name=str(body.get("name") or ""),
                email=body.get("email"),
                verified=bool(body.get("ver")),
                expires_at=float(body["exp"]),
            )
        except (ValueError, KeyError, TypeError):
            raise BadSession("damaged token") from None
        if session.expires_at <= (time.time() if now is None else now):
            raise BadSession("session expired")
        return session

    def renewed(self, session: VisitorSession) -> VisitorSession:
        """The same visitor with a fresh expiry (sessions slide while the visitor comes back)."""
        return VisitorSession(
            session.subject, session.name, session.email, session.verified, time.time() + self.ttl
        )

    def anonymous(self) -> VisitorSession:
        """A new anonymous visitor with an unguessable id."""
        subject = "v-" + secrets.token_urlsafe(16)
        short = hashlib.sha256(subject.encode()).hexdigest()[:4]
        return VisitorSession(subject, f"Visitor {short}", None, False, time.time() + self.ttl)

    def verified(
        self,
        identity_secret: str | None,
        *,
        user_id: str | None,
        email: str | None,
        name: str | None,
        user_hash: str | None,
    ) -> VisitorSession:
        """A visitor the site vouched for: ``user_hash`` must be the HMAC of the user id (or the email).

        Raises :class:`BadSession` when identity verification is off, or the hash does not match.
        """
        if not identity_secret:
            raise BadSession("identity verification is not enabled on this relaydesk")
        claim = (user_id or "").strip() or (email or "").strip().lower()
        if not claim or len(claim) > MAX_CLAIM_CHARS:
            raise BadSession("a verified identity needs a user id or an email (at most 128 characters)")
        expected = identity_hash(identity_secret, claim)
        if not hmac.compare_digest((user_hash or "").lower().encode(), expected.encode()):
            raise BadSession("the identity hash does not match")
        subject = f"u-{claim}" if (user_id or "").strip() else f"e-{claim}"
        display = (name or "").strip()[:100] or (email or "").strip()[:100] or claim
        clean_email = (email or "").strip()[:MAX_CLAIM_CHARS] or None
        return VisitorSession(subject, display, clean_email, True, time.time() + self.ttl)

"""Visitor sessions of the web widget: signed tokens, and the identity check a site's backend makes possible.

A token is ``rdw1.<payload>.<signature>``: the payload (base64url JSON) names the visitor and when the
token expires; the signature is an HMAC-SHA256 of it under a key derived from the channel's secret.
Anonymous visitors get an unguessable random id (128 bits); a *verified* visitor's id comes from
the site's own user id or email, accepted only with the HMAC the site's backend computed over every
claimed field (user id, email, name) and the time it vouched for them (``issued_at``, Unix seconds):
the canonical form is the claim as JSON with sorted keys and no spaces, fields left empty left out
(:func:`canonical_claims`). A claim older than the channel's ``identity_max_age_seconds`` is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

TOKEN_PREFIX = "rdw1"
MAX_CLAIM_CHARS = 128  # longest user id or email accepted as a verified identity
CLAIM_FIELDS = ("user_id", "email", "name")  # what a site's backend vouches for (besides issued_at)
CLOCK_SKEW_SECONDS = 300  # an issued_at this far in the future is still accepted (clocks differ)


class BadSession(Exception):
    """The token is forged, damaged or expired, or an identity claim did not verify (HTTP 401)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose (sessions, file links) from the channel's secret."""
    return hmac.new(secret, f"relaydesk web {purpose}".encode(), hashlib.sha256).digest()


def canonical_claims(claims: Mapping[str, str | int]) -> bytes:
    """The bytes a site's backend signs: the claim as sorted, compact JSON (UTF-8, not ASCII-escaped)."""
    return json.dumps(dict(claims), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def identity_hash(identity_secret: str, claims: Mapping[str, str | int]) -> str:
    """What a site's backend computes for a logged-in user: hex HMAC-SHA256 of :func:`canonical_claims`.

    ``claims`` holds ``issued_at`` (Unix seconds) and the non-empty fields among ``user_id``, ``email``
    and ``name`` that the widget is given.
    """
    return hmac.new(identity_secret.encode(), canonical_claims(claims), hashlib.sha256).hexdigest()


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
        if not token.isascii() or len(parts) != 3 or parts[0] != TOKEN_PREFIX:
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
        claims: Mapping[str, str | int],
        user_hash: str,
        *,
        max_age: float,
        now: float | None = None,
    ) -> VisitorSession:
        """A visitor the site vouched for: ``user_hash`` must be :func:`identity_hash` of ``claims``.

        ``claims`` are the non-empty claimed fields and ``issued_at``, as the client sent them (already
        checked to be strings of valid Unicode and an integer). Raises :class:`BadSession` when identity
        verification is off, the hash does not match, or the claim is older than ``max_age`` seconds.
        """
        if not identity_secret:
            raise BadSession("identity verification is not enabled on this relaydesk")
        user_id = str(claims.get("user_id") or "").strip()
        email = str(claims.get("email") or "").strip()
        claim = user_id or email.lower()
        if not claim or len(claim) > MAX_CLAIM_CHARS or len(email) > MAX_CLAIM_CHARS:
            raise BadSession("a verified identity needs a user id or an email (at most 128 characters)")
        issued_at = claims.get("issued_at")
        if not isinstance(issued_at, int):
            raise BadSession("the claim has no issued_at (Unix seconds, covered by the hash)")
        expected = identity_hash(identity_secret, claims)
        if not hmac.compare_digest(user_hash.lower().encode(), expected.encode()):
            raise BadSession("the identity hash does not match")
        current = time.time() if now is None else now
        if issued_at > current + CLOCK_SKEW_SECONDS:
            raise BadSession("the claim's issued_at is in the future")
        if current - issued_at > max_age:
            raise BadSession("the claim has expired (issued_at too old): the page must compute a new hash")
        subject = f"u-{claim}" if user_id else f"e-{claim}"
        display = str(claims.get("name") or "").strip()[:100] or email[:100] or claim
        return VisitorSession(subject, display, email or None, True, current + self.ttl)

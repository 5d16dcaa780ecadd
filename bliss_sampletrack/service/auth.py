"""Bearer tokens: creation, storage as a hash, authentication and scopes.

A token reads ``stk_<id>_<secret>``: ``id`` (10 lower-case hex characters) is public, shown by
``token list`` and used by ``token revoke``; ``secret`` is 32 random bytes (URL-safe base64).
Only the SHA-256 of the whole token is stored: with 256 bits of randomness a slow password hash
adds nothing. The presented token's hash is compared with :func:`hmac.compare_digest`, also when
the id is unknown (against a dummy hash), so timing tells nothing about the secret.

Scopes (documented decision):
- a *beamline token* (``token create --beamline B ...``) writes and reads events of its beamlines
  only: a read of another beamline is ``403``; listings and sample histories are narrowed to its
  beamlines (a sample's visits to other beamlines are not shown to it);
- a *read-only token* (``--read-only``) writes nothing (``403``) and reads every beamline, or only
  the beamlines given with ``--beamline``;
- there is no token that writes every beamline.

Tokens never appear in logs, error messages or URLs; ``Principal`` holds only the public id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bliss_sampletrack.service.problems import unauthorized
from bliss_sampletrack.service.storage.base import TokenRecord, now_text

if TYPE_CHECKING:
    from bliss_sampletrack.service.storage import SqlStorage

TOKEN_PREFIX = "stk"
TOKEN_PATTERN = re.compile(r"^stk_([0-9a-f]{10})_([A-Za-z0-9_-]{43})$")
BEAMLINE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_DUMMY_HASH = hashlib.sha256(b"no such token").hexdigest()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh ``(token_id, token)``."""
    token_id = secrets.token_hex(5)
    return token_id, f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's public id and scope (never the token itself)."""

    token_id: str
    beamlines: frozenset[str]  # empty: every beamline (read-only tokens only)
    can_write: bool

    @property
    def read_scope(self) -> tuple[str, ...] | None:
        """The beamlines this token may read, sorted; None for every beamline."""
        return tuple(sorted(self.beamlines)) if self.beamlines else None

    def can_read(self, beamline: str) -> bool:
        return not self.beamlines or beamline in self.beamlines

    def can_write_to(self, beamline: str) -> bool:
        return self.can_write and beamline in self.beamlines

    def describe_scope(self) -> str:
        where = ", ".join(sorted(self.beamlines)) if self.beamlines else "every beamline"
        return f"{'read and write' if self.can_write else 'read only'}: {where}"


def create_token(
    storage: SqlStorage, beamlines: list[str], *, read_only: bool = False, label: str = ""
) -> tuple[TokenRecord, str]:
    """Store a new token; returns its record and the token (to show once, never again)."""
    bad = [b for b in beamlines if not BEAMLINE_PATTERN.fullmatch(b)]
    if bad:
        raise ValueError(
            f"beamline name(s) {bad} do not match the contract's ^[a-z0-9][a-z0-9_.-]{{0,31}}$ (lower case)"
        )
    if not beamlines and not read_only:
        raise ValueError("a token that writes needs at least one --beamline (or use --read-only)")
    token_id, token = new_token()
    record = TokenRecord(
        token_id=token_id,
        token_hash=hash_token(token),
        beamlines=tuple(sorted(set(beamlines))),
        can_write=not read_only,
        label=label,
        created_at=now_text(),
        revoked_at=None,
    )
    storage.add_token(record)
    return record, token


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or raises a ``401``."""

    def __init__(self, storage: SqlStorage) -> None:
        self.storage = storage

    def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise unauthorized("missing bearer token: send the header 'Authorization: Bearer <token>'")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        token = token.strip()
        match = TOKEN_PATTERN.fullmatch(token)
        record = self.storage.get_token(match.group(1)) if match else None
        expected = record.token_hash if record is not None else _DUMMY_HASH
        presented = hash_token(token) if match else hash_token("-")
        valid = hmac.compare_digest(expected, presented)
        if record is None or not valid or record.revoked_at is not None:
            raise unauthorized("invalid or revoked token")
        return Principal(record.token_id, frozenset(record.beamlines), record.can_write)

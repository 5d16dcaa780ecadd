"""Tokens of the tracking service in its database (SQLite and PostgreSQL): stored hashed, refused
when malformed or unknown (the pure units: tests/unit/service/test_service_units.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from bliss_sampletrack.service import auth
from bliss_sampletrack.service.problems import ApiError

pytest_plugins = ["service_fixtures"]


def test_tokens_are_random_and_stored_hashed(storage: Any) -> None:
    record, token = auth.create_token(storage, ["id30", "id23-1", "id30"], label="x")
    assert auth.TOKEN_PATTERN.fullmatch(token)
    assert record.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert record.beamlines == ("id23-1", "id30")
    stored = storage.get_token(record.token_id)
    assert stored.token_hash == record.token_hash
    assert token not in repr(stored)
    principal = auth.Authenticator(storage).authenticate(f"bearer  {token} ")
    assert principal == auth.Principal(record.token_id, frozenset({"id23-1", "id30"}), True)
    assert token not in repr(principal)
    assert len({auth.new_token()[1] for _ in range(100)}) == 100


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Token abc", "Bearer stk_0123456789_short"])
def test_authenticate_refuses(storage: Any, header: str | None) -> None:
    with pytest.raises(ApiError) as error:
        auth.Authenticator(storage).authenticate(header)
    assert error.value.status == 401


def test_create_token_refusals(storage: Any) -> None:
    with pytest.raises(ValueError, match="needs at least one"):
        auth.create_token(storage, [])
    with pytest.raises(ValueError, match="do not match"):
        auth.create_token(storage, ["Bad Name"])
    record, _ = auth.create_token(storage, [], read_only=True)
    assert record.beamlines == () and not record.can_write

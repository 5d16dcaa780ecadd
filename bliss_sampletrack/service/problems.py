"""The service's error answers: ``{"error": {"code", "message", "fields"}}`` with a status code.

Messages say what is wrong and how to fix it; they never hold a token, a token hash or a
database password. ``fields`` maps a field (or parameter) name to its problem, ``{}`` when the
error is not about one field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(eq=False)
class ApiError(Exception):
    status: int
    code: str
    message: str
    fields: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def payload(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message, "fields": dict(self.fields)}}

    def to_json(self) -> str:
        return json.dumps(self.payload(), ensure_ascii=True, separators=(",", ":"))


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="sampletrack"'})


def invalid_request(message: str, fields: Mapping[str, str] | None = None) -> ApiError:
    return ApiError(422, "invalid_request", message, fields or {})


def invalid_event(fields: Mapping[str, str]) -> ApiError:
    count = len(fields)
    return ApiError(
        422, "invalid_event", f"the event breaks the contract ({count} bad field{'s' * (count != 1)})", fields
    )


def forbidden(message: str, fields: Mapping[str, str] | None = None) -> ApiError:
    return ApiError(403, "forbidden", message, fields or {})


def too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)

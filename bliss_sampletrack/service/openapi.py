"""The OpenAPI 3.0 document of the service, served at ``{base}/openapi.json``.

The event schema is the contract's own (``event.schema.json``, JSON Schema 2020-12) converted to
an OpenAPI 3.0 Schema Object: ``"type": [X, "null"]`` becomes ``type: X, nullable: true`` and the
``$schema``/``$id`` keys are dropped. OpenAPI 3.0 rather than 3.1 because more tools (schemathesis
3 and 4 among them) read it without experimental switches.
"""

from __future__ import annotations

import copy
from typing import Any

from bliss_sampletrack import __version__
from bliss_sampletrack.core.contract import event_schema


def to_openapi_schema(schema: Any) -> Any:
    """A JSON Schema 2020-12 fragment as an OpenAPI 3.0 Schema Object (this contract's subset)."""
    if isinstance(schema, list):
        return [to_openapi_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$schema", "$id"):
            continue
        if key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if len(types) != 1:  # pragma: no cover - not in this contract
                raise ValueError(f"cannot express type {value} in OpenAPI 3.0")
            out["type"] = types[0]
            if "null" in value:
                out["nullable"] = True
        elif key in ("properties", "patternProperties"):
            out[key] = {name: to_openapi_schema(sub) for name, sub in value.items()}
        elif isinstance(value, dict | list):
            out[key] = to_openapi_schema(value)
        else:
            out[key] = value
    return out


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def build_document(base_path: str) -> dict[str, Any]:
    event = to_openapi_schema(copy.deepcopy(event_schema()))
    event.pop("title", None)
    common = {
        "401": _error_response("no token, or an invalid or revoked one"),
        "503": _error_response("the database cannot answer now; retry later"),
    }
    beamline = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,31}$"}
    barcode = {"type": "string", "pattern": "^[!-~]([ -~]{0,62}[!-~])?$"}
    timestamp = {"type": "string", "format": "date-time"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Sample tracking service",
            "version": __version__,
            "description": "Reference server of the sample tracking contract, version 1.",
        },
        "servers": [{"url": base_path or "/"}],
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "liveness",
                    "security": [],
                    "responses": {"200": _json("the service runs", "Health")},
                }
            },
            "/events": {
                "post": {
                    "summary": "store one event (idempotent on event_id)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}},
                    },
                    "responses": {
                        "201": _json("stored", "EventEnvelope"),
                        "200": _json("a replay of an identical event: nothing stored", "EventEnvelope"),
                        "403": _error_response("the token may not write this beamline"),
                        "409": _error_response("this event_id is stored with a different body"),
                        "413": _error_response("the body is too large"),
                        "422": _error_response("invalid event; fields names each bad field"),
                        **common,
                    },
                },
                "get": {
                    "summary": "list events, oldest first",
                    "parameters": [
                        {"name": "beamline", "in": "query", "schema": beamline},
                        {"name": "sample", "in": "query", "description": "a barcode", "schema": barcode},
                        {"name": "since", "in": "query", "description": "inclusive", "schema": timestamp},
                        {"name": "until", "in": "query", "description": "exclusive", "schema": timestamp},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json("a page of events", "EventPage"),
                        "403": _error_response("the token may not read this beamline"),
                        "422": _error_response("invalid parameter(s)"),
                        **common,
                    },
                },
            },
            "/events/batch": {
                "post": {
                    "summary": "store up to 1000 events, in order",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}},
                    },
                    "responses": {
                        "200": _json("one result per event, in order", "BatchResults"),
                        "413": _error_response("more than 1000 events, or the body is too large"),
                        "422": _error_response('the body is not {"events": [...]}'),
                        **common,
                    },
                }
            },
            "/beamlines/{beamline}/mounted": {
                "get": {
                    "summary": "the sample mounted now (from the beamline's latest event)",
                    "parameters": [{"name": "beamline", "in": "path", "required": True, "schema": beamline}],
                    "responses": {
                        "200": _json("the mounted event, or null", "Mounted"),
                        "403": _error_response("the token may not read this beamline"),
                        "422": _error_response("not a beamline name"),
                        **common,
                    },
                }
            },
            "/samples/{barcode}/history": {
                "get": {
                    "summary": "every event of one sample, oldest first",
                    "parameters": [{"name": "barcode", "in": "path", "required": True, "schema": barcode}],
                    "responses": {
                        "200": _json("the sample's events", "EventList"),
                        "422": _error_response("not a barcode (a no-read string included)"),
                        **common,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Event": event,
                "EventEnvelope": {
                    "type": "object",
                    "required": ["event"],
                    "properties": {"event": {"$ref": "#/components/schemas/Event"}},
                },
                "EventList": {
                    "type": "object",
                    "required": ["events"],
                    "properties": {
                        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}
                    },
                },
                "EventPage": {
                    "type": "object",
                    "required": ["events", "next_cursor"],
                    "properties": {
                        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
                        "next_cursor": {"type": "string", "nullable": True},
                    },
                },
                "Mounted": {
                    "type": "object",
                    "required": ["mounted"],
                    "properties": {
                        "mounted": {"allOf": [{"$ref": "#/components/schemas/Event"}], "nullable": True}
                    },
                },
                "Batch": {
                    "type": "object",
                    "required": ["events"],
                    "additionalProperties": False,
                    "properties": {
                        "events": {
                            "type": "array",
                            "maxItems": 1000,
                            "items": {"$ref": "#/components/schemas/Event"},
                        }
                    },
                },
                "BatchResults": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {
                        "results": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["event_id", "status", "error"],
                                "properties": {
                                    "event_id": {"type": "string", "nullable": True},
                                    "status": {"type": "integer", "enum": [200, 201, 403, 409, 422]},
                                    "error": {
                                        "allOf": [{"$ref": "#/components/schemas/ErrorBody"}],
                                        "nullable": True,
                                    },
                                },
                            },
                        }
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok"]}},
                },
                "ErrorBody": {
                    "type": "object",
                    "required": ["code", "message", "fields"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}},
                },
            },
        },
    }

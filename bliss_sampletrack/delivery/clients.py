"""Delivery clients: one protocol (base.py), several backends, one table from the YAML's
``type:`` to the backend (:data:`CLIENT_TYPES`).

Backends: ``rest`` (the tracking service's REST contract, rest.py), ``icatplus`` (icatplus.py),
``ispyb`` (ispyb.py), ``none`` (rest.py: no service). Adding one: a module with a class that has
``from_config(node, where)`` and satisfies :class:`~bliss_sampletrack.delivery.base.DeliveryClient`,
plus one line in :data:`CLIENT_TYPES`.

The names of base.py and rest.py are re-exported here: ``from bliss_sampletrack.delivery.clients
import RestClient, Verdict`` keeps working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from bliss_sampletrack.delivery.base import (
    DeliveryClient,
    Result,
    RetryLater,
    Verdict,
    classify_2xx,
    classify_status,
    send_each,
    short,
)
from bliss_sampletrack.delivery.http_answers import MAX_ANSWER
from bliss_sampletrack.delivery.icatplus import IcatPlusClient
from bliss_sampletrack.delivery.ispyb import IspybClient
from bliss_sampletrack.delivery.rest import TOKEN_HIDDEN, NoopClient, RestClient
from bliss_sampletrack.errors import ConfigurationError

__all__ = [
    "CLIENT_TYPES",
    "MAX_ANSWER",
    "TOKEN_HIDDEN",
    "DeliveryClient",
    "IcatPlusClient",
    "IspybClient",
    "NoopClient",
    "RestClient",
    "Result",
    "RetryLater",
    "Verdict",
    "classify_2xx",
    "classify_status",
    "client_from_config",
    "clients_from_config",
    "described_from_config",
    "send_each",
]


class ClientFactory(Protocol):
    def from_config(self, node: Any, where: str) -> DeliveryClient: ...

    def describe_config(self, node: Any) -> str:
        """What ``describe()`` of the built client starts with, from the YAML alone: no secret."""
        ...


#: the YAML's ``type:`` -> the backend
CLIENT_TYPES: dict[str, ClientFactory] = {
    "rest": RestClient,
    "icatplus": IcatPlusClient,
    "ispyb": IspybClient,
    "none": NoopClient,
}


def client_from_config(node: Any, where: str) -> DeliveryClient:
    """Build one client from a YAML mapping (an item of the tracker's ``delivery`` list).

    Anything wrong in the entry raises :class:`ConfigurationError` starting with ``where``.
    """
    types = ", ".join(CLIENT_TYPES)
    if not isinstance(node, Mapping):
        raise ConfigurationError(
            f"{where}: each delivery entry must be a mapping with 'name' and 'type' ({types}), "
            f"got {type(node).__name__} {short(node)}"
        )
    kind = node.get("type")
    name = node.get("name") or kind
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{where}: each delivery entry needs a 'name' (and a 'type')")
    factory = CLIENT_TYPES.get(kind) if isinstance(kind, str) else None
    if factory is None:
        raise ConfigurationError(f"{where}: delivery {name!r}: key 'type' must be {types}, got {short(kind)}")
    return factory.from_config(node, where)


def clients_from_config(cfg: Any) -> list[DeliveryClient]:
    """The clients of a tracker's ``delivery`` list (``cfg``: its ObjectConfig); names unique."""
    entries = cfg.config.get("delivery") or []
    if isinstance(entries, str) or not hasattr(entries, "__iter__"):
        raise cfg.error("delivery", "must be a list of clients (each with 'name' and 'type')")
    where = f"{cfg.name!r} in {cfg.filename}, key 'delivery'"
    clients = [client_from_config(entry, where) for entry in entries]
    names = [c.name for c in clients]
    if len(set(names)) != len(names):
        raise cfg.error("delivery", f"client names must be unique, got {names}")
    return clients


def described_from_config(cfg: Any) -> list[tuple[str, str]]:
    """``(name, description)`` of each client of a tracker's ``delivery`` list, from the YAML alone:
    no client is built and no secret read (``sampletrack status`` is a read, and must work on a
    machine that does not hold the write token). An entry that cannot be described (not a
    mapping, an unknown type) is described as such rather than refused: status reports the rest."""
    entries = cfg.config.get("delivery") or []
    if isinstance(entries, str) or not hasattr(entries, "__iter__"):
        return []
    described = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            described.append((f"#{index}", f"#{index}: not a mapping ({short(entry)})"))
            continue
        kind = entry.get("type")
        name = str(entry.get("name") or kind)
        factory = CLIENT_TYPES.get(kind) if isinstance(kind, str) else None
        if factory is None:
            described.append((name, f"{name}: unknown type {short(kind)}"))
        else:
            described.append((name, factory.describe_config(entry)))
    return described

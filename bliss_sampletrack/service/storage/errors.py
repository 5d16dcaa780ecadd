"""The storage's errors (the tracking service's process; see bliss_sampletrack/errors.py for the
whole tree). May import nothing of the package.

- :class:`StorageError`: a problem the caller reports (bad URL, schema it cannot migrate);
  - :class:`StorageUnavailable`: the database cannot answer now (locked, connection lost): the
    request may be retried (the API answers 503 with ``Retry-After``);
  - :class:`SchemaTooNewError`: the database was migrated by a newer service: upgrade this one.
"""

from __future__ import annotations


class StorageError(Exception):
    """A storage problem the caller should report (bad URL, schema too new, ...)."""


class StorageUnavailable(StorageError):
    """The database cannot answer now (locked, connection lost); the request may be retried."""


class SchemaTooNewError(StorageError):
    """The database was migrated by a newer version of the service."""

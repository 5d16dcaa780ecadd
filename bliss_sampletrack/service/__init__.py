"""The tracking service: the reference server of the sample-tracking contract.

A separate part of the package that imports nothing from BLISS or gevent, and of the plugin
only ``core`` and ``errors`` (import-linter's forbidden contract) (it runs on a server,
not on a beamline control computer). Layout:

- ``api``: the WSGI application (Flask): every endpoint of the contract, errors, access log;
- ``events``: received JSON -> validated, canonical, storable event (the core's contract checks);
- ``params``: query and path parameters; ``problems``: the error answers;
- ``auth``: bearer tokens (hashed), scopes; ``config``: settings from file, environment, flags;
- ``storage``: SQLite (default) and PostgreSQL backends, versioned migrations;
- ``openapi``: the OpenAPI 3.0 document; ``web``: the page (timeline and sample history);
- ``server``: waitress; ``cli``: ``sampletrack-service``; ``devdb``: a throwaway PostgreSQL
  cluster for tests and benchmarks.
"""

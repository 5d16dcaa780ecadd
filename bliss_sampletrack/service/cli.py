"""``sampletrack-service``: run the tracking service and manage its tokens and database.

::

    sampletrack-service serve   [--db URL] [--host H] [--port P] [--base-path /api/v1] [--threads N]
    sampletrack-service migrate [--db URL]
    sampletrack-service token create --beamline B [--beamline B2] [--read-only] [--label TEXT]
    sampletrack-service token list
    sampletrack-service token revoke ID

Every command takes ``--config FILE`` (TOML) and reads ``SAMPLETRACK_SERVICE_*`` variables (see
``config.py``); the command line wins over the environment, which wins over the file.
``serve`` and ``token`` migrate the database first (``serve --no-migrate`` refuses to start on an
old schema instead). ``token create`` prints the token once on stdout, and nothing else there.
Exit codes: 0 done, 1 failed (message on stderr), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from bliss_sampletrack import __version__
from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.service.config import ServiceConfig, load_config
from bliss_sampletrack.service.storage import SqlStorage, StorageError, open_storage, redact_url

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="TOML configuration file")
    common.add_argument(
        "--db",
        metavar="URL",
        help="sqlite:///path/file.db (default sqlite:///./sampletrack.db) or postgresql://...",
    )
    common.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO (default), WARNING or ERROR")

    parser = argparse.ArgumentParser(
        prog="sampletrack-service", description="Tracking service for sample mount/unmount events."
    )
    parser.add_argument("--version", action="version", version=f"bliss-sampletrack {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the HTTP service")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8090; 0 picks a free one)")
    serve.add_argument("--base-path", help="URL prefix of the API (default /api/v1)")
    serve.add_argument("--threads", type=int, help="worker threads (default 8)")
    serve.add_argument("--no-migrate", action="store_true", help="refuse to start on an old schema")

    commands.add_parser("migrate", parents=[common], help="bring the database schema up to date")

    token = commands.add_parser("token", help="create, list and revoke API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_commands.add_parser("create", parents=[common], help="create a token (printed once)")
    create.add_argument(
        "--beamline", action="append", default=[], help="a beamline of the token (repeat for several)"
    )
    create.add_argument(
        "--read-only", action="store_true", help="read only: every beamline, or only the --beamline ones"
    )
    create.add_argument("--label", default="", help="a note, e.g. who or what uses the token")
    listing = token_commands.add_parser("list", parents=[common], help="list tokens (never the tokens)")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    revoke = token_commands.add_parser("revoke", parents=[common], help="revoke a token by its id")
    revoke.add_argument("token_id", metavar="ID", help="the id shown by 'token list'")
    return parser


def _config(args: argparse.Namespace) -> ServiceConfig:
    overrides: dict[str, Any] = {"db": args.db, "log_level": args.log_level}
    for name in ("host", "port", "base_path", "threads"):
        overrides[name] = getattr(args, name, None)
    return load_config(args.config, overrides=overrides)


def _open(config: ServiceConfig, migrate: bool = True) -> SqlStorage:
    storage = open_storage(config.db)
    if migrate:
        applied = storage.migrate()
        if applied:
            log.info("database %s migrated to version %d", storage.describe(), applied[-1])
    return storage


def _serve(config: ServiceConfig, no_migrate: bool) -> int:
    from bliss_sampletrack.service import server
    from bliss_sampletrack.service.api import create_app
    from bliss_sampletrack.service.storage.migrations import require_current

    storage = _open(config, migrate=not no_migrate)
    try:
        require_current(storage)
        app = create_app(storage, config)
        api = app.extensions["sampletrack"]
        api.validator.warm_up()

        def announce(host: str, port: int) -> None:
            # printed whatever the log level: scripts and tests read the port from this line
            print(
                f"sampletrack-service: serving on http://{host}:{port}{config.base_path}/ "
                f"(database {storage.describe()})",
                file=sys.stderr,
                flush=True,
            )

        try:
            server.run(app, config.host, config.port, config.threads, config.max_batch_body_bytes, announce)
        finally:
            api.close()
    finally:
        storage.close()
    return 0


def _token(args: argparse.Namespace, config: ServiceConfig) -> int:
    from bliss_sampletrack.service.auth import create_token

    with _open(config) as storage:
        if args.token_command == "create":
            try:
                record, token = create_token(
                    storage, args.beamline, read_only=args.read_only, label=args.label
                )
            except ValueError as exc:
                print(f"sampletrack-service: {exc}", file=sys.stderr)
                return 2
            scope = ", ".join(record.beamlines) or "every beamline"
            mode = "read and write" if record.can_write else "read only"
            print(
                f"token {record.token_id} created ({mode}: {scope}); it is shown once, store it now",
                file=sys.stderr,
            )
            print(token)
            return 0
        if args.token_command == "list":
            records = storage.list_tokens()
            if args.json:
                for r in records:
                    print(
                        json.dumps(
                            {
                                "id": r.token_id,
                                "beamlines": list(r.beamlines),
                                "can_write": r.can_write,
                                "label": r.label,
                                "created_at": r.created_at,
                                "revoked_at": r.revoked_at,
                            }
                        )
                    )
                return 0
            print(f"{'ID':<10}  {'SCOPE':<10}  {'BEAMLINES':<24}  {'CREATED':<27}  {'REVOKED':<27}  LABEL")
            for r in records:
                scope = "write" if r.can_write else "read-only"
                beamlines = ",".join(r.beamlines) or "*"
                print(
                    f"{r.token_id:<10}  {scope:<10}  {beamlines:<24}  {r.created_at:<27}  "
                    f"{r.revoked_at or '-':<27}  {r.label}"
                )
            return 0
        if storage.revoke_token(args.token_id):
            print(f"token {args.token_id} revoked", file=sys.stderr)
            return 0
        print(
            f"sampletrack-service: no active token with id {args.token_id!r} (see 'token list')",
            file=sys.stderr,
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        config = _config(args)
    except ConfigurationError as exc:
        print(f"sampletrack-service: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "serve":
            return _serve(config, args.no_migrate)
        if args.command == "migrate":
            with open_storage(config.db) as storage:
                applied = storage.migrate()
                version = storage.schema_version()
            done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to do"
            print(f"database {redact_url(config.db)} at schema version {version} ({done})", file=sys.stderr)
            return 0
        return _token(args, config)
    except StorageError as exc:
        print(f"sampletrack-service: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

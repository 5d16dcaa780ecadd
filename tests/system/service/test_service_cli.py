"""``sampletrack-service``: token create/list/revoke, migrate, configuration file and environment."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from service_fixtures import clean_env, make_event, start_process

from bliss_sampletrack.errors import ConfigurationError
from bliss_sampletrack.service.config import ServiceConfig, load_config
from bliss_sampletrack.service.storage import open_storage
from bliss_sampletrack.service.storage.migrations import LATEST_VERSION

pytest_plugins = ["service_fixtures"]

COMMAND = Path(sys.executable).parent / "sampletrack-service"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COMMAND), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(env),
        cwd=cwd,
        check=False,
    )


def test_console_script_is_installed() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "migrate", "token"):
        assert command in result.stdout


def test_migrate(db_url: str) -> None:
    result = run("migrate", "--db", db_url)
    assert result.returncode == 0, result.stderr
    assert f"schema version {LATEST_VERSION}" in result.stderr
    again = run("migrate", "--db", db_url)
    assert "nothing to do" in again.stderr
    with open_storage(db_url) as store:
        assert store.schema_version() == LATEST_VERSION


def test_token_create_list_revoke(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tokens.db'}"
    created = run(
        "token", "create", "--db", db, "--beamline", "id23-1", "--beamline", "id30", "--label", "ctl"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("stk_") and "\n" not in token
    token_id = token.split("_")[1]
    assert f"token {token_id} created (read and write: id23-1, id30)" in created.stderr
    reader = run("token", "create", "--db", db, "--read-only")
    assert reader.returncode == 0
    assert "read only: every beamline" in reader.stderr

    listing = run("token", "list", "--db", db)
    assert listing.returncode == 0
    assert token_id in listing.stdout and "id23-1,id30" in listing.stdout
    assert token.split("_", 2)[2] not in listing.stdout + listing.stderr
    rows = [json.loads(line) for line in run("token", "list", "--db", db, "--json").stdout.splitlines()]
    assert [r["beamlines"] for r in rows] == [["id23-1", "id30"], []]
    assert [r["can_write"] for r in rows] == [True, False]

    assert run("token", "revoke", "--db", db, token_id).returncode == 0
    assert run("token", "revoke", "--db", db, token_id).returncode == 1  # already revoked
    rows = [json.loads(line) for line in run("token", "list", "--db", db, "--json").stdout.splitlines()]
    assert rows[0]["revoked_at"] is not None


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "needs at least one --beamline"),
        (["--beamline", "ID23"], "do not match"),
    ],
)
def test_token_create_refuses(tmp_path: Path, args: list[str], message: str) -> None:
    result = run("token", "create", "--db", f"sqlite:///{tmp_path / 't.db'}", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_bad_database_url(tmp_path: Path) -> None:
    result = run("migrate", "--db", "mysql://x/y")
    assert result.returncode == 1
    assert "unsupported database URL scheme 'mysql'" in result.stderr
    result = run("migrate", "--db", "postgresql://user:s3cret@127.0.0.1:1/none")
    assert result.returncode == 1
    assert "s3cret" not in result.stderr


def test_serve_from_a_config_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "service.toml"
    config.write_text(
        f'[service]\ndb = "sqlite:///{tmp_path / "from-file.db"}"\nport = 0\nbase_path = "/st"\n'
    )
    env = {"SAMPLETRACK_SERVICE_CONFIG": str(config), "SAMPLETRACK_SERVICE_BASE_PATH": "/from-env"}
    token = run("token", "create", "--beamline", "id30", env=env).stdout.strip()
    assert (tmp_path / "from-file.db").exists()
    service = start_process([str(COMMAND), "serve"], tmp_path / "serve.log", env)
    try:
        assert service.base_url.endswith("/from-env")  # the environment wins over the file
        response = requests.post(
            service.url("/events"),
            json=make_event(beamline="id30"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert response.status_code == 201
    finally:
        service.stop()
    assert service.process.returncode == 0


def test_load_config_precedence(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('db = "sqlite:///file.db"\nport = 9000\nthreads = 4\n')
    merged = load_config(config, {"SAMPLETRACK_SERVICE_PORT": "9100"}, {"threads": 2, "host": None})
    assert merged == ServiceConfig(db="sqlite:///file.db", port=9100, threads=2)
    assert load_config(None, {}) == ServiceConfig()


@pytest.mark.parametrize(
    "text,message",
    [
        ("dbb = 1\n", "unknown key(s) ['dbb']"),
        ("port = 'x'\n", "port must be an integer"),
        ("port = 70000\n", "port must be 0..65535"),
        ("base_path = 'a b'\n", "base_path"),
        ("not toml", "not valid TOML"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        load_config(config, {})
    result = run("migrate", "--config", str(config), "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2

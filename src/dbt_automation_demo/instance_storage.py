"""Fail fast, and say why, when the instance database of DAGSTER_HOME cannot be reached.

Dagster retries a PostgreSQL connection for a while before it gives up, so a dev server
started against a stopped or misnamed database looks like a hang. This check runs first.
"""

import os
from pathlib import Path

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

CONNECT_TIMEOUT_SECONDS = 5
# SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; dagster-postgres installs psycopg2.
BARE_SCHEMES = {"postgresql", "postgres"}


def postgres_storage_problem(dagster_home: Path) -> str | None:
    """None when the instance does not use PostgreSQL or its database answers; otherwise the
    problem, naming the file, the setting and the (password-masked) value."""
    config_file = dagster_home / "dagster.yaml"
    if not config_file.exists():
        return None
    config = yaml.safe_load(config_file.read_text()) or {}
    url_setting = (config.get("storage") or {}).get("postgres", {}).get("postgres_url")
    if url_setting is None:
        return None
    variable = url_setting.get("env") if isinstance(url_setting, dict) else None
    url = os.environ.get(variable) if variable else str(url_setting)
    where = f"{config_file}: storage.postgres.postgres_url"
    if not url:
        return f"{where} reads the environment variable {variable}, which is not set"
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        return f"{where} = {variable or 'value'} is not a database URL"
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername in BARE_SCHEMES:
        return (
            f"{where} = {shown}: name the driver, postgresql+psycopg2://... (a bare "
            "postgresql:// needs psycopg 3, which is not installed)"
        )
    return _connection_problem(url, f"{where} = {shown}")


def _connection_problem(url: str, described: str) -> str | None:
    engine = sa.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS})
    try:
        with engine.connect():
            return None
    except sa.exc.DBAPIError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        return f"cannot reach the instance database {described}: {reason}"
    finally:
        engine.dispose()

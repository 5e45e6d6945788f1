"""A real PostgreSQL server on loopback, from Debian's `postgresql` package, for the tests.

Each server is a fresh cluster in a temporary folder (trust authentication, loopback only);
each test gets a database of its own. As root, the server runs as the `postgres` user, since
PostgreSQL refuses to run as root.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from live_server import free_port

START_SECONDS = 60


def postgres_bin_dir() -> Path | None:
    """Debian installs the server programs outside PATH, under a versioned folder."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    """initdb, pg_ctl start/stop, and databases on 127.0.0.1:<free port>."""

    def __init__(self):
        self.bin = postgres_bin_dir()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server programs not found: apt-get install postgresql")
        # Not under pytest's temporary folder: that is private to the user running the tests,
        # and the server may run as another user.
        self.folder = Path(tempfile.mkdtemp(prefix="dbt-automation-demo-postgres-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.user = "postgres"

    def _as_server_user(self, *command: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def _run(self, *command: str) -> None:
        finished = subprocess.run(
            self._as_server_user(*command), cwd=self.folder, capture_output=True, text=True
        )
        if finished.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{finished.stdout}{finished.stderr}")

    def init(self) -> "PostgresServer":
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
        )
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={self.host} -k {self.folder} -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "server.log"),
            "-w",
            "-t",
            str(START_SECONDS),
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        status = subprocess.run(
            self._as_server_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "status"),
            capture_output=True,
        )
        return status.returncode == 0

    def remove(self) -> None:
        """Stop the server if it runs, and delete its folder."""
        if self.is_running():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator["PostgresServer"]:
        """A new server, started; stopped and deleted afterwards."""
        server = cls().init()
        try:
            server.start()
            yield server
        finally:
            server.remove()

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """An outage: the server is down inside the block and running again after it."""
        self.stop()
        try:
            yield
        finally:
            if not self.is_running():
                self.start()

    def url(self, database: str) -> str:
        """As DAGSTER_PG_URL takes it: with the driver dagster-postgres installs (psycopg2)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, template: str | None = None) -> str:
        """A new database: empty, or a copy of `template` (which nobody may be connected to)."""
        name = f"dagster_{uuid.uuid4().hex[:12]}"
        copy_of = f' TEMPLATE "{template}"' if template else ""
        self._admin(f'CREATE DATABASE "{name}"{copy_of}')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        connection = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres"
        )
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        finally:
            connection.close()

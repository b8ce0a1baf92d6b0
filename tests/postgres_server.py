"""A PostgreSQL server for tests, from Debian's `postgresql` package: initialised as the compose service's image
does (superuser and database `airflow`), bound to 127.0.0.1 on a free port with its socket under its own folder,
stopped and removed when the context exits."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def as_postgres(command: list[str], **env: str) -> subprocess.CompletedProcess:
    """Run a command as the `postgres` user when root (Postgres refuses to run as root), else as this user."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, "env", *(f"{key}={value}" for key, value in env.items()), *command],
                          capture_output=True, text=True, timeout=120)


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: str
    port: int
    password: str
    """The password of the superuser `airflow` over TCP (the socket trusts local users)."""

    @property
    def env(self) -> dict[str, str]:
        """libpq's variables that reach the server through its socket."""
        return {"PGHOST": self.socket_dir, "PGPORT": str(self.port)}

    def url(self, user: str, password: str, database: str) -> str:
        return f"postgresql+psycopg2://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def psql(self, database: str, sql: str) -> subprocess.CompletedProcess:
        return as_postgres(["psql", "-v", "ON_ERROR_STOP=1", "-At", "-U", "airflow", "-d", database, "-c", sql],
                           **self.env)


@contextmanager
def postgres_server(password: str) -> Iterator[PostgresServer]:
    """Initialise and start a server whose superuser `airflow` has `password`, with the database `airflow`."""
    assert BIN is not None, "no Postgres server binaries: apt-get install postgresql"
    root = Path(tempfile.mkdtemp(prefix="ct-postgres-"))  # short: the socket path has a length limit
    if os.geteuid() == 0:
        shutil.chown(root, pwd.getpwnam("postgres").pw_uid)
    (root / "pwfile").write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root / "pwfile", pwd.getpwnam("postgres").pw_uid)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = str(root / "data")
    initdb = as_postgres([str(BIN / "initdb"), "-D", data, "-U", "airflow", f"--pwfile={root / 'pwfile'}",
                          "--auth-local=trust", "--auth-host=scram-sha-256"])
    assert initdb.returncode == 0, initdb.stderr
    started = as_postgres([str(BIN / "pg_ctl"), "-D", data, "-w", "-l", str(root / "log"), "-o",
                           f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"])
    assert started.returncode == 0, started.stdout + started.stderr
    server = PostgresServer(str(root), port, password)
    try:
        created = server.psql("postgres", "CREATE DATABASE airflow")
        assert created.returncode == 0, created.stderr
        yield server
    finally:
        as_postgres([str(BIN / "pg_ctl"), "-D", data, "-m", "fast", "stop"])
        shutil.rmtree(root, ignore_errors=True)

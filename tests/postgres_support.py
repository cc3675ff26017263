"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary folder, on a free localhost port.

Why a real server: SQLite in one folder cannot show what a database shared by machines does
(concurrent schema creation, connections, heartbeats kept by the server's clock). When PostgreSQL
is not installed the tests that need it are skipped with the reason; with FASTCLS_REQUIRE_POSTGRES=1
(set by .ci/run, which installs it) they fail instead, so CI cannot skip them unnoticed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The bin folder of the newest installed PostgreSQL (Debian layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _unavailable(reason: str) -> None:
    if os.environ.get("FASTCLS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required here (FASTCLS_REQUIRE_POSTGRES=1) but {reason}")
    pytest.skip(f"needs a local PostgreSQL: {reason}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def postgres_server(database: str = "fastcls") -> Iterator[str]:
    """Start a server, create `database`, yield its SQLAlchemy URL (psycopg v3), stop and delete it.

    initdb refuses to run as root, so as root the server runs as the `postgres` user, in a folder
    that user owns; otherwise as the current user.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        _unavailable("no initdb in /usr/lib/postgresql/*/bin or on PATH (apt-get install postgresql)")
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'fastcls[postgres]')")
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no postgres user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="fastcls-pg-"))
    if prefix:
        shutil.chown(base, "postgres")
    data, log = base / "data", base / "server.log"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)

    started = False
    try:
        made = run(
            str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"
        )
        assert made.returncode == 0, f"initdb failed: {made.stderr}"
        for _ in range(3):  # the port is free when probed; another process may take it before the server does
            port = _free_port()
            options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
            start = run(
                str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"
            )
            if start.returncode == 0:
                started = True
                break
            time.sleep(0.5)
        assert started, f"pg_ctl start failed: {start.stderr}\n{log.read_text() if log.exists() else ''}"
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
    finally:
        if started:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)

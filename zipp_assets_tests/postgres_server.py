"""A throwaway PostgreSQL server for tests: Debian's binaries, its own data folder under a temporary
folder, listening on 127.0.0.1 only, on a free port, with a password (SCRAM) like a real one.

initdb refuses to run as root, so as root the server runs as `nobody`, owning its folder."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN_DIRS = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15, 14, 13)]
USER = "zipp"
DATABASE = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    username: str
    password: str
    db_name: str


def find_bin_dir() -> Path | None:
    """The folder with initdb and pg_ctl (Debian's `postgresql` package), or None."""
    on_path = shutil.which("pg_ctl")
    candidates = [*BIN_DIRS, *([Path(on_path).parent] if on_path else [])]
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.getuid() != 0:
        return command
    return ["runuser", "-u", "nobody", "--", *command]


@contextlib.contextmanager
def running_postgres(bin_dir: Path) -> Iterator[PostgresServer]:
    folder = Path(tempfile.mkdtemp(prefix="zipp-pg-"))  # under /tmp, which `nobody` can reach (pytest's is 0700)
    data, sockets, log = folder / "data", folder / "sockets", folder / "server.log"
    password = secrets.token_hex(16)
    sockets.mkdir()
    (folder / "pw").write_text(password)
    if os.getuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in (folder, sockets, folder / "pw"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    def run(command: list[str]) -> None:
        done = subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            server_log = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(command[:2])} failed: {done.stderr[-2000:]} {server_log}")

    try:
        run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={folder / 'pw'}", "-E", "UTF8",
             "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-sync"])
        port = _free_port()
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={sockets} "
                   "-c fsync=off -c max_connections=100")
        run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"])
        try:
            yield PostgresServer("127.0.0.1", port, USER, password, DATABASE)
        finally:
            run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
    finally:
        shutil.rmtree(folder, ignore_errors=True)

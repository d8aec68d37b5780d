"""Start and stop a throwaway PostgreSQL cluster for the test suite.

Standard library only.  Usage::

    cluster = PgCluster()
    cluster.start()          # initdb + pg_ctl start on a free port of 127.0.0.1
    cluster.url              # postgresql://durapipe@127.0.0.1:PORT/postgres
    cluster.restart()        # e.g. to test reconnection mid-run
    cluster.stop()           # immediate stop, then the temp directory is removed

or as a context manager (``with PgCluster() as cluster: ...``).

Developers can run ``python tests/pgcluster.py`` to get a cluster that lives
until Ctrl-C / SIGTERM.

The server binaries are looked up by :func:`find_pg_bin` (env
``DURAPIPE_PG_BIN``, then ``initdb`` on PATH, then the newest
``/usr/lib/postgresql/*/bin``).  ``initdb`` refuses to run as root, so when
running as root the server runs as the ``postgres`` user (or a system user
``durapipe-pg`` created on demand) through ``runuser``.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["PgCluster", "find_pg_bin"]

PG_BIN_ENV = "DURAPIPE_PG_BIN"
SUPERUSER = "durapipe"
DBNAME = "postgres"
HOST = "127.0.0.1"
FALLBACK_OS_USER = "durapipe-pg"

_START_TIMEOUT = 60  # seconds, passed to pg_ctl -t
_PORT_ATTEMPTS = 5  # a port picked as free can be taken before the server binds it


def _has_tools(folder: Path) -> bool:
    return all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl"))


def _version_key(path: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin -> numeric version, e.g. "15" or "9.6"
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_pg_bin() -> Path | None:
    """Return the folder holding ``initdb`` and ``pg_ctl``, or None if not found."""
    env = os.environ.get(PG_BIN_ENV)
    if env:
        folder = Path(env).expanduser()
        return folder if _has_tools(folder) else None

    initdb = shutil.which("initdb")
    if initdb:
        for folder in (Path(initdb).parent, Path(initdb).resolve().parent):
            if _has_tools(folder):
                return folder

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_tools(p)]
    if candidates:
        return max(candidates, key=_version_key)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _one_line(text: str, limit: int = 1500) -> str:
    line = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else "..." + line[-limit:]


def _traversable_by_everyone(path: Path) -> bool:
    """True if every directory from / down to ``path`` has the o+x bit."""
    path = path.resolve()
    for folder in (path, *path.parents):
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _ensure_os_user() -> pwd.struct_passwd:
    """The unprivileged OS user the server runs as when we are root."""
    for name in ("postgres", FALLBACK_OS_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    proc = subprocess.run(
        [useradd, "--system", "--no-create-home", "--user-group", FALLBACK_OS_USER],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    try:  # may also exist now because a parallel test worker created it
        return pwd.getpwnam(FALLBACK_OS_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root and no 'postgres' user exists; could not create system "
            f"user {FALLBACK_OS_USER!r}: {_one_line(proc.stderr or proc.stdout)}"
        ) from None


class PgCluster:
    """A throwaway PostgreSQL cluster in a temporary directory.

    Attributes (valid after :meth:`start`): ``url``, ``host``, ``port``,
    ``user`` (database superuser), ``dbname``, ``bin_dir``, ``base_dir``,
    ``data_dir``, ``socket_dir``, ``log_path``.
    """

    def __init__(
        self,
        bin_dir: str | os.PathLike[str] | None = None,
        *,
        durable: bool = False,
        max_connections: int = 200,
    ) -> None:
        self.bin_dir: Path | None = Path(bin_dir) if bin_dir else None
        self.durable = durable  # benchmarks run with the server's default fsync=on
        self.max_connections = max_connections
        self.host = HOST
        self.user = SUPERUSER
        self.dbname = DBNAME
        self.port: int | None = None
        self.url: str | None = None
        self.base_dir: Path | None = None
        self.data_dir: Path | None = None
        self.socket_dir: Path | None = None
        self.log_path: Path | None = None
        self._run_as: pwd.struct_passwd | None = None
        self._atexit_registered = False

    # ------------------------------------------------------------------ public

    def start(self) -> str:
        """Create and start the cluster; return its URL.  Raises RuntimeError."""
        if self.url is not None:
            raise RuntimeError("PgCluster.start() called twice; call stop() first")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self.url  # type: ignore[return-value]

    def restart(self, mode: str = "fast") -> None:
        """Restart the server on the same port and wait until it accepts connections.

        ``mode`` is pg_ctl's shutdown mode: "smart", "fast" or "immediate"
        ("immediate" behaves like a crash: the server runs recovery on start).
        """
        if self.url is None or self.data_dir is None:
            raise RuntimeError("PgCluster.restart() called on a cluster that is not started")
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        proc = self._pg_ctl(["-m", mode, "restart", "-o", self._server_options()])
        if proc.returncode != 0 or not self._accepts_connections():
            raise RuntimeError(self._failure("pg_ctl restart failed", proc))

    def stop(self) -> None:
        """Stop the server (immediate mode) and remove the temp directory.

        Safe to call more than once and after a failed/partial start().
        """
        data_dir, base_dir = self.data_dir, self.base_dir
        if data_dir is not None and (data_dir / "postmaster.pid").exists():
            try:
                self._pg_ctl(["-m", "immediate", "stop"], wait_opts=False)
            except Exception:  # noqa: BLE001 - best effort, fall through to cleanup
                pass
            self._kill_leftover_postmaster(data_dir)
        if base_dir is not None:
            shutil.rmtree(base_dir, ignore_errors=True)
        self.url = None
        self.port = None
        self.base_dir = self.data_dir = self.socket_dir = self.log_path = None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server log ('' if there is none)."""
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.url is not None and self._accepts_connections(timeout=0.0)

    def __enter__(self) -> PgCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PgCluster(url={self.url!r}, data_dir={str(self.data_dir)!r})"

    # ---------------------------------------------------------------- internal

    def _start(self) -> None:
        if self.bin_dir is None:
            self.bin_dir = find_pg_bin()
        if self.bin_dir is None or not _has_tools(self.bin_dir):
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, pg_ctl) not found: install PostgreSQL "
                f"(Debian: apt-get install postgresql) or set {PG_BIN_ENV} to its bin folder"
            )

        if os.geteuid() == 0:
            self._run_as = _ensure_os_user()

        parent = None
        if self._run_as is not None and not _traversable_by_everyone(Path(tempfile.gettempdir())):
            parent = "/tmp"  # TMPDIR is not reachable by the unprivileged server user
        self.base_dir = Path(tempfile.mkdtemp(prefix="durapipe-pg-", dir=parent))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self.socket_dir.mkdir()
        if self._run_as is not None:
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        if not self._atexit_registered:  # never leave a server behind
            atexit.register(self.stop)
            self._atexit_registered = True

        initdb = self._run(
            [
                str(self.bin_dir / "initdb"),
                "-A", "trust",
                "-U", self.user,
                "--no-sync",
                "-E", "UTF8",
                "--locale=C",
                "-D", str(self.data_dir),
            ]
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(
                f"initdb failed (exit {initdb.returncode}): "
                f"{_one_line(initdb.stderr + initdb.stdout)}"
            )

        for attempt in range(_PORT_ATTEMPTS):
            self.port = _free_port()
            proc = self._pg_ctl(["start", "-o", self._server_options()])
            if proc.returncode == 0 and self._accepts_connections():
                break
            port_taken = "already in use" in self.log_tail(50)
            if not port_taken or attempt == _PORT_ATTEMPTS - 1:
                raise RuntimeError(self._failure("PostgreSQL failed to start", proc))
            self._pg_ctl(["-m", "immediate", "stop"], wait_opts=False)
        self.url = f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def _server_options(self) -> str:
        # fsync=off: this is a throwaway test cluster, durability across an OS
        # crash does not matter and it makes the tests much faster.
        fsync = "on" if self.durable else "off"
        return (
            f"-p {self.port} -k {shlex.quote(str(self.socket_dir))} "
            f"-c listen_addresses={self.host} -c fsync={fsync} -c max_connections={self.max_connections}"
        )

    def _pg_ctl(self, args: list[str], wait_opts: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.bin_dir is not None and self.data_dir is not None
        cmd = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir)]
        if wait_opts:
            cmd += ["-l", str(self.log_path), "-w", "-t", str(_START_TIMEOUT)]
        return self._run(cmd + args)

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        user: int | None = None
        group: int | None = None
        extra_groups: list[int] | None = None
        if self._run_as is not None:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            if os.access(runuser, os.X_OK):
                cmd = [runuser, "-u", self._run_as.pw_name, "--", *cmd]
            else:  # no util-linux runuser: let subprocess drop privileges itself
                user, group, extra_groups = self._run_as.pw_uid, self._run_as.pw_gid, []
            env["HOME"] = str(self.base_dir or "/")
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            cwd=str(self.base_dir or "/"),
            timeout=_START_TIMEOUT + 30,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )

    def _accepts_connections(self, timeout: float = 10.0) -> bool:
        """pg_ctl -w already waits for 'ready'; double-check the TCP port answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.05)

    def _kill_leftover_postmaster(self, data_dir: Path) -> None:
        """If pg_ctl could not stop it, SIGKILL the postmaster (children then exit)."""
        pid_file = data_dir / "postmaster.pid"
        deadline = time.monotonic() + 10
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().split("\n", 1)[0])
                os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
            time.sleep(0.1)

    def _failure(self, what: str, proc: subprocess.CompletedProcess[str]) -> str:
        tail = _one_line(self.log_tail(15)) or "(empty)"
        output = _one_line(proc.stderr + proc.stdout, limit=500)
        return (
            f"{what} (pg_ctl exit {proc.returncode}, port {self.port}, "
            f"data {self.data_dir}): {output} -- server log tail: {tail}"
        )


def _main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run a throwaway PostgreSQL until SIGTERM.")
    parser.add_argument("--max-connections", type=int, default=200)
    parser.add_argument(
        "--durable", action="store_true", help="fsync on, as benchmarks need (tests run without)"
    )
    args = parser.parse_args()
    cluster = PgCluster(max_connections=args.max_connections, durable=args.durable)

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: SIGINT may be inherited as ignored (e.g. started with `&`).
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    try:
        try:
            url = cluster.start()
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(url, flush=True)
        print(
            f"(data in {cluster.data_dir}; Ctrl-C or SIGTERM stops it)", file=sys.stderr, flush=True
        )
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # do not interrupt the cleanup
        cluster.stop()


if __name__ == "__main__":
    sys.exit(_main())

"""A throwaway PostgreSQL server for the tests and benchmarks of shared studies.

Debian's `postgresql` package (`make postgres` installs it when missing) gives `initdb` and
`pg_ctl` in /usr/lib/postgresql/VERSION/bin; the server's data live in a temporary folder,
it listens on a free port of 127.0.0.1 only, trusts local connections, and is removed at
the end. PostgreSQL refuses to run as root, so as root it runs as the `postgres` user the
package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dlmine.backend.launch import free_port

USER = "dlmine"
DATABASE = "studies"


class NoPostgres(RuntimeError):
    """PostgreSQL's server programs are not installed."""


def server_program(name: str) -> str:
    """The path of a PostgreSQL server program (`initdb`, `pg_ctl`, `createdb`).

    Raises:
        NoPostgres: the package is not installed.
    """
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        raise NoPostgres(f"PostgreSQL's {name} is not installed; `make postgres` installs "
                         "Debian's postgresql package (apt-get install postgresql)")
    return found[-1]


@contextmanager
def throwaway_server() -> Iterator[str]:
    """Start a PostgreSQL server with an empty database; yields its URL for `--storage`."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="dlmine-postgres-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_postgres, *command], capture_output=True, text=True, cwd=folder)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): "
                               f"{done.stderr or done.stdout}")

    try:
        run(server_program("initdb"), "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8",
            "--no-sync")
        run(server_program("pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
            "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off", "start")
        try:
            run(server_program("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER,
                DATABASE)
            yield f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}"
        finally:
            run(server_program("pg_ctl"), "-D", str(data), "-w", "-m", "immediate", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

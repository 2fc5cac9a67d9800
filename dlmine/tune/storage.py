"""Where a study lives: `STUDY_DIR/study.db` (SQLite), or a database that several workers share.

Any URL that Optuna's `RDBStorage` takes works with `--storage`: `sqlite:///path/study.db` on
one machine, `postgresql://user@host/db` (SQLAlchemy's driver for it, psycopg 3: `pip install
'dlmine[postgres]'`) or
`mysql+pymysql://user@host/db` across machines. The storage records a heartbeat of every
running trial (Optuna's heartbeat thread); a trial whose heartbeat stops for
`heartbeat_timeout` seconds (its worker was killed, its host died) is failed by the next
worker that looks (`optuna.storages.fail_stale_trials`), which then calls `on_stale`.
A storage password is never written: `study.json` and each `run.json` keep the URL masked.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dlmine.errors import DlmineError, UsageError

if TYPE_CHECKING:
    import optuna

STUDY_DB = "study.db"


def heartbeat_interval(timeout: int) -> int:
    """How often a running trial records that it is alive: 4 chances before `timeout`."""
    return max(1, timeout // 4)


def open_storage(url: str, heartbeat_timeout: int,
                 on_stale: Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
                 ) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage of `url`, with a heartbeat per running trial.

    Raises:
        DlmineError: the database cannot be reached, or its driver is not installed.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    # SQLite shared by several processes: wait for the other's write instead of failing.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, grace_period=heartbeat_timeout,
                    heartbeat_interval=heartbeat_interval(heartbeat_timeout),
                    heartbeat_stale_trial_callback=on_stale)
        except ImportError:  # Optuna's wording names no module
            raise DlmineError(_missing_driver(url)) from None
        except SQLAlchemyError as exc:  # e.g. two processes creating the tables at once
            error = exc
            time.sleep(1 + attempt)
    raise DlmineError(f"cannot open the study storage {recorded_url(url)}: "
                      f"{str(error).splitlines()[0]}")


def _missing_driver(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    driver = parsed.get_driver_name()
    how = ("pip install 'dlmine[postgres]'" if driver == "psycopg" else
           f"install the Python package of SQLAlchemy's {driver!r} driver")
    return (f"--storage {recorded_url(url)} needs the {parsed.get_backend_name()} driver "
            f"{driver!r}, which is not installed: {how}")


def recorded_url(url: str) -> str:
    """The storage URL as `study.json` keeps it: with its password, if any, masked.

    Raises:
        UsageError: `url` is not a database URL.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError("--storage: expected a database URL such as sqlite:///path/study.db "
                         f"or postgresql://host/db, received '{url}'") from None
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def storage_url(recorded: str | None, given: str | None, folder: Path) -> str:
    """The study's database: `study.db` in the folder, or the URL `study.json` records, whose
    password, if any, must be given again with `--storage`.

    Raises:
        UsageError: `given` moves a private study, names another database, or is missing
            the password.
    """
    if recorded is None:
        if given:
            raise UsageError(f"the study of {folder} lives in {folder / STUDY_DB}; --storage "
                             "cannot move it")
        return f"sqlite:///{(folder / STUDY_DB).resolve()}"
    if given is None and "***" in recorded:
        raise UsageError("the study's storage URL holds a password, which dlmine does not save; "
                         f"give it again: dlmine tune --resume {folder} --storage URL")
    if given is not None and recorded_url(given) != recorded:
        raise UsageError(f"--storage: expected the study's storage {recorded}, received "
                         f"{recorded_url(given)}")
    return given or recorded


def masked(argv: list[str], url: str | None) -> list[str]:
    """The command line as `study.json` and each `run.json` record it: no storage password."""
    if not url:
        return list(argv)
    return [arg.replace(url, recorded_url(url)) for arg in argv]

"""Where studies are kept: a journal file per study on one machine, or PostgreSQL across machines.

The URL comes from the `storage` parameter or DIGITS_STORAGE and is written down with its
password masked; a password never goes into a notebook's parameters (papermill records them).
PostgreSQL gets Optuna's heartbeat and a bounded retry of a silent machine's trials, and an
outage (a restart, a network blip) is waited out for up to OUTAGE_S.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Callable

import optuna
from sqlalchemy.exc import OperationalError

from . import paths

STORAGE_ENV = "DIGITS_STORAGE"
HEARTBEAT_S = int(os.environ.get("DIGITS_HEARTBEAT_S", "5"))     # a loop beats for its trials this often
GRACE_S = int(os.environ.get("DIGITS_GRACE_S", "30"))            # silent this long = dead
MAX_ATTEMPTS = 3        # runs of one task that may fail before it is recorded as failed
CONNECT_TIMEOUT_S = 5   # an unreachable database fails within this
LOCK_GRACE_S = 5        # a journal lock file untouched this long was left by a dead process (Optuna: 30)
OUTAGE_S = 60           # PostgreSQL: how long a lost database is waited for (a restart takes seconds)
# What Optuna's RDBStorage raises while its database is down: a connection that fails at a query
# (StorageInternalError) or when it is opened (SQLAlchemy's OperationalError).
LOST = (optuna.exceptions.StorageInternalError, OperationalError)


class StorageError(RuntimeError):
    """The study storage cannot be used: unreachable, refused, or a URL that would leak a secret."""


class Outage:
    """Rides out a database that goes away for a while (a restart, a network blip): `lost()` when a
    storage call failed, `back()` when one succeeded; `lost()` re-raises once the outage passes
    OUTAGE_S. Finished trials are in the database already, so waiting loses nothing."""

    def __init__(self, log: Callable[[str], None]):
        self.since, self.log = None, log

    def lost(self, error: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.log(f"the study database is unreachable; trying again for up to {OUTAGE_S} s")
        if time.monotonic() - self.since > OUTAGE_S:
            raise error
        time.sleep(1)

    def back(self) -> None:
        if self.since is not None:
            self.log(f"the study database is back after {time.monotonic() - self.since:.0f} s")
            self.since = None


def patiently(outage: Outage, fn: Callable, *args, **kwargs):
    """`fn(*args, **kwargs)`, called again while the database is unreachable (see Outage)."""
    while True:
        try:
            result = fn(*args, **kwargs)
        except LOST as e:
            outage.lost(e)
            continue
        outage.back()
        return result


def connect(url: str | None, study_name: str, outage: Outage):
    """(storage, study) of a study that exists: a failure here is an outage, waited out."""
    while True:
        try:
            storage = open_storage(url, study_name)
            study = optuna.load_study(study_name=study_name, storage=storage)
        except (StorageError, *LOST) as e:
            outage.lost(e)
            continue
        outage.back()
        return storage, study


def _url(url: str):
    from sqlalchemy.engine import make_url

    try:
        return make_url(url)
    except Exception:  # never echo an unparseable URL: it may hold a password
        raise StorageError("storage: not a database URL (expected postgresql://user@host[:port]/database)") from None


def masked(url: str | None) -> str:
    """The URL as it may be written down: the password replaced by ***."""
    return _url(url).render_as_string(hide_password=True) if url else ""


def storage_url(parameter: str | None = None) -> str | None:
    """The notebook's `storage` parameter, else DIGITS_STORAGE; None means the journal file.

    A password in the parameter is refused: papermill writes parameters into the executed notebook.
    """
    if parameter and _url(parameter).password is not None:
        raise StorageError(f"parameter 'storage': {masked(parameter)} carries a password, which the executed "
                           f"notebook would record; give the URL without it and the password in PGPASSWORD "
                           f"or ~/.pgpass, or the whole URL in {STORAGE_ENV}")
    return parameter or os.environ.get(STORAGE_ENV) or None


def journal_path(study_name: str) -> Path:
    return paths.data_dir() / "studies" / f"{study_name}.journal"


def open_storage(url: str | None, study_name: str):
    """The journal file of `study_name` (url None), or PostgreSQL with heartbeat and bounded retries."""
    if not url:
        path = journal_path(study_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = optuna.storages.journal.JournalFileOpenLock(str(path), grace_period=LOCK_GRACE_S)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path), lock_obj=lock))
    parsed = _url(url)
    if parsed.get_backend_name() != "postgresql":
        raise StorageError(f"storage {masked(url)}: only PostgreSQL spans machines (SQLite is not safe for "
                           "parallel workers); leave it empty for the local journal file")
    if parsed.drivername == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; psycopg2 is pinned
        parsed = parsed.set(drivername="postgresql+psycopg2")
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(
                parsed.render_as_string(hide_password=False),
                # pre-ping: after a database restart, pooled connections are dead; replace them
                engine_kwargs={"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True},
                heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_ATTEMPTS - 1))  # MAX_ATTEMPTS runs: the first and the retries
        except Exception as e:
            from sqlalchemy.exc import IntegrityError, ProgrammingError

            if isinstance(e, (IntegrityError, ProgrammingError)) and attempt < 2:
                time.sleep(0.5)  # another process was making the tables of this new database
                continue
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            if parsed.password:
                reason = reason.replace(parsed.password, "***")
            raise StorageError(f"cannot use the study database {parsed.database!r} on {parsed.host or 'localhost'}:"
                               f"{parsed.port or 5432} as {parsed.username or 'the default user'}: {reason}") from None


def is_rdb(storage) -> bool:
    return isinstance(storage, optuna.storages.RDBStorage)


@contextlib.contextmanager
def sole_coordinator(study_name: str):
    """Journal studies: refuse a second notebook while one lives (it would fail the first's trials).

    The claim is an exclusive `flock` on the study's .coordinator file, which the kernel releases
    when its holder dies, however it dies; the file names the holder's pid, for the message.
    """
    path = journal_path(study_name).with_suffix(".coordinator")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            fh.close()
            raise RuntimeError(f"study {study_name} is being run by process {owner} on this machine; "
                               "wait for it to finish or stop it first") from None
        with contextlib.suppress(FileNotFoundError):  # a holder that was leaving unlinked what we locked
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        fh.close()
    fh.truncate(0)
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a newcomer opens a new file
        fh.close()

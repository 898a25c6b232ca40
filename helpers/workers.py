"""Running a study's trials: an Optuna queue, worker processes, and the coordinator that watches them.

A trial is one training run, a *task* such as {"lr": 0.1, "batch_size": 64, "seed": 0, "epochs":
20, "fraction": 1.0}; `stacked.train_tasks` says what it trains, `helpers.studies` what a study is.

- Queue, don't sample: the coordinator (a notebook) enqueues every task once, up front
  (`Study.enqueue_trial`). Workers only take queued trials, each moved from WAITING to RUNNING
  by the storage for exactly one caller, so no task is trained twice. A worker takes several
  tasks that can share a stacked model (`stacked.stack_key`) and reports each trial on its own.
- Storage: a journal file under data/studies/ on one machine (one coordinator at a time); a
  PostgreSQL URL across machines, with Optuna's heartbeat (a worker beats for the trials it
  holds) and `RetryHeartbeatStaleTrialCallback`, which queues a silent worker's task again.
- The coordinator owns its worker processes. When one dies (SIGKILL, OOM, segfault) its tasks
  fail with the signal named and are queued again, and a replacement starts while tasks wait;
  a task that failed MAX_ATTEMPTS times, over every run of the study, stays failed. A worker
  that raises is a bug: the notebook stops with its last lines. Interrupted, it stops its workers.
- The storage URL comes from the `storage` parameter or DIGITS_STORAGE, reaches workers through
  their environment (never argv, which `ps` shows), and is written down with its password
  masked. Passwords belong in DIGITS_STORAGE, PGPASSWORD or ~/.pgpass (libpq reads both).

    python -m helpers.workers --notebook 06_grid_search [--workers 2]    # join from another machine
"""
from __future__ import annotations

import argparse
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import OperationalError

from . import paths, stacked

STORAGE_ENV = "DIGITS_STORAGE"
HEARTBEAT_S = int(os.environ.get("DIGITS_HEARTBEAT_S", "5"))     # PostgreSQL workers beat this often
GRACE_S = int(os.environ.get("DIGITS_GRACE_S", "30"))            # silent this long = dead
MAX_ATTEMPTS = 3        # runs of one task that may fail before it is recorded as failed
CONNECT_TIMEOUT_S = 5   # an unreachable database fails within this
LOCK_GRACE_S = 5        # a journal lock file untouched this long was left by a dead process (Optuna: 30)
ORPHAN_S = 2.0          # a claimed trial that no worker has signed after this long was a dead one's
POLL_S = 0.5
OUTAGE_S = 60           # PostgreSQL: how long a lost database is waited for (a restart takes seconds)
# What Optuna's RDBStorage raises while its database is down: a connection that fails at a query
# (StorageInternalError) or when it is opened (SQLAlchemy's OperationalError).
LOST = (optuna.exceptions.StorageInternalError, OperationalError)

# Workers print a line per finished stack; Optuna's own INFO lines would repeat each trial.
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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


def connect(url: str | None, study_name: str, outage: Outage):
    """(storage, study) for a worker of a study its coordinator has just reached: a failure here is
    an outage (a restarting database), waited out like any other."""
    while True:
        try:
            storage = open_storage(url, study_name)
            study = optuna.load_study(study_name=study_name, storage=storage)
        except (StorageError, *LOST) as e:
            outage.lost(e)
            continue
        outage.back()
        return storage, study


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


# ---------------------------------------------------------------------------------------- storage

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


# ------------------------------------------------------------------------------------ the queue

def task_of(trial: FrozenTrial) -> dict | None:
    """The task a trial holds, recorded when it was queued (None: not a trial this engine made)."""
    return trial.user_attrs.get("task")


def task_key(task: dict) -> tuple:
    return tuple(sorted(task.items()))


def describe(task: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in task.items())


def failures(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Failed runs that count against a task: not the ones stopped by an interrupted notebook."""
    return [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("interrupted")]


def holder(trial: FrozenTrial) -> str | None:
    """The worker that signed its claim on `trial`. A heartbeat retry starts with a copy of the
    stale trial's user attrs, the dead worker's signature too, which names another trial."""
    return trial.user_attrs.get("worker") if trial.user_attrs.get("signed") == trial.number else None


def attempt(trial: FrozenTrial) -> int:
    """Which run of its task a trial is. `enqueue` records it; Optuna's heartbeat retry copies the
    stale trial's user attrs (its `attempt` too) and records the trials it replaced instead."""
    return trial.user_attrs.get("attempt", 1) + len(
        optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial))


def enqueue(study: optuna.Study, tasks: list[dict]) -> dict[str, list]:
    """Queue each task that has no finished, queued or running trial; return the tasks by state.

    A task whose runs failed MAX_ATTEMPTS times is not queued again: it is `failed`.
    """
    trials: dict[tuple, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False):
        if task_of(t) is not None:
            trials.setdefault(task_key(task_of(t)), []).append(t)
    state: dict[str, list] = {"done": [], "pending": [], "queued": [], "failed": []}
    for task in tasks:
        have = trials.get(task_key(task), [])
        states = {t.state for t in have}
        if TrialState.COMPLETE in states:
            state["done"].append(task)
        elif states & {TrialState.WAITING, TrialState.RUNNING}:
            state["pending"].append(task)
        elif len(failures(have)) >= MAX_ATTEMPTS:
            state["failed"].append(task)
        else:
            # skip_if_exists guards a first queueing against a second coordinator; a retry must be
            # queued although failed trials of the task exist
            study.enqueue_trial(task, user_attrs={"task": task, "attempt": len(failures(have)) + 1},
                                skip_if_exists=not have)
            state["queued"].append(task)
    return state


def claim(study: optuna.Study, storage, token: str, limit: int) -> list[tuple[FrozenTrial, int]]:
    """Take up to `limit` waiting trials that can train as one stack: [(trial, trial_id)].

    The first waiting trial decides the stack, one seed's trials first (they share batches); a
    retry (attempt > 1) is taken alone, so a task that kills its worker cannot take others with it.
    `Study.ask` takes a waiting trial the same way (WAITING -> RUNNING succeeds for one caller
    only) but opens a fresh sampled trial when the queue is empty and cannot choose which ones.
    """
    waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if task_of(t)]
    if not waiting:
        return []
    first = waiting[0]
    group = [first] if attempt(first) > 1 else sorted(
        (t for t in waiting if attempt(t) == 1
         and stacked.stack_key(task_of(t)) == stacked.stack_key(task_of(first))),
        key=lambda t: (task_of(t).get("seed") != task_of(first).get("seed"), t.number))
    study_id = storage.get_study_id_from_name(study.study_name)
    taken = []
    for t in group:
        tid = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            if not storage.set_trial_state_values(tid, TrialState.RUNNING):
                continue  # another worker was first
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if is_rdb(storage):  # beat before signing: a signed trial can always go stale
            storage.record_heartbeat(tid)
        storage.set_trial_user_attr(tid, "worker", token)
        storage.set_trial_user_attr(tid, "history", [])  # a retry inherits its predecessor's
        storage.set_trial_user_attr(tid, "signed", t.number)  # last: the claim is whole
        taken.append((t, tid))
        if len(taken) == limit:
            break
    return taken


@contextlib.contextmanager
def heartbeat(storage, trial_ids: list[int]):
    """PostgreSQL: record a heartbeat for the held trials every HEARTBEAT_S, in a thread."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            for tid in trial_ids:
                with contextlib.suppress(Exception):  # a lost connection: the next beat tries again
                    storage.record_heartbeat(tid)

    thread = threading.Thread(target=beat, daemon=True)
    if is_rdb(storage):
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()


def work(study_name: str, url: str | None, prepared, *, exit_when_idle: bool = False,
         log: Callable[[str], None] = print) -> int:
    """Train queued tasks until none is left; returns how many this worker trained.

    `exit_when_idle`: leave as soon as nothing is queued (a coordinator's worker: the coordinator
    starts another if a task comes back); otherwise wait while others hold tasks, which come back
    here if their worker goes silent (PostgreSQL heartbeat).
    """
    outage = Outage(log)
    storage, study = connect(url, study_name, outage)
    fixed = study.user_attrs["spec"]["fixed"]
    token = f"{socket.gethostname()}:{os.getpid()}"
    n_workers = max(1, int(os.environ.get("DIGITS_WORKERS", "1")))
    trained = 0
    while True:
        try:
            if is_rdb(storage):
                optuna.storages.fail_stale_trials(study)
            waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            # share the queue's tail between the workers rather than stacking all of it here
            taken = claim(study, storage, token, max(1, min(stacked.MAX_STACK, -(-len(waiting) // n_workers))))
            if not taken:
                if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                    continue  # another worker took that stack first: try the next
                if exit_when_idle or not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    return trained
                time.sleep(POLL_S)
                continue
        except LOST as e:  # a claim cut short is found unsigned (or stale) and queued again
            outage.lost(e)
            continue
        outage.back()
        tasks = [task_of(t) for t, _ in taken]
        histories: list[list[dict]] = [[] for _ in taken]

        def on_epoch(epoch: int, rows: list[dict]) -> None:
            for (_, tid), history, row in zip(taken, histories, rows):
                history.append(row)
                patiently(outage, storage.set_trial_user_attr, tid, "history", history)
                patiently(outage, storage.set_trial_intermediate_value, tid, epoch, row["val_acc"])

        start = time.perf_counter()
        with heartbeat(storage, [tid for _, tid in taken]):
            results = stacked.train_tasks(prepared, fixed, tasks, on_epoch=on_epoch)
        for (t, tid), history in zip(taken, results):
            if history[-1].get("diverged"):
                patiently(outage, storage.set_trial_user_attr, tid, "diverged", history[-1]["diverged"])
            patiently(outage, study.tell, t.number, history[-1]["val_acc"])
        trained += len(taken)
        log(f"trained {len(taken)} task(s) in {time.perf_counter() - start:.1f} s: "
            + "; ".join(f"{describe(task)} -> {h[-1]['val_acc']:.4f}" for task, h in zip(tasks, results)))


# ----------------------------------------------------------------------------------- coordinator

class _Worker:
    """One local worker process, and a thread forwarding its output lines."""

    def __init__(self, number: int, study_name: str, url: str | None, n: int, lines: "queue.Queue[str]"):
        env = {k: v for k, v in os.environ.items() if k != STORAGE_ENV}
        env.update(PYTHONUNBUFFERED="1", DIGITS_PARENT_PID=str(os.getpid()), DIGITS_WORKERS=str(n))
        if url:
            env[STORAGE_ENV] = url
        self.number, self.tail = number, []
        self.proc = subprocess.Popen([sys.executable, "-m", "helpers.workers", "--study", study_name,
                                      "--threads", "1", "--exit-when-idle"], cwd=paths.ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.token = f"{socket.gethostname()}:{self.proc.pid}"
        threading.Thread(target=self._read, args=(lines,), daemon=True).start()

    def _read(self, lines: "queue.Queue[str]") -> None:
        for line in self.proc.stdout:
            self.tail = (self.tail + [line.rstrip()])[-20:]
            lines.put(f"[worker {self.number}] {line.rstrip()}")

    def why(self) -> str:
        code = self.proc.returncode
        if code >= 0:
            return f"exited with status {code}"
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"


def _fail(study: optuna.Study, storage, trial: FrozenTrial, message: str, interrupted: bool = False) -> None:
    """Record why `trial` stopped and mark it failed (unless it finished meanwhile)."""
    tid = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                          trial.number)
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
        storage.set_trial_user_attr(tid, "failure", message)
        if interrupted:
            storage.set_trial_user_attr(tid, "interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL)


def _unsigned(study: optuna.Study, older_than: float) -> list[FrozenTrial]:
    """Trials claimed longer ago than `older_than` seconds that no worker has signed: their worker
    died between taking and signing them (no heartbeat either, so Optuna cannot find them)."""
    now = time.time()
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if holder(t) is None and now - t.datetime_start.timestamp() > older_than]


def _give_back(study: optuna.Study, storage, held: list[FrozenTrial], why: str, log) -> None:
    """Fail `held` trials with `why` and queue their tasks again (up to MAX_ATTEMPTS runs)."""
    for t in held:
        _fail(study, storage, t, f"{why} while training {describe(task_of(t))}")
    for task in enqueue(study, [task_of(t) for t in held])["failed"]:
        log(f"giving up on {describe(task)}: it failed {MAX_ATTEMPTS} times (see the study's table)")


def _bury(study: optuna.Study, storage, dead: _Worker, log) -> None:
    """Fail what a dead worker held, naming the signal, and queue it again if allowed."""
    held = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if holder(t) == dead.token]
    if not is_rdb(storage):  # journal: nobody else claims, so unsigned trials were this one's
        held += _unsigned(study, ORPHAN_S)
    last = f" (last output: {dead.tail[-1]})" if dead.proc.returncode > 0 and dead.tail else ""
    if held:
        log(f"worker {dead.number} (pid {dead.proc.pid}) {dead.why()} holding {len(held)} task(s)")
        _give_back(study, storage, held, f"worker {dead.proc.pid} {dead.why()}{last}", log)


def run_trials(study: optuna.Study, storage, url: str | None, workers: int, log: Callable[[str], None] = print) -> None:
    """Train the study's queued tasks with `workers` local processes; return when none is left.

    With PostgreSQL, tasks held by workers on other machines are waited for (their heartbeat
    decides whether they come back).
    """
    lines: "queue.Queue[str]" = queue.Queue()
    procs: list[_Worker] = []
    started = 0

    def drain() -> None:
        while not lines.empty():
            log(lines.get_nowait())

    outage = Outage(log)
    try:
        while True:
            drain()
            try:
                for w in [w for w in procs if w.proc.poll() is not None]:
                    drain()
                    if w.proc.returncode != 0:
                        _bury(study, storage, w, log)  # before forgetting it: an outage here tries again
                    procs.remove(w)
                    if w.proc.returncode > 0:  # an exception, not a crash: it would fail again
                        raise RuntimeError(f"worker {w.number} (pid {w.proc.pid}) {w.why()}; its last lines:\n  "
                                           + "\n  ".join(w.tail))
                if is_rdb(storage):  # silent workers anywhere: their heartbeat, or no signature at all
                    optuna.storages.fail_stale_trials(study)
                    if lost := _unsigned(study, GRACE_S):
                        _give_back(study, storage, lost, "a worker went silent before signing its claim", log)
                waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except LOST as e:
                outage.lost(e)
                continue
            outage.back()
            while waiting and len(procs) < min(workers, len(waiting) + len(running)):
                started += 1
                procs.append(_Worker(started, study.study_name, url, workers, lines))
            if not (waiting or running or procs):
                return
            time.sleep(POLL_S)
    finally:
        for w in procs:  # an interrupted notebook leaves no worker behind
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait()
        drain()
        mine = {w.token for w in procs}  # their tasks are not at fault: the next run queues them again
        # a database that is gone for good: the heartbeat fails these trials in the next run
        with contextlib.suppress(*LOST):
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if holder(t) in mine:
                    _fail(study, storage, t, "interrupted: the notebook stopped its workers", interrupted=True)


@contextlib.contextmanager
def sole_coordinator(study_name: str):
    """Journal studies: refuse a second coordinator while one lives (it would fail the first's trials).

    The claim is a file holding the coordinator's pid; one whose process is gone is taken over.
    """
    path = journal_path(study_name).with_suffix(".coordinator")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            owner = _alive_owner(path)
            if owner:
                raise RuntimeError(f"study {study_name} is being run by process {owner} on this machine; "
                                   "wait for it to finish or stop it first") from None
            path.unlink(missing_ok=True)  # its process is gone
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive_owner(path: Path) -> int | None:
    try:
        owner = int(path.read_text())
        os.kill(owner, 0)
    except (OSError, ValueError) as e:
        return owner if isinstance(e, PermissionError) else None  # another user's live process
    return owner


def interrupted_leftovers(study: optuna.Study, storage) -> None:
    """Journal studies: RUNNING trials at a coordinator's start belong to an interrupted run."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _fail(study, storage, t, "interrupted: its run ended before it finished", interrupted=True)


# ---------------------------------------------------------------------------------- remote workers

def unfinished_study(storage, notebook: str) -> str:
    """The one study of `notebook` with queued or running trials; a clear error for none or several."""
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
             if s.study_name.startswith(notebook + "-")]
    open_ = [n for n in names if optuna.load_study(study_name=n, storage=storage).get_trials(
        deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))]
    if len(open_) == 1:
        return open_[0]
    if not open_:
        raise StorageError(f"no unfinished study of {notebook} in this storage (there: {names or 'none'}); "
                           "start it from its notebook first")
    raise StorageError(f"several unfinished studies of {notebook}: {open_}; choose one with --study")


def _leave_with_parent() -> None:
    """A coordinator's worker leaves when its coordinator is gone (a killed kernel runs no `finally`)."""
    parent = int(os.environ.get("DIGITS_PARENT_PID", "0"))
    while parent:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.workers",
                                     description=f"Join a study and train its queued tasks; the storage URL "
                                     f"comes from {STORAGE_ENV} (never the command line).")
    parser.add_argument("--notebook", help="the study's notebook, e.g. 06_grid_search (joins its unfinished study)")
    parser.add_argument("--study", help="a study by name (a notebook's local workers are given theirs)")
    parser.add_argument("--workers", type=int, default=1, help="processes on this machine (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--exit-when-idle", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (args.notebook or args.study):
        parser.error("give --notebook (or --study)")
    threading.Thread(target=_leave_with_parent, daemon=True).start()
    import torch

    from . import data, studies

    url = os.environ.get(STORAGE_ENV) or None
    try:
        if args.study:  # a coordinator's worker: its coordinator has just reached the database
            name, (_, study) = args.study, connect(url, args.study, Outage(lambda s: print(s, flush=True)))
        else:  # joining from another machine: a wrong URL fails at once
            name = unfinished_study(open_storage(url, args.notebook), args.notebook)
            study = optuna.load_study(study_name=name, storage=open_storage(url, name))
    except (StorageError, KeyError, *LOST) as e:
        parser.error(str(e).strip("'\""))
    prepared = data.load_prepared()
    if studies.data_fingerprint(prepared) != study.user_attrs["spec"]["data"]:
        parser.error(f"this machine's prepared data differs from the study's ({study.user_attrs['spec']['data']}); "
                     "run 01_data with the same parameters here first")
    if args.workers > 1:
        run_trials(study, open_storage(url, name), url, args.workers)
        return 0
    torch.set_num_threads(args.threads)
    n = work(name, url, prepared, exit_when_idle=args.exit_when_idle, log=lambda s: print(s, flush=True))
    if not args.exit_when_idle:
        print(f"study {name}: nothing left to train ({n} task(s) trained here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

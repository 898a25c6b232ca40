"""Running a study's trials: an Optuna queue, and one loop that claims them for its child processes.

A trial is one training run, a *task* such as {"lr": 0.1, "batch_size": 64, "seed": 0, "epochs":
20, "fraction": 1.0}; `stacked.train_tasks` says what it trains, `helpers.studies` what a study is.

- Queue, don't sample: the notebook enqueues every task once, up front (`Study.enqueue_trial`).
  The loop (`run_trials`) takes queued trials, each moved from WAITING to RUNNING by the storage
  for exactly one caller, so no task is trained twice; it takes several that can share a stacked
  model (`stacked.stack_key`) and hands them to an idle child, which trains them and sends back
  each epoch's results. Only the loop touches the storage, so it always knows what a child holds.
- Storage: a journal file under data/studies/ on one machine (one notebook at a time); a
  PostgreSQL URL across machines, where `make worker` runs the same loop, with Optuna's heartbeat
  (each loop beats for its children's trials) and `RetryHeartbeatStaleTrialCallback`, which
  queues a silent machine's tasks again.
- A child that dies (SIGKILL, OOM, segfault) fails its tasks with the signal named, they are
  queued again and another child starts; a task that failed MAX_ATTEMPTS times, over every run of
  the study, stays failed. A child that raises is a bug: the loop stops with its traceback.
  Interrupted, the loop kills its children; children of a killed loop leave by themselves.
- The storage URL (`helpers.storage`) never reaches argv, which `ps` shows; a child drops it from
  the environment it inherits as it starts, and never opens the storage.

    python -m helpers.workers --notebook 06_grid_search [--workers 2]    # join from another machine
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from typing import Callable, Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import stacked
from . import storage as S

POLL_S = 0.5

# The loop prints a line per finished stack; Optuna's own INFO lines would repeat each trial.
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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
    """The child that holds `trial`. A heartbeat retry starts with a copy of the stale trial's user
    attrs, the dead child's token too, signed with another trial's number: that holds nothing."""
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
        elif len(failures(have)) >= S.MAX_ATTEMPTS:
            state["failed"].append(task)
        else:
            # skip_if_exists guards a first queueing against a second notebook; a retry must be
            # queued although failed trials of the task exist
            study.enqueue_trial(task, user_attrs={"task": task, "attempt": len(failures(have)) + 1},
                                skip_if_exists=not have)
            state["queued"].append(task)
    return state


def claim(study: optuna.Study, storage, token: str, limit: int) -> list[tuple[FrozenTrial, int]]:
    """Take up to `limit` waiting trials that can train as one stack for `token`: [(trial, trial_id)].

    The first waiting trial decides the stack, one seed's trials first (they share batches); a
    retry (attempt > 1) is taken alone, so a task that kills its child cannot take others with it.
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
                continue  # another machine was first
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if S.is_rdb(storage):  # beat before signing: a signed trial can always go stale
            storage.record_heartbeat(tid)
        try:
            storage.set_trial_user_attr(tid, "worker", token)
            storage.set_trial_user_attr(tid, "history", [])  # a retry inherits its predecessor's
            storage.set_trial_user_attr(tid, "signed", t.number)  # last: the claim is whole
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # given back meanwhile by a machine that thought this one dead
        taken.append((t, tid))
        if len(taken) == limit:
            break
    return taken


def _fail(study: optuna.Study, storage, trial: FrozenTrial, message: str, interrupted: bool = False) -> None:
    """Record why `trial` stopped and mark it failed (unless it finished meanwhile)."""
    tid = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                          trial.number)
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
        storage.set_trial_user_attr(tid, "failure", message)
        if interrupted:
            storage.set_trial_user_attr(tid, "interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL)


def _give_back(study: optuna.Study, storage, held: list[FrozenTrial], why: str, log) -> None:
    """Fail `held` trials with `why` and queue their tasks again (up to MAX_ATTEMPTS runs)."""
    for t in held:
        _fail(study, storage, t, f"{why} while training {describe(task_of(t))}")
    for task in enqueue(study, [task_of(t) for t in held])["failed"]:
        log(f"giving up on {describe(task)}: it failed {S.MAX_ATTEMPTS} times (see the study's table)")


def interrupted_leftovers(study: optuna.Study, storage) -> None:
    """Journal studies: RUNNING trials at a notebook's start belong to an interrupted run."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        _fail(study, storage, t, "interrupted: its run ended before it finished", interrupted=True)


# ------------------------------------------------------------------------------ the loop, children

# spawn: a fresh interpreter per child (torch is not fork-safe once it has run); the child inherits
# the environment, never a storage object, and leaves by itself when its loop is gone
_MP = multiprocessing.get_context("spawn")


class _Child:
    """A child process, the pipe it answers on, and the trials it holds."""

    def __init__(self, number: int):
        self.conn, theirs = _MP.Pipe()
        self.proc = _MP.Process(target=child, args=(theirs, os.getpid()), daemon=True)
        # it shares the loop's process group, which a Ctrl-C reaches: SIGINT stays blocked in it
        # (the mask survives fork and exec) until it ignores the signal
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        theirs.close()  # the loop keeps one end: the child's death reads as end-of-file
        self.number, self.token = number, f"{socket.gethostname()}:{self.proc.pid}"
        self.held: list[tuple[FrozenTrial, int]] = []
        self.started, self.error = 0.0, ""

    def train(self, fixed: dict, taken: list[tuple[FrozenTrial, int]]) -> None:
        self.held, self.started = taken, time.perf_counter()
        with contextlib.suppress(OSError):  # it has died: its end-of-file gives the trials back
            self.conn.send({"fixed": fixed, "tasks": [task_of(t) for t, _ in taken]})

    def why(self) -> str:
        code = self.proc.exitcode
        if code >= 0:
            return f"exited with status {code}"
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"


def run_trials(study: optuna.Study, storage, workers: int, log: Callable[[str], None] = print) -> None:
    """Train the study's queued tasks in `workers` children; return when none is waiting or running.

    With PostgreSQL, tasks held on other machines are waited for (their heartbeat decides whether
    they come back), and a claim left half-made by a dead machine is queued again after GRACE_S.
    """
    children: list[_Child] = []
    fixed = study.user_attrs["spec"]["fixed"]
    outage, beaten = S.Outage(log), time.monotonic()
    since: dict[int, float] = {}   # unsigned RUNNING trials (PostgreSQL): when this loop first saw each
    everyone: list[_Child] = []   # every child this run started, for the interrupted's trials

    def record(fn, *args, **kwargs) -> None:
        """A write for a held trial, unless another machine took it as dead meanwhile (its retry trains it)."""
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            S.patiently(outage, fn, *args, **kwargs)

    def heard(child: _Child) -> None:
        try:
            kind, body = child.conn.recv()
        except (EOFError, OSError):  # it has ended (a message cut short: it died writing it)
            return ended(child)
        if kind == "epoch":  # progress; the history is written once, at the end
            epoch, rows = body
            for (_, tid), row in zip(child.held, rows):
                record(storage.set_trial_intermediate_value, tid, epoch, row["val_acc"])
        elif kind == "histories":
            for (t, tid), history in zip(child.held, body):
                record(storage.set_trial_user_attr, tid, "history", history)
                if history[-1].get("diverged"):
                    record(storage.set_trial_user_attr, tid, "diverged", history[-1]["diverged"])
                record(study.tell, t.number, history[-1]["val_acc"], skip_if_finished=True)
            log(f"[worker {child.number}] trained {len(child.held)} task(s) in "
                f"{time.perf_counter() - child.started:.1f} s: " + "; ".join(
                    f"{describe(task_of(t))} -> {h[-1]['val_acc']:.4f}" for (t, _), h in zip(child.held, body)))
            child.held = []
        else:
            child.error = body

    def ended(child: _Child) -> None:
        child.proc.join()
        child.conn.close()
        children.remove(child)
        if child.proc.exitcode > 0:  # an exception, a bug: it would fail again; the notebook stops
            for t, _ in child.held:  # and its tasks are not at fault (the next run queues them)
                _fail(study, storage, t, f"worker {child.proc.pid} {child.why()}", interrupted=True)
            said = child.error.splitlines()[-20:] or ["(it sent no traceback: it failed while starting; see the "
                                                      "kernel's or terminal's error output)"]
            raise RuntimeError(f"worker {child.number} (pid {child.proc.pid}) {child.why()}; its last lines:\n  "
                               + "\n  ".join(said))
        if child.held:
            log(f"worker {child.number} (pid {child.proc.pid}) {child.why()} holding {len(child.held)} task(s)")
            S.patiently(outage, _give_back, study, storage, [t for t, _ in child.held],
                        f"worker {child.proc.pid} {child.why()}", log)
            child.held = []

    started = 0
    try:
        while True:
            until = time.monotonic() + POLL_S  # then beat and claim, however much the children say
            while (left := until - time.monotonic()) > 0:
                for conn in multiprocessing.connection.wait([c.conn for c in children], left):
                    heard(next(c for c in children if c.conn is conn))
            try:
                if S.is_rdb(storage):
                    if time.monotonic() - beaten > S.HEARTBEAT_S:
                        for child in children:
                            for _, tid in child.held:
                                storage.record_heartbeat(tid)
                        beaten = time.monotonic()
                    optuna.storages.fail_stale_trials(study)  # silent machines: their heartbeat
                    # a machine that died between claiming and signing: unsigned for GRACE_S by this
                    # machine's clock (another's datetime_start may be skewed or in another time zone)
                    now = time.monotonic()
                    unsigned = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                                if holder(t) is None}
                    since = {n: since.get(n, now) for n in unsigned}
                    if lost := [t for n, t in unsigned.items() if now - since[n] > S.GRACE_S]:
                        _give_back(study, storage, lost, "a worker went silent before signing its claim", log)
                waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                idle = [c for c in children if not c.held]
                while waiting and (idle or len(children) < workers):
                    if not idle:
                        started += 1
                        children.append(_Child(started))
                        everyone.append(children[-1])
                        idle.append(children[-1])
                    # share the queue's tail between the children rather than stacking all of it in one
                    limit = max(1, min(stacked.MAX_STACK, -(-len(waiting) // workers)))
                    if not (taken := claim(study, storage, idle[0].token, limit)):
                        break  # taken elsewhere meanwhile: look again after a pause
                    idle.pop(0).train(fixed, taken)
                    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except S.LOST as e:  # a claim cut short is found unsigned (or stale) and queued again
                outage.lost(e)
                continue
            outage.back()
            if not (waiting or running):
                return
    finally:
        for child in children:  # an interrupted notebook leaves no child behind
            child.proc.kill()
            child.proc.join()
            child.conn.close()
        # their tasks are not at fault: the next run queues them again; a database that is gone
        # for good: the heartbeat fails these trials in the next run. By token, not `held`: an
        # interrupt can land inside a claim
        mine = {child.token for child in everyone}
        with contextlib.suppress(*S.LOST):
            if not S.is_rdb(storage):  # replayed afresh: an interrupt inside a journal call can leave it half-read
                storage = S.open_storage(None, study.study_name)
                study = optuna.load_study(study_name=study.study_name, storage=storage)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                # PostgreSQL: signed only (an unsigned retry copy names a dead child, maybe one of ours)
                if (holder(t) if S.is_rdb(storage) else t.user_attrs.get("worker")) in mine:
                    _fail(study, storage, t, "interrupted: the notebook stopped its workers", interrupted=True)


def child(conn, loop: int) -> None:
    """A child's life: receive a stack of tasks, train it, answer; again until the loop closes the
    pipe, or until the loop is gone (a killed kernel runs no `finally`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the loop, which stops its children
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the loop while spawning
    os.environ.pop(S.STORAGE_ENV, None)  # only the loop talks to the storage

    def leave_with_loop() -> None:
        while os.getppid() == loop:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=leave_with_loop, daemon=True).start()
    try:
        import torch

        from . import data

        torch.set_num_threads(1)  # a study's numbers are bit-identical for one thread per child
        prepared = data.load_prepared()
        while True:
            try:
                stack = conn.recv()
            except EOFError:  # the loop has finished with it
                return
            histories = stacked.train_tasks(prepared, stack["fixed"], stack["tasks"],
                                            on_epoch=lambda epoch, rows: conn.send(("epoch", (epoch, rows))))
            conn.send(("histories", histories))
    except Exception:  # a bug: the loop stops the study with this (a gone loop hears nothing)
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
        sys.exit(1)


# ---------------------------------------------------------------------------- one notebook, joiners

def unfinished_study(storage, notebook: str) -> str:
    """The one study of `notebook` with queued or running trials; a clear error for none or several."""
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
             if notebook in s.user_attrs.get("notebooks", [])]
    open_ = [n for n in names if optuna.load_study(study_name=n, storage=storage).get_trials(
        deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))]
    if len(open_) == 1:
        return open_[0]
    if not open_:
        raise S.StorageError(f"no unfinished study of {notebook} in this storage (there: {names or 'none'}); "
                           "start it from its notebook first")
    raise S.StorageError(f"several unfinished studies of {notebook}: {open_}; choose one with --study")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.workers",
                                     description=f"Join a study and train its queued tasks; the storage URL "
                                     f"comes from {S.STORAGE_ENV} (never the command line).")
    parser.add_argument("--notebook", help="the study's notebook, e.g. 06_grid_search (joins its unfinished study)")
    parser.add_argument("--study", help="a study by name, where a notebook has several unfinished ones")
    parser.add_argument("--workers", type=int, default=1, help="processes on this machine, one core each (default 1)")
    args = parser.parse_args(argv)
    if not (args.notebook or args.study):
        parser.error("give --notebook (or --study)")
    from . import data

    url = os.environ.get(S.STORAGE_ENV) or None
    if not url:  # a journal study's own notebook runs it, alone (sole_coordinator)
        parser.error(f"set {S.STORAGE_ENV} to the study's PostgreSQL URL: only a database study can be joined")
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        if args.study:
            name, (storage, study) = args.study, S.connect(url, args.study, S.Outage(log))
        else:  # a wrong URL fails at once
            name = unfinished_study(S.open_storage(url, args.notebook), args.notebook)
            storage = S.open_storage(url, name)
            study = optuna.load_study(study_name=name, storage=storage)
    except (S.StorageError, KeyError, *S.LOST) as e:
        parser.error(str(e).strip("'\""))
    if data.load_prepared().fingerprint() != study.user_attrs["spec"]["data"]:
        parser.error(f"this machine's prepared data differs from the study's ({study.user_attrs['spec']['data']}); "
                     "run 01_data with the same parameters here first")
    run_trials(study, storage, args.workers, log)
    log(f"study {name}: nothing left to train")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One study engine for the three hyperparameter notebooks (04, 05, 06), on Optuna.

A study is a grid (Optuna's GridSampler) over training settings; every trial trains a fresh
model with the shared training code (`train.fit`), reports validation accuracy each epoch (so a
pruner can stop hopeless trials) and stores its per-epoch history with the trial.

Storage and workers:
- By default the study lives in a journal file under `data/studies/` (Optuna's
  JournalFileBackend, safe for several processes; SQLite is not) and N local worker processes,
  one torch thread each, share it.
- Given a PostgreSQL URL, the same study can be joined from other machines with
  `make sweep-worker STUDY=... STORAGE=...`; dead workers are detected by heartbeat and their
  point is retried by a live one (RetryHeartbeatStaleTrialCallback).

Resuming: a point counts as done when one of its trials is COMPLETE or PRUNED. On a re-run,
finished points are not trained again, and points whose trials failed or were interrupted are
enqueued again. GridSampler alone would count a failed point as done, and can hand out a point
twice on a re-run; `_claim` drops such a duplicate before it trains.

    python -m helpers.sweep worker --study 06_grid_search --storage postgresql://... [--workers 2]
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from . import data, paths
from . import params as P
from .model import MLP
from .train import TrainingDiverged, fit, seed_everything, validate

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S = int(os.environ.get("DIGITS_HEARTBEAT_S", "10"))   # RDB workers beat this often
GRACE_S = int(os.environ.get("DIGITS_GRACE_S", "60"))           # silent this long = dead

# Workers print one line per trial themselves; Optuna's own lines would repeat each one, and it
# logs every dropped duplicate as a failed trial with a traceback.
optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler, minus a crash on queued trials (`requeue`, retries of failed points).

    Its `after_trial` reads the trial's `grid_id` whenever exactly one grid point is left, but a
    queued trial has none: the worker died with KeyError('grid_id') (optuna/optuna PR #6844).
    """

    def after_trial(self, study, trial, state, values) -> None:
        if "grid_id" in trial.system_attrs:
            super().after_trial(study, trial, state, values)
        elif self.is_exhausted(study):
            study.stop()


class _Duplicate(Exception):
    """This trial's grid point is done or claimed by another trial: end it without training."""


@dataclass
class StudySpec:
    """What a study trains: the grid, the settings every point shares, the pruning rule.

    `grid` values must be plain (int, float, str): hidden sizes go in as "512-256".
    `prune_below`: a trial whose validation accuracy after `prune_after` epochs is below this is
    stopped (Optuna's ThresholdPruner: deterministic, unlike a median rule that depends on which
    trials happened to finish first). 0 disables pruning.
    """

    notebook: str
    grid: dict[str, list]
    fixed: dict
    prune_below: float = 0.0
    prune_after: int = 1
    data: dict = field(default_factory=dict)   # fingerprint of the prepared data

    def points(self) -> list[dict]:
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*self.grid.values())]

    def name(self) -> str:
        """Notebook name plus a hash of the spec: other settings make another study."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{self.notebook}-{digest[:8]}"


def data_fingerprint(prepared: data.Prepared) -> dict:
    """Enough to tell that two machines hold the same prepared data and split."""
    h = hashlib.sha256()
    for t in (prepared.labels, prepared.train_idx, prepared.val_idx):
        h.update(t.numpy().tobytes())
    h.update(prepared.images[prepared.train_idx[:512]].numpy().tobytes())
    return {"source": prepared.source, "n_train": len(prepared.train_idx),
            "n_val": len(prepared.val_idx), "sha256": h.hexdigest()[:16]}


def hidden_sizes(value) -> list[int]:
    """'512-256' or [512, 256] -> [512, 256]."""
    if isinstance(value, str):
        return [int(v) for v in value.split("-")]
    return list(value)


def _journal_path(notebook: str) -> Path:
    return paths.data_dir() / "studies" / f"{notebook}.journal"


def storage_for(url: str | None, notebook: str):
    """Journal file under data/studies/ by default; an RDB URL (PostgreSQL) with heartbeat."""
    if not url:
        path = _journal_path(notebook)
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(
            str(path), lock_obj=optuna.storages.journal.JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite"):
        raise ValueError("storage: SQLite is not safe for parallel workers (Optuna's FAQ); use the "
                         "default journal file, or a PostgreSQL URL to span machines")
    if url.startswith("postgresql://"):
        # SQLAlchemy 2.1 reads a bare postgresql:// as the psycopg (3) driver, which is not
        # installed: the pinned driver is psycopg2 (psycopg2-binary).
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))


def _key(params: dict, names) -> tuple:
    return tuple(params.get(n) for n in names)


def _point_of(trial, names) -> tuple:
    """The grid point a trial holds: its params, or, while queued, the params it was queued with."""
    return _key(trial.params or trial.system_attrs.get("fixed_params", {}), names)


def status(study: optuna.Study, spec: StudySpec) -> dict[str, list]:
    """Grid points by state: done, running, waiting (queued), missing (never run or failed)."""
    names = list(spec.grid)
    trials = study.get_trials(deepcopy=False)
    by_state: dict[str, list] = {"done": [], "running": [], "waiting": [], "missing": []}
    for point in spec.points():
        states = {t.state for t in trials if _point_of(t, names) == _key(point, names)}
        if states & set(FINISHED):
            by_state["done"].append(point)
        elif TrialState.RUNNING in states:
            by_state["running"].append(point)
        elif TrialState.WAITING in states:
            by_state["waiting"].append(point)
        else:
            by_state["missing"].append(point)
    return by_state


def _claim(study: optuna.Study, trial: optuna.Trial, point: dict, names) -> None:
    """Raise `_Duplicate` unless this trial should train `point`.

    It should not when a trial of the point is finished, or when a lower-numbered live
    (running or queued) trial holds it: of racing claims exactly one, the oldest, trains.
    """
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or _point_of(other, names) != _key(point, names):
            continue
        if other.state in FINISHED or (other.state in (TrialState.RUNNING, TrialState.WAITING)
                                       and other.number < trial.number):
            trial.set_user_attr("duplicate_of", other.number)
            raise _Duplicate(f"point {point} already held by trial {other.number}")


def make_objective(spec: StudySpec, prepared: data.Prepared, log=print):
    names = list(spec.grid)

    def objective(trial: optuna.Trial) -> float:
        point = {n: trial.suggest_categorical(n, spec.grid[n]) for n in names}
        _claim(trial.study, trial, point, names)
        cfg = {**spec.fixed, **point}
        seed_everything(cfg["seed"])
        model = MLP(hidden_sizes(cfg["hidden"]), cfg["dropout"], lr=cfg["lr"],
                    momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
        train_loader, val_loader = prepared.loaders(cfg["batch_size"], cfg["seed"])
        history: list[dict] = []
        if trial.user_attrs.get("history"):
            trial.set_user_attr("history", history)  # a retry inherits the dead trial's attrs

        def on_epoch(row: dict) -> None:
            history.append(row)
            trial.set_user_attr("history", history)  # kept even if the trial is pruned
            trial.report(row["val_acc"], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"val_acc {row['val_acc']:.4f} after epoch {row['epoch']}")

        try:
            fit(model, train_loader, val_loader, cfg["epochs"], schedule=cfg["schedule"],
                on_epoch=on_epoch, progress=False, log=lambda s: None)
        except TrainingDiverged as e:
            # A diverged run is a finished, useless point, not a failure to retry forever:
            # its value is the accuracy its (NaN) weights really have.
            trial.set_user_attr("diverged", str(e))
            value = validate(model, val_loader)[1]
            log(f"trial {trial.number} {point}: diverged ({e})")
            return value
        finally:
            trial.set_user_attr("epochs_run", len(history))
        log(f"trial {trial.number} {point}: val_acc {history[-1]['val_acc']:.4f} "
            f"in {sum(r['seconds'] for r in history):.1f} s")
        return history[-1]["val_acc"]

    return objective


def _pruner(spec: StudySpec):
    if spec.prune_below <= 0:
        return optuna.pruners.NopPruner()
    # Epochs are reported as steps 1, 2, ...; the pruner skips steps below n_warmup_steps, so
    # the first epoch it judges is `prune_after` itself.
    return optuna.pruners.ThresholdPruner(lower=spec.prune_below, n_warmup_steps=spec.prune_after)


def open_study(spec: StudySpec, storage: str | None) -> optuna.Study:
    """Create or load the study named after `spec`; its spec is stored with it for workers."""
    name = spec.name()
    kwargs = dict(study_name=name, storage=storage_for(storage, spec.notebook),
                  sampler=_GridSampler(spec.grid, seed=0), pruner=_pruner(spec))
    study = optuna.create_study(direction="maximize", load_if_exists=True, **kwargs)
    if "spec" not in study.user_attrs:
        study.set_user_attr("spec", asdict(spec))
    return study


def requeue(study: optuna.Study, spec: StudySpec, local: bool) -> int:
    """Enqueue every point without a live or finished trial; returns how many.

    `local`: the journal study is run by this process tree alone, so RUNNING trials are
    leftovers of an interrupted run: mark them failed first. (An RDB study may have live
    workers elsewhere; there the heartbeat decides what is dead.)
    """
    if local:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_system_attr(t._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    else:
        optuna.storages.fail_stale_trials(study)
    names = list(spec.grid)
    trials = study.get_trials(deepcopy=False)
    tried = {_key(t.params, names) for t in trials}
    # A trial stopped after GridSampler gave it a point (its `grid_id`) but before it set its
    # params holds that point too: GridSampler counts it visited and never hands it out again.
    sampler = study.sampler
    if isinstance(sampler, optuna.samplers.GridSampler):
        tried |= {_key(dict(zip(sampler._param_names, sampler._all_grids[t.system_attrs["grid_id"]])),
                       names)
                  for t in trials if not t.params and "grid_id" in t.system_attrs}
    n = 0
    for point in status(study, spec)["missing"]:
        # A point no trial ever had is left to the GridSampler; a failed one is queued again.
        if _key(point, names) in tried:
            study.enqueue_trial(point, user_attrs={"retry": True})
            n += 1
    return n


def _grid_left(study: optuna.Study, spec: StudySpec) -> bool:
    """Whether the GridSampler still has grid points it never handed to a trial."""
    handed = {t.system_attrs["grid_id"] for t in study.get_trials(deepcopy=False)
              if "grid_id" in t.system_attrs}
    return len(handed) < len(spec.points())


def work(spec: StudySpec, storage: str | None, prepared: data.Prepared, log=print,
         poll_s: float = 2.0) -> None:
    """One worker: train points until every point of the grid is done."""
    study = open_study(spec, storage)
    objective = make_objective(spec, prepared, log)
    while True:
        st = status(study, spec)
        if not (st["missing"] or st["running"] or st["waiting"]):
            return
        if st["waiting"] or _grid_left(study, spec):
            # Stop as soon as nothing is left to hand out, rather than let GridSampler pick a
            # point another worker is already training (it would be dropped, but why make it).
            study.optimize(objective, catch=(_Duplicate,), gc_after_trial=False,
                           callbacks=[_stop_when_nothing_left(spec)])
        elif st["running"]:
            # Another worker holds the rest; if it dies, its heartbeat stops and the point
            # comes back as a queued retry (RDB). Wait for either.
            optuna.storages.fail_stale_trials(study)
            time.sleep(poll_s)
        else:  # missing points whose trials failed: queue them again
            requeue(study, spec, local=False)


def _stop_when_nothing_left(spec: StudySpec):
    def callback(study: optuna.Study, _trial) -> None:
        if not (study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) or _grid_left(study, spec)):
            study.stop()
    return callback


def run_study(spec: StudySpec, storage: str | None = None, workers: int | None = None,
              log=print) -> optuna.Study:
    """Run (or resume, or just load) the study with `workers` local processes; return it."""
    workers = P.integer("workers", workers or os.cpu_count() or 1, minimum=1)
    if storage is None:
        # This process tree alone runs the journal study (see `requeue`), so a lock file left
        # now is a killed worker's (an interrupt kills them mid-write): Optuna would wait 30 s,
        # silently, before breaking it.
        _journal_path(spec.notebook).with_suffix(".journal.lock").unlink(missing_ok=True)
    study = open_study(spec, storage)
    stored = study.user_attrs["spec"]
    if stored["data"] != spec.data:
        raise ValueError(f"study {spec.name()}: was made on other prepared data "
                         f"({stored['data']} vs {spec.data})")
    queued = requeue(study, spec, local=storage is None)
    st = status(study, spec)
    todo = len(st["missing"]) + len(st["waiting"]) + len(st["running"])
    log(f"study {spec.name()}: {len(st['done'])} of {len(spec.points())} points done"
        + (f", {queued} queued again after an interruption" if queued else "")
        + (f"; training {todo} with {min(workers, todo)} worker(s)" if todo else "; nothing to train"))
    if todo:
        _spawn_workers(spec, storage, min(workers, todo), log)
    return open_study(spec, storage)


def _spawn_workers(spec: StudySpec, storage: str | None, n: int, log) -> None:
    """N worker processes, one torch thread each: small models scale by processes, not threads."""
    cmd = [sys.executable, "-m", "helpers.sweep", "worker", "--study", spec.name(), "--threads", "1"]
    if storage:
        cmd += ["--storage", storage]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=paths.ROOT) for _ in range(n)]
    try:
        # Interleave the workers' lines as they come; a worker prints one per trial.
        import selectors
        sel = selectors.DefaultSelector()
        for i, p in enumerate(procs):
            sel.register(p.stdout, selectors.EVENT_READ, i)
        open_streams = len(procs)
        while open_streams:
            for key, _ in sel.select():
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                else:
                    log(f"[worker {key.data}] {line.rstrip()}")
        codes = [p.wait() for p in procs]
    finally:
        for p in procs:  # an interrupted notebook must not leave workers behind
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(codes):
        raise RuntimeError(f"sweep workers exited with codes {codes}; see their lines above")


def results_table(study: optuna.Study, spec: StudySpec):
    """One row per grid point (its finished trial): settings, final metrics, epochs, seconds."""
    import pandas as pd

    names = list(spec.grid)
    rows = []
    for t in sorted(study.get_trials(deepcopy=False, states=FINISHED), key=lambda t: t.number):
        if any(_key(r, names) == _key(t.params, names) for r in rows):
            continue  # first finished trial of a point is its result
        history = t.user_attrs.get("history", [])
        last = history[-1] if history else {}
        rows.append({**{n: t.params[n] for n in names}, "state": t.state.name.lower(),
                     "val_acc": t.value if t.value is not None else last.get("val_acc"),
                     "val_loss": last.get("val_loss"), "train_acc": last.get("train_acc"),
                     "train_loss": last.get("train_loss"), "epochs_run": len(history),
                     "seconds_per_epoch": (sum(r["seconds"] for r in history) / len(history)) if history else None,
                     "diverged": "diverged" in t.user_attrs, "trial": t.number, "history": history})
    return pd.DataFrame(rows)


def worker_main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.sweep worker",
                                     description="Join a study and train its points until the grid is done.")
    parser.add_argument("--study", required=True, help="study name, or a notebook name such as 06_grid_search "
                        "(joins its unfinished study)")
    parser.add_argument("--storage", default=None, help="PostgreSQL URL (default: the local journal file)")
    parser.add_argument("--workers", type=int, default=1, help="processes on this machine (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    args = parser.parse_args(argv)
    notebook = args.study.rsplit("-", 1)[0] if "-" in args.study else args.study
    storage = storage_for(args.storage, notebook)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    matches = [n for n in names if n == args.study or n.rsplit("-", 1)[0] == args.study]
    if not matches:
        parser.error(f"no study named {args.study!r} in the storage (found {names}); "
                     "start it from its notebook first")
    study_name = matches[-1]
    spec = StudySpec(**optuna.load_study(study_name=study_name, storage=storage).user_attrs["spec"])
    prepared = data.load_prepared()
    if data_fingerprint(prepared) != spec.data:
        parser.error(f"this machine's data/prepared.pt differs from the study's ({spec.data}); "
                     "run 01_data with the same parameters here first")
    if args.workers > 1:
        _spawn_workers(spec, args.storage, args.workers, print)
        return 0
    torch.set_num_threads(args.threads)
    work(spec, args.storage, prepared, log=lambda s: print(s, flush=True))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2:]))
    print(__doc__)
    sys.exit(2)


def epochs_saved(table, spec: StudySpec) -> int:
    """Epochs the pruner did not train: what pruned points would have run to the end."""
    pruned = table[table["state"] == "pruned"]
    return int((spec.fixed["epochs"] - pruned["epochs_run"]).sum())


def save_results(spec: StudySpec, study: optuna.Study, table, parameters: dict, seconds: float,
                 **extra) -> Path:
    """figures/<notebook>.json: the table (with per-epoch histories), study, parameters, versions."""
    from . import store

    record = store.result_record(
        parameters, spec.fixed.get("seed"), study=study.study_name, grid=spec.grid,
        fixed=spec.fixed, prune_below=spec.prune_below, data=spec.data, seconds=seconds,
        epochs_saved_by_pruning=epochs_saved(table, spec), **extra,
        trials=table.to_dict(orient="records"))
    return store.save_json(paths.figures_dir() / f"{spec.notebook}.json", record)

"""The hyperparameter-study engine (`helpers.sweep`) on real storage and real worker processes.

Nothing is mocked: studies live in real Optuna journal files (under the test's private
DIGITS_DATA_DIR) or in a real PostgreSQL server the tests start themselves; workers are real
`python -m helpers.sweep worker` processes, killed with SIGKILL where a test needs a crash.
Models are tiny and the data synthetic (saved as the prepared data the workers load), so a
trial takes a fraction of a second, or a couple of seconds where a test must catch one mid-run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from helpers import data, paths, sweep

try:  # tests/ as a package or as a plain folder on sys.path
    from . import pg
    from .conftest import synthetic_digits
except ImportError:
    import pg
    from conftest import synthetic_digits

COMPLETE, PRUNED, FAIL, RUNNING = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                   TrialState.RUNNING)

# Small and quick: a 16-unit MLP on synthetic digits. Kill tests use SLOW_* (more data, more
# epochs) so that a trial lasts long enough to be caught, and killed, in the middle.
FIXED = dict(hidden=[16], dropout=[0.0], momentum=0.9, weight_decay=0.0, schedule="constant",
             seed=0, epochs=2, batch_size=64, lr=0.05)
SLOW_SAMPLES = 3000
SLOW_FIXED = dict(hidden=[32, 16], dropout=[0.0, 0.0], batch_size=8, epochs=8)


# ----------------------------------------------------------------------------- helpers

def save_synthetic(n: int = 1000, seed: int = 0) -> data.Prepared:
    """Synthetic digits saved as this test's prepared data (where workers load it from)."""
    images, labels = synthetic_digits(n, seed=seed)
    train_idx, val_idx = data.split_indices(labels, 0.25, 0)
    prepared = data.Prepared(images, labels, train_idx, val_idx, "synthetic",
                             {"source": "synthetic", "n": n, "seed": seed})
    data.save_prepared(prepared)
    return prepared


@pytest.fixture
def prepared() -> data.Prepared:
    return save_synthetic()


def make_spec(prepared: data.Prepared, grid: dict, notebook: str = "t_sweep", prune_below: float = 0.0,
              prune_after: int = 1, **fixed) -> sweep.StudySpec:
    settings = {**FIXED, **fixed}
    for name in grid:
        settings.pop(name, None)
    return sweep.StudySpec(notebook, grid=grid, fixed=settings, prune_below=prune_below,
                           prune_after=prune_after, data=sweep.data_fingerprint(prepared))


def recorder(lines: list[str]):
    """A `log` for run_study that keeps the lines and prints them (pytest shows them on failure)."""
    def log(line: str) -> None:
        lines.append(line)
        print(line)
    return log


def key(params: dict, spec: sweep.StudySpec) -> tuple:
    return tuple(params.get(n) for n in spec.grid)


def finished_by_point(study: optuna.Study, spec: sweep.StudySpec) -> dict[tuple, optuna.trial.FrozenTrial]:
    """Assert every grid point has exactly one COMPLETE/PRUNED trial; return them by point."""
    finished = [t for t in study.get_trials() if t.state in sweep.FINISHED]
    counts = Counter(key(t.params, spec) for t in finished)
    points = {key(p, spec) for p in spec.points()}
    assert set(counts) == points, f"points without a finished trial: {points - set(counts)}"
    assert all(c == 1 for c in counts.values()), f"points trained more than once: {counts}"
    return {key(t.params, spec): t for t in finished}


def trained(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial trained (a dropped duplicate ends before its model is even built)."""
    return "epochs_run" in t.user_attrs


def assert_duplicate(t: optuna.trial.FrozenTrial, study: optuna.Study, spec: sweep.StudySpec) -> None:
    """`t` is a duplicate `_claim` dropped: FAIL, untrained, naming a trial of the same point."""
    assert t.state == FAIL and "duplicate_of" in t.user_attrs, t
    assert not trained(t), t
    other = study.trials[t.user_attrs["duplicate_of"]]
    assert key(other.params or other.system_attrs.get("fixed_params", {}), spec) == key(t.params, spec)


def grid_point(study: optuna.Study, grid_id: int) -> dict:
    """The point Optuna's GridSampler hands out as `grid_id` (its own, shuffled, order)."""
    sampler = study.sampler
    return dict(zip(sampler._param_names, sampler._all_grids[grid_id]))


def _sweep_children() -> list[int]:
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    found = []
    for pid in pids:
        try:
            if b"helpers.sweep" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


@contextmanager
def watchdog(seconds: float):
    """Kill this process's sweep workers if the block runs past `seconds`: a hung engine then
    fails the test (run_study reports the killed workers) instead of hanging the suite."""
    done = threading.Event()
    fired = []

    def watch():
        if not done.wait(seconds):
            fired.append(True)
            for pid in _sweep_children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    assert not fired, f"the study did not finish within {seconds} s (workers killed)"


def wait_for(condition, timeout: float, what: str, procs=()):
    """Poll `condition()` until it returns something true; fail early if a process dies."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"waiting for {what}: process {p.args} exited with {p.returncode}:\n"
                            f"{p.log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def spawn(tmp_path):
    """Start processes in their own session (so a kill reaches their children); all are killed
    at teardown, whatever the test's outcome."""
    started = []

    def start(args: list[str], name: str) -> subprocess.Popen:
        log_path = tmp_path / f"{name}.log"
        out = open(log_path, "w")
        p = subprocess.Popen(args, cwd=paths.ROOT, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        p.log_path = log_path
        started.append((p, out))
        return p

    yield start
    for p, out in started:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        out.close()


def worker_cmd(spec: sweep.StudySpec, storage: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "helpers.sweep", "worker", "--study", spec.name()]
    return cmd + (["--storage", storage] if storage else [])


@pytest.fixture
def short_heartbeat(monkeypatch):
    """Heartbeat every second, dead after three silent ones: for this process and its workers."""
    monkeypatch.setenv("DIGITS_HEARTBEAT_S", "1")
    monkeypatch.setenv("DIGITS_GRACE_S", "3")
    monkeypatch.setattr(sweep, "HEARTBEAT_S", 1)
    monkeypatch.setattr(sweep, "GRACE_S", 3)


@pytest.fixture(scope="session")
def pg_server():
    bin_dir = pg.find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found under "
                    "/usr/lib/postgresql/*/bin or on PATH: install the 'postgresql' package")
    server = pg.PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """A fresh database on the tests' server, per test."""
    return pg_server.create_database()


# ----------------------------------------------------------------------------- storage, CLI

def test_sqlite_storage_is_refused(prepared, tmp_path):
    """SQLite is refused with a clear message on every entry point, before a file is made."""
    spec = make_spec(prepared, {"lr": [0.01, 0.1]})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(ValueError, match="SQLite is not safe for parallel workers"):
        sweep.storage_for(url, spec.notebook)
    with pytest.raises(ValueError, match="SQLite"):
        sweep.run_study(spec, url, workers=1, log=lambda s: None)
    with pytest.raises(ValueError, match="SQLite"):
        sweep.worker_main(["--study", spec.name(), "--storage", url])
    assert not (tmp_path / "study.db").exists()


def test_worker_refuses_unknown_study_and_other_data(prepared, capsys):
    """`worker` names a missing study clearly, and will not train on other prepared data."""
    spec = make_spec(prepared, {"lr": [0.01, 0.1]})
    sweep.open_study(spec, None)

    with pytest.raises(SystemExit) as e:
        sweep.worker_main(["--study", "no_such_study"])
    assert e.value.code == 2
    assert "no study named 'no_such_study'" in capsys.readouterr().err

    save_synthetic(1000, seed=1)   # this "machine" prepared other data than the study's
    with pytest.raises(SystemExit) as e:
        sweep.worker_main(["--study", spec.name()])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "differs from the study's" in err and spec.data["sha256"] in err
    assert sweep.open_study(spec, None).trials == []   # nothing was trained


# ----------------------------------------------------------------------------- one process

def test_results_table_one_row_per_point_with_its_own_trial(prepared):
    """One row per grid point, built from that point's own finished trial (params, value,
    history), and the first finished one if a point somehow has two."""
    spec = make_spec(prepared, {"lr": [0.02, 0.1], "batch_size": [32, 64]}, epochs=2)
    sweep.work(spec, None, prepared, log=lambda s: None)
    study = sweep.open_study(spec, None)
    by_point = finished_by_point(study, spec)

    table = sweep.results_table(study, spec)
    assert len(table) == len(spec.points()) == 4
    assert sorted(table["trial"]) == sorted(t.number for t in by_point.values())
    for row in table.to_dict(orient="records"):
        t = study.trials[row["trial"]]
        assert key(row, spec) == key(t.params, spec)           # the row's own trial
        assert row["state"] == "complete" and row["val_acc"] == t.value
        assert row["history"] == t.user_attrs["history"] and row["epochs_run"] == 2
        assert row["val_acc"] == row["history"][-1]["val_acc"] and not row["diverged"]
    assert table["val_acc"].max() > 0.5   # the synthetic digits are learnable

    # A second finished trial of a point (a duplicate that trained anyway) does not add a row,
    # nor replace the point's first result.
    point = spec.points()[0]
    study.add_trial(optuna.create_trial(
        state=COMPLETE, value=0.0, params=point, user_attrs={"history": []},
        distributions={n: CategoricalDistribution(spec.grid[n]) for n in spec.grid}))
    again = sweep.results_table(study, spec)
    assert len(again) == 4
    assert list(again["trial"]) == list(table["trial"])


def test_retry_row_shows_the_retrys_own_run(prepared):
    """A heartbeat retry (RetryHeartbeatStaleTrialCallback) copies the dead trial's user attrs, its
    per-epoch history too; the point's row must show the retry's own run, here one that
    diverged in its first epoch (so it never reported an epoch of its own)."""
    spec = make_spec(prepared, {"lr": [0.05, 1e6]})
    study = sweep.open_study(spec, None)
    study.enqueue_trial({"lr": 1e6})
    dead = study.ask()
    dead.suggest_categorical("lr", spec.grid["lr"])
    dead.set_user_attr("history", [{"epoch": 1, "val_acc": 0.5, "seconds": 1.0}])
    study.tell(dead, state=FAIL)   # what fail_stale_trials does to a dead worker's trial
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)(study, study.trials[0])
    assert study.trials[1].state == TrialState.WAITING
    sweep.work(spec, None, prepared, log=lambda s: None)
    study = sweep.open_study(spec, None)
    retry = finished_by_point(study, spec)[(1e6,)]
    assert retry.number == 1 and "diverged" in retry.user_attrs
    row = sweep.results_table(study, spec).set_index("lr").loc[1e6]
    assert row["trial"] == 1 and bool(row["diverged"])
    assert row["history"] == [] and row["epochs_run"] == 0
    assert row["val_acc"] == retry.value


def test_diverged_point_is_complete_and_not_retried(prepared):
    """A huge learning rate: the point ends COMPLETE with a `diverged` note, and a re-run
    does not train it again."""
    spec = make_spec(prepared, {"lr": [0.05, 1e6]}, epochs=2)
    sweep.work(spec, None, prepared, log=lambda s: None)
    study = sweep.open_study(spec, None)
    by_point = finished_by_point(study, spec)
    bad, good = by_point[(1e6,)], by_point[(0.05,)]
    assert bad.state == COMPLETE and "non-finite loss" in bad.user_attrs["diverged"]
    assert 0.0 <= bad.value <= 1.0 and "diverged" not in good.user_attrs
    table = sweep.results_table(study, spec).set_index("lr")
    assert bool(table.loc[1e6, "diverged"]) and not bool(table.loc[0.05, "diverged"])

    # Not retried: a re-run finds the study finished and trains nothing.
    n = len(study.trials)
    lines = []
    sweep.run_study(spec, None, workers=2, log=recorder(lines))
    assert "2 of 2 points done" in lines[0] and "nothing to train" in lines[0]
    assert len(sweep.open_study(spec, None).trials) == n
    assert sweep.requeue(study, spec, local=True) == 0


@pytest.mark.parametrize("prune_after", [1, 2])
def test_pruning_marks_pruned_and_counts_saved_epochs(prepared, prune_after):
    """A point below `prune_below` after `prune_after` epochs ends PRUNED right there; the
    table and `epochs_saved` count the epochs it did not train."""
    epochs = 4
    spec = make_spec(prepared, {"lr": [1e-6, 0.1]}, epochs=epochs, prune_below=0.5,
                     prune_after=prune_after)
    sweep.work(spec, None, prepared, log=lambda s: None)
    study = sweep.open_study(spec, None)
    by_point = finished_by_point(study, spec)
    slow, fast = by_point[(1e-6,)], by_point[(0.1,)]
    # Stopped right after its `prune_after`-th epoch, not before, not later.
    assert slow.state == PRUNED
    assert sorted(slow.intermediate_values) == list(range(1, prune_after + 1))
    assert len(slow.user_attrs["history"]) == slow.user_attrs["epochs_run"] == prune_after
    assert fast.state == COMPLETE and len(fast.user_attrs["history"]) == epochs

    table = sweep.results_table(study, spec).set_index("lr")
    assert table.loc[1e-6, "state"] == "pruned" and table.loc[1e-6, "epochs_run"] == prune_after
    assert table.loc[1e-6, "val_acc"] == slow.user_attrs["history"][-1]["val_acc"] < 0.5
    assert table.loc[0.1, "state"] == "complete" and table.loc[0.1, "epochs_run"] == epochs
    assert sweep.epochs_saved(table.reset_index(), spec) == epochs - prune_after
    assert sweep.requeue(study, spec, local=True) == 0   # a pruned point is done


def test_duplicates_are_dropped_without_training(prepared):
    """A done point handed out again (queued twice, or re-handed by GridSampler on an exhausted
    grid) is dropped by `_claim` before training: FAIL with `duplicate_of`, one row per point."""
    spec = make_spec(prepared, {"lr": [0.02, 0.05, 0.1]})
    study = sweep.open_study(spec, None)
    objective = sweep.make_objective(spec, prepared, log=lambda s: None)
    p0 = spec.points()[0]

    # An earlier run finished p0; then p0 was handed out once more (enqueued again, as a re-run
    # that saw it as failed could) while the other points are still to do.
    study.enqueue_trial(p0)
    study.optimize(objective, n_trials=1, catch=(sweep._Duplicate,))
    first = study.trials[0]
    assert first.state == COMPLETE and key(first.params, spec) == key(p0, spec)
    study.enqueue_trial(p0)
    sweep.work(spec, None, prepared, log=lambda s: None)

    study = sweep.open_study(spec, None)
    dup = study.trials[1]
    assert_duplicate(dup, study, spec)
    assert dup.user_attrs["duplicate_of"] == first.number
    by_point = finished_by_point(study, spec)
    assert by_point[key(p0, spec)].number == first.number
    for t in study.trials:
        assert t.state in sweep.FINISHED or t.user_attrs.get("duplicate_of") is not None, t

    # GridSampler re-hands a visited point when asked for more trials on a finished grid: the
    # new trial is dropped too, and the table still has one row per point, the same ones.
    table = sweep.results_table(study, spec)
    n = len(study.trials)
    for _ in range(2):
        study.optimize(objective, n_trials=1, catch=(sweep._Duplicate,))
    study = sweep.open_study(spec, None)
    assert len(study.trials) == n + 2
    for t in study.trials[n:]:
        assert_duplicate(t, study, spec)
        assert study.trials[t.user_attrs["duplicate_of"]].state in sweep.FINISHED
    again = sweep.results_table(study, spec)
    assert len(again) == 3 and list(again["trial"]) == list(table["trial"])
    sweep.work(spec, None, prepared, log=lambda s: None)   # finished: returns at once
    assert len(sweep.open_study(spec, None).trials) == n + 2


# ----------------------------------------------------------------------------- resuming

@pytest.mark.slow
def test_resume_trains_failed_and_interrupted_points_only(prepared):
    """A journal study left by an interrupted run: one point finished, one failed, one trial
    interrupted mid-training, one interrupted before it even got its parameters, one point never
    started. The re-run trains exactly the four unfinished points; a further run trains nothing."""
    spec = make_spec(prepared, {"lr": [0.01, 0.02, 0.05, 0.1, 0.2]})
    study = sweep.open_study(spec, None)
    objective = sweep.make_objective(spec, prepared, log=lambda s: None)
    names = list(spec.grid)

    # trial 0: finished. It is grid point 0, queued by hand, so the GridSampler (which hands
    # trial n grid point n) will hand that point out once more on the re-run.
    study.enqueue_trial(grid_point(study, 0))
    study.optimize(objective, n_trials=1)
    t_failed = study.ask()                                     # trial 1: failed
    failed_point = {n: t_failed.suggest_categorical(n, spec.grid[n]) for n in names}
    study.tell(t_failed, state=FAIL)
    t_running = study.ask()                                    # trial 2: killed while training
    running_point = {n: t_running.suggest_categorical(n, spec.grid[n]) for n in names}
    t_handed = study.ask()                                     # trial 3: killed before suggest
    handed_point = grid_point(study, study.trials[3].system_attrs["grid_id"])
    done_trial = study.trials[0]
    assert [t.state for t in study.trials] == [COMPLETE, FAIL, RUNNING, RUNNING]
    assert study.trials[3].params == {}
    unfinished = [key(p, spec) for p in (failed_point, running_point, handed_point)]
    assert len(set(unfinished + [key(done_trial.params, spec)])) == 4
    assert sweep.status(study, spec)["done"] == [done_trial.params]

    # What a re-run finds: every unfinished point is queued again or still left to the
    # GridSampler; none is lost (GridSampler counts failed and interrupted points as done).
    sweep.requeue(study, spec, local=True)
    st = sweep.status(study, spec)
    assert {key(p, spec) for p in st["waiting"]} == set(unfinished)
    handed = {t.system_attrs["grid_id"] for t in study.trials if "grid_id" in t.system_attrs}
    never_handed = {key(grid_point(study, g), spec) for g in range(5) if g not in handed}
    assert {key(p, spec) for p in st["missing"]} == never_handed - {key(done_trial.params, spec)}
    assert len(st["missing"]) == 1

    lines: list[str] = []
    with watchdog(90):
        study = sweep.run_study(spec, None, workers=2, log=recorder(lines))
    by_point = finished_by_point(study, spec)
    assert by_point[key(done_trial.params, spec)].number == done_trial.number
    for t in study.trials:
        if t.number > 3 and key(t.params, spec) == key(done_trial.params, spec):
            assert_duplicate(t, study, spec)            # never trained again
    for point in unfinished:
        assert by_point[point].number > 3 and by_point[point].user_attrs.get("retry") is True
    assert study.trials[2].state == FAIL and study.trials[2].system_attrs.get("interrupted")
    assert study.trials[3].state == FAIL and study.trials[3].system_attrs.get("interrupted")
    worker_lines = [line for line in lines if line.startswith("[worker")]
    assert sum(": val_acc" in line for line in worker_lines) == 4, lines

    # A finished study trains nothing and starts no worker.
    n = len(study.trials)
    lines.clear()
    study = sweep.run_study(spec, None, workers=2, log=recorder(lines))
    assert lines == [f"study {spec.name()}: 5 of 5 points done; nothing to train"]
    assert len(study.trials) == n


def test_queued_point_finishing_with_one_grid_point_left(prepared):
    """A re-run queues a failed point while one point was never handed out: Optuna's GridSampler
    read the queued trial's (missing) grid id at that moment and the worker died (KeyError)."""
    spec = make_spec(prepared, {"lr": [0.02, 0.05]})
    study = sweep.open_study(spec, None)
    t = study.ask()
    failed = {n: t.suggest_categorical(n, spec.grid[n]) for n in spec.grid}
    study.tell(t, state=FAIL)
    assert sweep.requeue(study, spec, local=True) == 1
    sweep.work(spec, None, prepared, log=lambda s: None)
    study = sweep.open_study(spec, None)
    by_point = finished_by_point(study, spec)
    assert by_point[key(failed, spec)].user_attrs["retry"] is True
    assert len(study.trials) == 3


def test_rerun_breaks_the_lock_of_a_killed_journal_writer(prepared):
    """A worker killed while appending to the journal (a notebook interrupt kills its workers)
    leaves Optuna's lock file behind; the re-run must not sit out Optuna's 30 s grace period."""
    spec = make_spec(prepared, {"lr": [0.02, 0.05]})
    sweep.work(spec, None, prepared, log=lambda s: None)
    journal = paths.data_dir() / "studies" / f"{spec.notebook}.journal"
    lock = Path(optuna.storages.journal.JournalFileOpenLock(str(journal))._lock_file)
    lock.touch()                   # what the killed writer left
    lines: list[str] = []
    start = time.monotonic()
    sweep.run_study(spec, None, workers=1, log=recorder(lines))
    assert time.monotonic() - start < 10
    assert "2 of 2 points done; nothing to train" in lines[0]
    assert not lock.exists()


@pytest.mark.slow
def test_duplicate_handed_out_on_rerun_is_dropped_by_worker(prepared):
    """Through run_study and a real worker process: a done point queued again is not retrained."""
    spec = make_spec(prepared, {"lr": [0.02, 0.05, 0.1]})
    study = sweep.open_study(spec, None)
    objective = sweep.make_objective(spec, prepared, log=lambda s: None)
    p0 = spec.points()[0]
    study.enqueue_trial(p0)
    study.optimize(objective, n_trials=1)
    study.enqueue_trial(p0)   # handed out again
    lines: list[str] = []
    with watchdog(60):
        study = sweep.run_study(spec, None, workers=1, log=recorder(lines))
    assert "1 of 3 points done" in lines[0]
    by_point = finished_by_point(study, spec)
    assert by_point[key(p0, spec)].number == 0
    assert_duplicate(study.trials[1], study, spec)
    assert len(sweep.results_table(study, spec)) == 3


@pytest.mark.slow
def test_journal_study_killed_and_resumed(spawn):
    """SIGKILL the coordinating process and its workers mid-trial; the re-run completes the grid
    and trains none of the points that had finished before the kill."""
    prepared = save_synthetic(SLOW_SAMPLES)
    epochs = SLOW_FIXED["epochs"]
    spec = make_spec(prepared, {"lr": [0.005, 0.01, 0.02, 0.03, 0.04, 0.05]}, **SLOW_FIXED)
    study = sweep.open_study(spec, None)
    script = ("import json, sys\nfrom helpers import sweep\n"
              "spec = sweep.StudySpec(**json.loads(sys.argv[1]))\n"
              "sweep.run_study(spec, None, workers=2)\n")
    coordinator = spawn([sys.executable, "-c", script, json.dumps(asdict(spec))], "coordinator")

    def mid_run():
        trials = study.get_trials()
        complete = [t for t in trials if t.state == COMPLETE]
        running = [t for t in trials if t.state == RUNNING
                   and 1 <= len(t.user_attrs.get("history", [])) <= epochs - 3]
        return complete and running

    wait_for(mid_run, 90, "a finished trial and one in the middle of its epochs", [coordinator])
    os.killpg(coordinator.pid, signal.SIGKILL)
    coordinator.wait(timeout=30)
    wait_for(lambda: not _group_alive(coordinator.pid), 30, "the killed workers to go")

    before = study.get_trials()
    done_before = {key(t.params, spec): t.number for t in before if t.state == COMPLETE}
    killed = [t for t in before if t.state == RUNNING]
    assert done_before and killed, [(t.number, t.state, t.params) for t in before]
    assert len(done_before) < len(spec.points())
    last_before = max(t.number for t in before)

    lines: list[str] = []
    with watchdog(120):
        study = sweep.run_study(spec, None, workers=2, log=recorder(lines))
    assert f"{len(done_before)} of 6 points done" in lines[0]
    by_point = finished_by_point(study, spec)
    for point, number in done_before.items():
        assert by_point[point].number == number          # its result is the one from before
    for t in study.trials[last_before + 1:]:
        if key(t.params, spec) in done_before:
            assert_duplicate(t, study, spec)            # handed out again, but not trained
    for t in killed:
        after = study.trials[t.number]
        assert after.state == FAIL and after.system_attrs.get("interrupted")
        if t.params:
            assert by_point[key(t.params, spec)].number > last_before   # trained again
    trained_after = [t for t in study.trials[last_before + 1:] if t.state in sweep.FINISHED]
    assert len(trained_after) == len(spec.points()) - len(done_before)
    assert all(len(t.user_attrs["history"]) == epochs for t in by_point.values())


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Zombies still count; they are gone once their parent (init) reaps them.
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


# ----------------------------------------------------------------------------- PostgreSQL

@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_two_workers_train_every_point_once(pg_url, capsys):
    """run_study with two local workers on a PostgreSQL study: every point trained once, by
    one of the two; the study can then be joined by notebook name, not by an unknown one."""
    prepared = save_synthetic(2000)   # about half a second a trial: both workers get some
    spec = make_spec(prepared, {"lr": [0.02, 0.05, 0.1], "batch_size": [8, 16]}, epochs=4)
    lines: list[str] = []
    with watchdog(90):
        study = sweep.run_study(spec, pg_url, workers=2, log=recorder(lines))
    by_point = finished_by_point(study, spec)
    assert all(t.state == COMPLETE for t in by_point.values())
    for t in study.trials:
        if t.state not in sweep.FINISHED:
            assert_duplicate(t, study, spec)
    # Both workers trained, and between them exactly the finished trials.
    reported = {}
    for line in lines:
        if ": val_acc" in line:
            worker, rest = line.split("] ", 1)
            reported[int(rest.split()[1])] = worker
    assert sorted(reported) == sorted(t.number for t in by_point.values())
    assert set(reported.values()) == {"[worker 0", "[worker 1"}, lines
    assert len(sweep.results_table(study, spec)) == 6

    # The same study joined from "another machine" by name; an unknown name is refused.
    with pytest.raises(SystemExit) as e:
        sweep.worker_main(["--study", "no_such_study", "--storage", pg_url])
    assert e.value.code == 2 and "no study named 'no_such_study'" in capsys.readouterr().err
    assert sweep.worker_main(["--study", spec.notebook, "--storage", pg_url]) == 0  # finished
    assert len(sweep.open_study(spec, pg_url).trials) == len(study.trials)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_killed_worker_point_is_retrained_by_the_other(pg_url, short_heartbeat, spawn):
    """Two workers from the command line on one PostgreSQL study; one is SIGKILLed mid-trial.
    Its trial stops beating, the survivor fails it (heartbeat) and trains its point again from the
    retry queued by RetryHeartbeatStaleTrialCallback. (A short heartbeat is safe here: after the kill only
    one worker is alive, and a worker never judges trials while it trains one.)"""
    prepared = save_synthetic(SLOW_SAMPLES)
    epochs = SLOW_FIXED["epochs"]
    spec = make_spec(prepared, {"lr": [0.005, 0.01, 0.02, 0.03, 0.04, 0.05]}, **SLOW_FIXED)
    study = sweep.open_study(spec, pg_url)
    victim = spawn(worker_cmd(spec, pg_url), "worker0")
    survivor = spawn(worker_cmd(spec, pg_url), "worker1")

    def both_mid_trial():
        running = [t for t in study.get_trials(states=(RUNNING,))
                   if 1 <= len(t.user_attrs.get("history", [])) <= epochs - 3]
        return len({key(t.params, spec) for t in running}) == 2

    wait_for(both_mid_trial, 90, "both workers in the middle of a trial", [victim, survivor])
    os.killpg(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    assert survivor.wait(timeout=120) == 0, survivor.log_path.read_text()[-3000:]

    study = sweep.open_study(spec, pg_url)
    by_point = finished_by_point(study, spec)
    failed = [t for t in study.trials if t.state == FAIL and "duplicate_of" not in t.user_attrs]
    assert len(failed) == 1, [(t.number, t.state, t.params, t.user_attrs.keys()) for t in study.trials]
    killed = failed[0]
    assert 1 <= len(killed.user_attrs["history"]) < epochs          # killed mid-trial
    retry = by_point[key(killed.params, spec)]
    assert retry.state == COMPLETE and retry.system_attrs.get("failed_trial") == killed.number
    assert retry.params == killed.params and len(retry.user_attrs["history"]) == epochs
    for t in study.trials:
        if t.state not in sweep.FINISHED and t.number != killed.number:
            assert_duplicate(t, study, spec)
    survivor_lines = survivor.log_path.read_text()
    assert f"trial {retry.number} " in survivor_lines                 # the survivor retrained it
    assert f"trial {retry.number} " not in victim.log_path.read_text()

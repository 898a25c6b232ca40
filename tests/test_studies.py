"""The study engine (`helpers.studies` over `helpers.workers`) on real storage and real processes.

Nothing is mocked: studies live in real Optuna journal files (under the test's private
DIGITS_DATA_DIR) or in a real PostgreSQL server the tests start themselves; workers are real
processes the loop spawns, killed with real signals where a test needs a crash.
Models are tiny and the digits synthetic, so a task takes a fraction of a second, or a few seconds
where a test must catch one mid-run.
"""
from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import data, paths, storage as S, studies, workers as W

try:  # tests/ as a package or as a plain folder on sys.path
    from . import pg
    from .conftest import synthetic_digits
except ImportError:
    import pg
    from conftest import synthetic_digits

WORKER = b"multiprocessing.spawn"  # what a worker's command line says (it is a spawned child)
FIXED = dict(hidden=[16], dropout=[0.0], momentum=0.9, weight_decay=0.0, schedule="constant")
QUICK = dict(FIXED, batch_size=64)
# Slow enough to be caught mid-run (a few seconds per task), still quick in all.
SLOW = dict(hidden=[32, 16], dropout=[0.1, 0.1], momentum=0.9, weight_decay=0.0, schedule="constant",
            batch_size=8)


def save_synthetic(n: int = 1000) -> data.Prepared:
    """Synthetic digits saved as this test's prepared data (where workers load it from)."""
    images, labels = synthetic_digits(n)
    train_idx, val_idx = data.split_indices(labels, 0.25, 0)
    prepared = data.Prepared(images, labels, train_idx, val_idx, "synthetic", {"source": "synthetic", "n": n})
    data.save_prepared(prepared)
    return prepared


@pytest.fixture
def prepared() -> data.Prepared:
    return save_synthetic()


def quiet(lines: list[str] | None = None):
    def log(line: str) -> None:
        if lines is not None:
            lines.append(line)
        print(line)
    return log


def run_lr(lrs=(0.01, 0.1), seeds=(0, 1), epochs=2, notebook="t_lr", fixed=QUICK, **kw) -> studies.StudyResult:
    return studies.run(notebook, grid={"lr": list(lrs)}, epochs=epochs, seeds=list(seeds),
                       log=kw.pop("log", quiet()), workers=kw.pop("workers", 2), **fixed, **kw)


_storages: dict = {}


def the_study(result_or_name, url=None) -> optuna.Study:
    name = getattr(result_or_name, "study_name", result_or_name)
    key = (url, name, str(paths.data_dir()))  # one connection pool per database, not one per poll
    if key not in _storages:
        _storages[key] = S.open_storage(url, name)
    return optuna.load_study(study_name=name, storage=_storages[key])


def completed_once(study: optuna.Study) -> Counter:
    """Every task of the study has exactly one COMPLETE trial; no trial lacks a task."""
    trials = study.get_trials()
    assert all(W.task_of(t) is not None for t in trials), "a trial the engine did not queue"
    counts = Counter(W.task_key(W.task_of(t)) for t in trials if t.state == TrialState.COMPLETE)
    assert all(c == 1 for c in counts.values()), f"tasks trained more than once: {counts}"
    return counts


def worker_pids() -> list[int]:
    """This process's workers: the loop's multiprocessing children."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        if WORKER in cmd and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            found.append(int(proc.name))
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class Background:
    """studies.run in a thread; `result` or the exception it raised when it ends."""

    def __init__(self, fn):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:  # noqa: BLE001 (reported by join)
            self.error = e

    def stop(self, seconds: float = 60) -> None:
        """Kill its workers until the coordinator gives up (each task fails MAX_ATTEMPTS times)."""
        deadline = time.monotonic() + seconds
        while self.thread.is_alive() and time.monotonic() < deadline:
            for pid in worker_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.thread.join(0.5)

    def join(self, timeout: float):
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.stop()
            pytest.fail(f"the study did not finish within {timeout} s (its workers were killed)")
        if self.error:
            raise self.error
        return self.result


@pytest.fixture
def background():
    """Start a study in a thread; at teardown, whatever happened, stop it before the next test."""
    started: list[Background] = []

    def start(fn) -> Background:
        started.append(Background(fn))
        return started[-1]

    yield start
    for job in started:
        job.stop()



def running_trial(name: str, url=None, task_filter=lambda task: True):
    """A RUNNING trial that a worker has recorded as its own, or None."""
    try:
        study = the_study(name, url)
    except KeyError:
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("worker") and task_filter(W.task_of(t)):
            return t
    return None


def study_name_for(fixed: dict, prepared: data.Prepared) -> str:
    """The name studies.run gives (it depends on the settings no study varies, and the data)."""
    return studies.study_name(spec_for(fixed, prepared))


def spec_for(fixed: dict, prepared: data.Prepared) -> dict:
    from helpers import params as P

    checked = P.check_settings(len(prepared.train_idx), **fixed)
    return {"fixed": {k: v for k, v in checked.items() if k not in studies.VARIED}, "data": prepared.fingerprint()}


def new_study(url, fixed: dict, prepared: data.Prepared, notebook: str) -> tuple:
    """(storage, study) as `studies.run` creates it for `notebook`, before it queues anything."""
    name = study_name_for(fixed, prepared)
    storage = S.open_storage(url, name)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("spec", spec_for(fixed, prepared))
    study.set_user_attr("notebooks", [notebook])
    return storage, study


# ----------------------------------------------------------------------------------- the queue

def test_every_task_is_trained_exactly_once_and_a_rerun_trains_nothing(prepared):
    lines: list[str] = []
    result = run_lr(lrs=(0.01, 0.05, 0.1), seeds=(0, 1, 2), log=quiet(lines))
    study = the_study(result)
    counts = completed_once(study)
    assert len(counts) == 9 and len(study.trials) == 9
    table = result.table
    assert list(table["n_seeds"]) == [3, 3, 3]
    assert {"val_acc_mean", "val_acc_std", "n_seeds", "curve_mean", "curve_std"} <= set(table.columns)
    saved = json.loads(result.path.read_text())
    assert saved["rows"][0]["n_seeds"] == 3 and "val_acc_mean" in saved["rows"][0]
    assert saved["versions"]["optuna"] == optuna.__version__
    again = run_lr(lrs=(0.01, 0.05, 0.1), seeds=(0, 1, 2), log=quiet(lines))
    assert len(the_study(again).trials) == 9, "a finished study trains nothing"
    assert "9 done, 0 to train" in lines[-1]


def elsewhere(monkeypatch, tmp_path, name: str) -> None:
    """A fresh data folder holding the same prepared digits: its studies start empty."""
    monkeypatch.setenv("DIGITS_DATA_DIR", str(tmp_path / name))
    save_synthetic()


def test_two_workers_give_bit_identical_numbers_to_one(prepared, monkeypatch, tmp_path):
    # one worker trains the six tasks as one stack; two share them out as two stacks of three
    tasks = dict(lrs=(0.01, 0.05, 0.1), seeds=(0, 1))
    one = the_study(run_lr(workers=1, **tasks))
    elsewhere(monkeypatch, tmp_path, "two")
    two = the_study(run_lr(workers=2, **tasks))
    values = lambda study: {W.task_key(W.task_of(t)): t.value for t in study.trials  # noqa: E731
                            if t.state == TrialState.COMPLETE}
    assert len(values(one)) == 6 and values(one) == values(two)


def test_04_05_and_06_share_one_study_and_train_a_point_once(prepared, monkeypatch, tmp_path):
    # 04 varies lr at batch 64; 05 varies the batch size at lr 0.1; 06 crosses them
    run_04 = lambda: studies.run("04_lr_sweep", grid={"lr": [0.01, 0.1]}, epochs=2, seeds=[0, 1], workers=1,  # noqa: E731
                                 log=quiet(), **QUICK)
    lr = run_04()
    batch = studies.run("05_batch_sweep", grid={"batch_size": [32, 64]}, lr=0.1, epochs=2, seeds=[0], workers=1,
                        log=quiet(), **FIXED)
    grid = {"lr": [0.01, 0.1], "batch_size": [32, 64]}
    lines: list[str] = []
    crossed = studies.run("06_grid_search", grid=grid, epochs=2, seeds=[0], workers=1, log=quiet(lines), **FIXED)
    assert lr.study_name == batch.study_name == crossed.study_name
    study = the_study(crossed)
    assert len(completed_once(study)) == 6 and len(study.trials) == 6  # 04's two seeds, then one point
    # (0.01, 64) and (0.1, 64) from 04, (0.1, 32) from 05 ((0.1, 64) is in both: trained once)
    assert "3 done, 1 to train" in "\n".join(lines)
    assert crossed.extra["tasks"] == {"total": 4, "trained": 1, "done_before": 3}
    # each notebook's table holds its own points and seeds only (06 asked for seed 0 alone)
    assert list(crossed.table["n_seeds"]) == [1, 1, 1, 1]
    again = run_04().table
    assert list(again["lr"]) == [0.01, 0.1] and "batch_size" not in again and list(again["n_seeds"]) == [2, 2]
    at_64 = crossed.table[crossed.table["batch_size"] == 64]
    assert [v[0] for v in again["val_acc"]] == [v[0] for v in at_64["val_acc"]]
    # the same numbers as training every point in a study of its own
    elsewhere(monkeypatch, tmp_path, "alone")
    alone = the_study(studies.run("06_grid_search", grid=grid, epochs=2, seeds=[0], workers=1, log=quiet(), **FIXED))
    values = lambda s: {W.task_key(W.task_of(t)): (t.value, t.user_attrs["history"][-1]["val_loss"])  # noqa: E731
                        for t in s.trials if t.state == TrialState.COMPLETE}
    assert len(values(alone)) == 4 and values(alone).items() <= values(study).items()
    # other fixed settings: another study; another budget: other tasks
    other = studies.run("06_grid_search", grid=grid, epochs=2, seeds=[0], workers=1, log=quiet(),
                        **{**FIXED, "momentum": 0.5})
    longer = studies.run("06_grid_search", grid=grid, epochs=3, seeds=[0], workers=1, log=quiet(), **FIXED)
    assert other.study_name != alone.study_name and other.extra["tasks"]["trained"] == 4
    assert longer.study_name == alone.study_name and longer.extra["tasks"]["trained"] == 4


def test_more_seeds_reuse_the_finished_ones(prepared):
    run_lr(seeds=(0,))
    result = run_lr(seeds=(0, 1))
    study = the_study(result)
    completed_once(study)
    assert len(study.trials) == 4
    assert list(result.table["n_seeds"]) == [2, 2]


def test_conclusion_names_the_best_by_mean_and_what_noise_cannot_separate():
    import pandas as pd

    table = pd.DataFrame([
        {"lr": 0.1, "n_seeds": 3, "val_acc_mean": 0.980, "val_acc_std": 0.001, "diverged": 0},
        {"lr": 0.3, "n_seeds": 3, "val_acc_mean": 0.979, "val_acc_std": 0.001, "diverged": 0},
        {"lr": 0.5, "n_seeds": 3, "val_acc_mean": 0.970, "val_acc_std": 0.001, "diverged": 0},
        {"lr": 0.01, "n_seeds": 1, "val_acc_mean": 0.985, "val_acc_std": float("nan"), "diverged": 0},
    ])
    best, close, noise = studies.conclude(table, ["lr"])
    assert best["lr"] == 0.1, "the best is chosen among the points with the most seeds"
    assert noise == pytest.approx(0.001)
    assert [c["lr"] for c in close] == [0.3, 0.01]
    assert close[0]["se"] == pytest.approx(0.001 * (2 / 3) ** 0.5)


def test_bad_parameters_stop_before_any_work(prepared):
    from helpers.params import ParameterError

    with pytest.raises(ParameterError, match="parameter 'seeds'"):
        run_lr(seeds=(0, 0))
    with pytest.raises(ParameterError, match=r"parameter 'learning_rates\[1\]'"):
        run_lr(lrs=(0.1, -1))
    with pytest.raises(ParameterError, match="parameter 'budget'"):
        run_lr(budget="huge")
    with pytest.raises(S.StorageError, match="carries a password.*PGPASSWORD"):
        run_lr(storage="postgresql://u:hunter2@127.0.0.1/db")
    with pytest.raises(S.StorageError, match="only PostgreSQL"):
        run_lr(storage="sqlite:///x.db")
    assert not (paths.data_dir() / "studies").exists() or not list((paths.data_dir() / "studies").iterdir())


def test_full_budget_writes_under_figures_full(prepared, monkeypatch):
    from helpers import params as P

    monkeypatch.setattr(P, "FULL_EPOCHS", 2)
    result = run_lr(lrs=(0.0005, 0.1), budget="full", seeds=(0,))
    assert result.path == paths.figures_dir() / "full" / "t_lr.json"
    assert set(result.table["epochs"]) == {2}
    default = run_lr(lrs=(0.0005, 0.1), epochs=1, seeds=(0, 1))
    assert default.full is not None and default.full["n_points"] == 2
    assert -1 <= default.full["spearman"] <= 1
    saved = json.loads(default.path.read_text())
    assert saved["against_full"]["full_best"]["lr"] == 0.1 and default.best["lr"] == 0.1
    assert default.full["gap"] == 0 and default.full["spearman"] == pytest.approx(1)


# ---------------------------------------------------------------------- dead workers, interrupts

def test_a_killed_worker_s_tasks_are_trained_again_by_another(prepared, background, record_property):
    big = save_synthetic(3000)
    name = study_name_for(SLOW, big)
    job = background(lambda: run_lr(lrs=(0.01, 0.02), seeds=(0, 1), epochs=3, notebook="t_kill", fixed=SLOW))
    victim = wait_for(lambda: running_trial(name), 60, "a running trial")
    pid = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    job.join(180)
    study = the_study(name)
    assert len(completed_once(study)) == 4
    retry = [t for t in study.trials if W.task_key(W.task_of(t)) == W.task_key(W.task_of(victim))
             and t.user_attrs.get("attempt") == 2]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    # reported, not asserted (timings belong in benchmarks): how soon the point was trained again
    record_property("seconds_from_kill_to_retry", retry[0].datetime_start.timestamp() - killed_at)
    print(f"killed at +0 s; retried at +{retry[0].datetime_start.timestamp() - killed_at:.2f} s")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all("killed by SIGKILL" in t.user_attrs["failure"] for t in failed)
    assert f"worker {pid} killed by SIGKILL while training lr=" in failed[0].user_attrs["failure"]
    assert not worker_pids()


def test_a_task_that_kills_its_worker_three_times_is_recorded_failed(prepared, background):
    big = save_synthetic(3000)
    name = study_name_for(SLOW, big)
    job = background(lambda: run_lr(lrs=(0.01, 0.02), seeds=(0,), epochs=3, notebook="t_poison", fixed=SLOW))
    killed = 0
    is_poison = lambda task: task["lr"] == 0.02  # noqa: E731
    while killed < S.MAX_ATTEMPTS:
        t = wait_for(lambda: running_trial(name, task_filter=is_poison), 90, f"attempt {killed + 1}")
        os.kill(int(t.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        wait_for(lambda: the_study(name).trials[t.number].state == TrialState.FAIL, 30, "the failure recorded")
        killed += 1
    result = job.join(180)
    row = result.table.set_index("lr").loc[0.02]
    assert row["state"] == "failed" and row["n_seeds"] == 0
    assert "killed by SIGKILL while training lr=0.02" in row["failure"]
    assert result.table.set_index("lr").loc[0.01, "n_seeds"] == 1
    # a re-run does not try it again: the count holds across runs
    again = run_lr(lrs=(0.01, 0.02), seeds=(0,), epochs=3, notebook="t_poison", fixed=SLOW)
    assert len(the_study(again).trials) == len(the_study(result).trials)


def test_a_worker_that_raises_stops_the_study_with_its_last_lines_and_costs_no_attempt(prepared):
    storage, study = new_study(None, QUICK, prepared, "t_raise")
    task = {"lr": 0.01, "batch_size": 64, "seed": 0, "epochs": 1, "fraction": 1.0}
    W.enqueue(study, [task])
    paths.prepared_path().unlink()  # a bug's stand-in: the worker cannot load its data
    with pytest.raises(RuntimeError, match=r"exited with status 1; its last lines:(.|\n)*no prepared data"):
        W.run_trials(study, storage, 1, quiet())
    failed, = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs["interrupted"]
    assert W.enqueue(study, [task])["queued"] == [task], "the task is queued again, as a first attempt"
    assert W.attempt(study.get_trials()[-1]) == 1 and not worker_pids()


def test_an_interrupted_coordinator_leaves_no_worker_and_resumes(prepared, tmp_path):
    save_synthetic(3000)
    # Ctrl-C as in a terminal or a kernel, even where this test was started in the background
    # (a shell without job control starts background commands with SIGINT ignored)
    script = ("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "from helpers import studies\n"
              f"studies.run('t_int', grid={{'lr': [0.01, 0.02]}}, epochs=3, seeds=[0, 1], workers=2, **{SLOW!r})\n")
    coordinator = subprocess.Popen([sys.executable, "-c", script], cwd=paths.ROOT, env=os.environ.copy(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    name = study_name_for(SLOW, data.load_prepared())
    t = wait_for(lambda: running_trial(name), 60, "a running trial")
    pid = int(t.user_attrs["worker"].rsplit(":", 1)[1])
    coordinator.send_signal(signal.SIGINT)
    assert "KeyboardInterrupt" in coordinator.communicate(timeout=30)[1]
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the worker to be gone")
    interrupted = [t for t in the_study(name).trials if t.user_attrs.get("interrupted")]
    assert interrupted and all(t.state == TrialState.FAIL for t in interrupted)
    result = run_lr(lrs=(0.01, 0.02), seeds=(0, 1), epochs=3, notebook="t_int", fixed=SLOW)
    assert len(completed_once(the_study(result))) == 4
    assert (result.table["state"] == "complete").all()


def test_workers_leave_when_their_coordinator_is_killed(prepared):
    save_synthetic(3000)
    script = ("from helpers import studies\n"
              f"studies.run('t_orphan', grid={{'lr': [0.01, 0.02]}}, epochs=3, seeds=[0, 1], workers=2, **{SLOW!r})\n")
    coordinator = subprocess.Popen([sys.executable, "-c", script], cwd=paths.ROOT, env=os.environ.copy(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    name = study_name_for(SLOW, data.load_prepared())
    t = wait_for(lambda: running_trial(name), 60, "a running trial")
    pid = int(t.user_attrs["worker"].rsplit(":", 1)[1])
    coordinator.kill()
    coordinator.wait()
    def gone() -> bool:
        try:  # exited: no entry, or a zombie nobody has reaped yet
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True
    wait_for(gone, 10, "the orphaned worker to exit")


def test_relative_settings_mean_the_same_folder_for_kernel_and_workers(tmp_path, monkeypatch):
    relative = os.path.relpath(tmp_path / "reldata", paths.ROOT)
    monkeypatch.setenv("DIGITS_DATA_DIR", relative)
    monkeypatch.chdir(paths.NOTEBOOKS)  # where a kernel runs
    assert paths.data_dir() == (tmp_path / "reldata").resolve()
    save_synthetic()
    result = run_lr(seeds=(0,))  # its workers start in the kernel's folder, and read the same one
    assert len(completed_once(the_study(result))) == 2
    assert (tmp_path / "reldata" / "studies" / f"{result.study_name}.journal").exists()


def test_the_engine_uses_only_optunas_documented_api():
    """No `_private` attribute and no undocumented system attribute in the modules using Optuna."""
    offenders = []
    for path in sorted((paths.ROOT / "helpers").glob("*.py")):
        source = path.read_text()
        if "optuna" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Attribute):
                continue
            # our own objects (self, cls) may have private parts; os._exit is public Python
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr.startswith("_") and not node.attr.startswith("__") and owner not in ("self", "cls", "os"):
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
            if node.attr == "system_attrs":
                offenders.append(f"{path.name}:{node.lineno}: .system_attrs")
        for word in ("fixed_params", "grid_id"):  # Optuna's undocumented system attributes
            if f'"{word}"' in source or f"'{word}'" in source:
                offenders.append(f"{path.name}: {word}")
    assert not offenders, offenders


# ------------------------------------------------------------------------------------ PostgreSQL

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
def short_heartbeat(monkeypatch):
    """Heartbeat every second, dead after three silent ones: for this process and its workers."""
    monkeypatch.setenv("DIGITS_HEARTBEAT_S", "1")
    monkeypatch.setenv("DIGITS_GRACE_S", "3")
    monkeypatch.setattr(S, "HEARTBEAT_S", 1)
    monkeypatch.setattr(S, "GRACE_S", 3)


def remote_worker(url: str, notebook: str, tmp_path: Path, name: str = "remote") -> subprocess.Popen:
    """A worker as another machine starts one: the URL in DIGITS_STORAGE, the notebook by name."""
    log = open(tmp_path / f"{name}.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "helpers.workers", "--notebook", notebook], cwd=paths.ROOT,
                         env={**os.environ, S.STORAGE_ENV: url}, stdout=log, stderr=subprocess.STDOUT)
    p.log = tmp_path / f"{name}.log"
    return p


@pytest.mark.postgres
def test_postgres_remote_worker_joins_by_notebook_and_no_task_is_trained_twice(pg_server, tmp_path,
                                                                               monkeypatch, background):
    url = pg_server.create_database()
    monkeypatch.setenv(S.STORAGE_ENV, url)
    save_synthetic(3000)
    job = background(lambda: run_lr(lrs=(0.01, 0.02), seeds=tuple(range(6)), epochs=4, notebook="t_pg",
                                    fixed=SLOW, workers=1))
    name = study_name_for(SLOW, data.load_prepared())

    def queued():
        try:
            return the_study(name, url).get_trials(states=(TrialState.WAITING,))
        except KeyError:
            return None
    wait_for(queued, 60, "the study to queue its tasks")
    remote = remote_worker(url, "t_pg", tmp_path)  # starts as the local worker does: they share the queue
    result = job.join(240)
    remote.wait(timeout=60)
    log = remote.log.read_text()
    assert remote.returncode == 0, log
    assert "trained" in log, f"the remote worker trained nothing:\n{log}"
    assert len(completed_once(the_study(result, url))) == 12
    # the study is finished now: a late worker is told so, clearly
    late = remote_worker(url, "t_pg", tmp_path, "late")
    late.wait(timeout=60)
    assert late.returncode == 2 and "no unfinished study of t_pg" in late.log.read_text()


@pytest.mark.postgres
def test_postgres_silent_worker_is_found_by_heartbeat_and_its_task_retried(pg_server, tmp_path, monkeypatch,
                                                                           short_heartbeat):
    url = pg_server.create_database()
    monkeypatch.setenv(S.STORAGE_ENV, url)
    prepared = save_synthetic(3000)
    # the study as its notebook makes it, queued; a remote worker takes its tasks, then goes silent
    storage, study = new_study(url, SLOW, prepared, "t_hb")
    W.enqueue(study, [{"lr": lr, "batch_size": 8, "seed": 0, "epochs": 3, "fraction": 1.0} for lr in (0.01, 0.02)])
    remote = remote_worker(url, "t_hb", tmp_path)
    held = wait_for(lambda: [t for t in study.get_trials(states=(TrialState.RUNNING,)) if W.holder(t)],
                    60, "the remote worker to hold its tasks")
    os.kill(remote.pid, signal.SIGKILL)
    remote.wait()
    # the notebook runs again: only the silent worker's heartbeat can tell it is gone
    result = run_lr(lrs=(0.01, 0.02), seeds=(0,), epochs=3, notebook="t_hb", fixed=SLOW, workers=1)
    study = the_study(result, url)
    assert len(completed_once(study)) == 2
    failed = {t.number for t in study.trials if t.state == TrialState.FAIL}
    assert {t.number for t in held} <= failed, "the silent worker's trials were failed by the heartbeat check"
    retried = [t for t in study.trials
               if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) is not None]
    assert retried and all(t.state == TrialState.COMPLETE for t in retried)
    assert (result.table["state"] == "complete").all()


@pytest.mark.postgres
def test_postgres_a_heartbeat_retry_is_taken_alone(pg_server, monkeypatch, prepared, short_heartbeat):
    """Optuna's retry copies the stale trial's user attrs (`attempt: 1`, the dead worker's token):
    it must still count as a retry, which a worker takes alone."""
    url = pg_server.create_database()
    name = study_name_for(QUICK, prepared)
    storage = S.open_storage(url, name)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    W.enqueue(study, [{"lr": lr, "seed": 0, "epochs": 1, "fraction": 1.0} for lr in (0.01, 0.02)])
    (dead, _), = W.claim(study, storage, "elsewhere:1", 1)  # then its worker goes silent
    time.sleep(S.GRACE_S + 1)
    optuna.storages.fail_stale_trials(study)
    retry, = [t for t in study.get_trials(states=(TrialState.WAITING,))
              if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == dead.number]
    assert retry.user_attrs["attempt"] == 1 and W.attempt(retry) == 2
    assert retry.user_attrs["worker"] == "elsewhere:1" and W.holder(retry) is None  # a copy signs nothing
    # the other task is first in the queue and of the same stack: it must not take the retry along
    first = W.claim(study, storage, "here:2", 2)
    second = W.claim(study, storage, "here:2", 2)
    assert [W.task_of(t)["lr"] for t, _ in first] == [0.02]
    assert [t.number for t, _ in second] == [retry.number]
    assert W.holder(study.trials[retry.number]) == "here:2"


@pytest.mark.postgres
def test_postgres_restarted_mid_study_the_study_waits_and_completes(pg_server, monkeypatch, background):
    url = pg_server.create_database()
    monkeypatch.setenv(S.STORAGE_ENV, url)
    save_synthetic(3000)
    lines: list[str] = []
    job = background(lambda: run_lr(lrs=(0.01, 0.02), seeds=(0, 1), epochs=4, notebook="t_restart", fixed=SLOW,
                                    workers=2, log=quiet(lines)))
    name = study_name_for(SLOW, data.load_prepared())
    # mid-training: a worker has reported an epoch of a task that is still running
    wait_for(lambda: running_trial(name, url, lambda task: True) is not None
             and any(t.intermediate_values for t in the_study(name, url).get_trials(states=(TrialState.RUNNING,))),
             120, "a task to be mid-training")
    pg_server.restart()
    result = job.join(240)
    study = the_study(result, url)
    assert len(completed_once(study)) == 4
    assert (result.table["state"] == "complete").all()
    assert any("study database is back" in line for line in lines), "\n".join(lines[-30:])


@pytest.mark.postgres
def test_postgres_a_worker_started_while_the_database_is_down_waits_for_it(pg_server, monkeypatch, prepared):
    url = pg_server.create_database()
    name = study_name_for(QUICK, prepared)
    optuna.create_study(study_name=name, storage=S.open_storage(url, name))
    outage = threading.Thread(target=pg_server.down_for, args=(3,))
    outage.start()
    time.sleep(0.5)
    lines: list[str] = []
    storage, study = S.connect(url, name, S.Outage(lines.append))  # as `helpers.workers --study` does
    outage.join()
    assert study.study_name == name and lines[0].startswith("the study database is unreachable")
    assert lines[-1].startswith("the study database is back")


@pytest.mark.postgres
def test_postgres_retries_are_bounded_across_reruns(pg_server, monkeypatch, prepared):
    url = pg_server.create_database()
    monkeypatch.setenv(S.STORAGE_ENV, url)
    storage, study = new_study(url, QUICK, prepared, "t_bound")
    task = {"lr": 0.01, "batch_size": 64, "seed": 0, "epochs": 1, "fraction": 1.0}
    for attempt in range(S.MAX_ATTEMPTS):  # three crashed runs of the same task, as a worker leaves them
        W.enqueue(study, [task])
        (t, tid), = W.claim(study, storage, "elsewhere:1", 1)
        storage.set_trial_user_attr(tid, "failure", "worker 1 killed by SIGKILL")
        study.tell(t.number, state=TrialState.FAIL)
    result = run_lr(lrs=(0.01, 0.1), seeds=(0,), epochs=1, notebook="t_bound")
    assert len(the_study(result, url).trials) == S.MAX_ATTEMPTS + 1, "the failed task was not queued again"
    row = result.table.set_index("lr").loc[0.01]
    assert row["state"] == "failed" and "SIGKILL" in row["failure"]


@pytest.mark.postgres
def test_postgres_unreachable_or_wrong_url_fails_fast_without_the_password(pg_server, monkeypatch, prepared):
    for url, what in [(f"postgresql://x:hunter2@127.0.0.1:{pg_server.port}/no_such_db", "no_such_db"),
                      ("postgresql://x:hunter2@10.255.255.1:5432/studies", "10.255.255.1")]:
        monkeypatch.setenv(S.STORAGE_ENV, url)
        start = time.monotonic()
        with pytest.raises(S.StorageError) as info:
            run_lr(seeds=(0,))
        assert time.monotonic() - start < 10
        message = str(info.value)
        assert what in message and "hunter2" not in message


@pytest.mark.postgres
def test_postgres_password_is_never_written_down_nor_in_argv(pg_server, tmp_path, monkeypatch):
    secret = "Sw0rdf1sh-never-on-disk"
    url = pg_server.password_database(secret)
    monkeypatch.setenv(S.STORAGE_ENV, url)
    save_synthetic(3000)
    out = tmp_path / "executed.ipynb"
    params = {"learning_rates": [0.01, 0.02], "epochs": 2, "seeds": [0, 1], "hidden": [32, 16], "batch_size": 8,
              "workers": 2}
    args = [sys.executable, "-m", "papermill", str(paths.NOTEBOOKS / "04_lr_sweep.ipynb"), str(out),
            "--cwd", str(paths.NOTEBOOKS), "-k", "python3", "--log-output", "-y", json.dumps(params)]
    log = tmp_path / "papermill.log"
    with open(log, "w") as fh:
        run = subprocess.Popen(args, env=os.environ.copy(), stdout=fh, stderr=subprocess.STDOUT)
        argv_seen = []
        while run.poll() is None:
            for proc in Path("/proc").iterdir():
                try:
                    cmd = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if WORKER in cmd:
                    argv_seen.append(cmd)
            time.sleep(0.2)
    assert run.returncode == 0, log.read_text()[-3000:]
    assert argv_seen, "saw no worker process"
    assert not [a for a in argv_seen if secret.encode() in a]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in written) and out in written
    leaks = [str(p) for p in written if secret.encode() in p.read_bytes()]
    assert not leaks, f"the password is written in {leaks}"
    recorded = json.loads((paths.figures_dir() / "04_lr_sweep.json").read_text())["parameters"]["storage"]
    assert recorded == url.replace(secret, "***")


def test_one_coordinator_at_a_time_runs_a_journal_study(prepared):
    name = study_name_for(QUICK, prepared)
    claim = S.journal_path(name).with_suffix(".coordinator")
    claim.parent.mkdir(parents=True, exist_ok=True)
    # another notebook's kernel: it holds the claim and has written its pid there
    other = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\nf = open(sys.argv[1], 'a+')\n"
                              "fcntl.flock(f, fcntl.LOCK_EX)\nf.write(str(os.getpid()))\nf.flush()\n"
                              "print('held', flush=True)\ntime.sleep(60)", str(claim)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=f"being run by process {other.pid}"):
            run_lr(seeds=(0,))
    finally:
        other.kill()
        other.wait()
    result = run_lr(seeds=(0,))  # its process is gone, and its lock with it: the file is taken over
    assert len(completed_once(the_study(result))) == 2
    assert not claim.exists(), "released at the end"

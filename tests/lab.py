"""A throwaway JupyterLab for browser tests, driven by Debian's Chromium through Playwright.

`LabServer` runs `python -m jupyterlab` on 127.0.0.1 and a free port, without token or
password, in a temporary root; every Jupyter and IPython folder it would write in the home
directory points into the same temporary folder, and so do DIGITS_DATA_DIR / DIGITS_FIGURES_DIR,
so a run leaves the checkout and the home directory as they were. The kernels it starts are live
(not headless): DIGITS_HEADLESS is removed from their environment.

`LabPage` opens a notebook, runs all its cells through JupyterLab's own command (what Run > Run
All Cells does), saves it, and reads the saved file back: an error output there is a traceback.
(In the page, error and stderr outputs are rendered alike, with the stderr MIME type.)
JupyterLab is started with `expose_app_in_browser`, its documented hook for browser tests.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from helpers import notebooks, paths

# System Chromium in a closed network: without the background-networking flags it tries to
# reach Google's services and the sandbox tries for namespaces a container may not give.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]

# Which notebooks must have run before each one: 01 prepares the data, 06 saves the model.
NEEDS = {name: ["01_data"] for name in notebooks.ORDER}
NEEDS["01_data"] = []
NEEDS["07_test_eval"] = ["01_data", "06_grid_search"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_notebooks(folder: Path) -> None:
    """Copies of the seven notebooks with SMOKE_PARAMETERS injected, outputs cleared.

    papermill's prepare_only injects the parameters cell exactly as a papermill run would, without
    running anything; the committed outputs are dropped so that a cell the browser never ran shows
    up as unrun (no execution count) instead of passing on its old output.
    """
    import nbformat
    import papermill as pm

    folder.mkdir(parents=True, exist_ok=True)
    for name in notebooks.ORDER:
        out = folder / f"{name}.ipynb"
        pm.execute_notebook(str(paths.NOTEBOOKS / f"{name}.ipynb"), str(out),
                            parameters=notebooks.SMOKE_PARAMETERS[name], prepare_only=True,
                            progress_bar=False)
        nb = nbformat.read(out, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        nbformat.write(nb, out)


class LabServer:
    """`python -m jupyterlab` in `base/root`; its log is `base/server.log`. Use as a context manager."""

    def __init__(self, base: Path, port: int | None = None):
        self.base = Path(base)
        self.root = self.base / "root"
        self.log = self.base / "server.log"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    def environment(self) -> dict[str, str]:
        home = self.base / "home"
        env = dict(os.environ)
        env.pop("DIGITS_HEADLESS", None)   # the kernels must show the live widgets
        env.update({
            "DIGITS_DATA_DIR": str(self.base / "data"),
            "DIGITS_FIGURES_DIR": str(self.base / "figures"),
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython"),
        })
        return env

    def _write_settings(self, folder: Path) -> None:
        """No news or update toasts (they would ask the network, and can cover the page)."""
        target = folder / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))

    def start(self, timeout: float = 90) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        settings, workspaces = self.base / "home" / "lab-settings", self.base / "home" / "lab-workspaces"
        self._write_settings(settings)
        workspaces.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
               "--IdentityProvider.token=", "--ServerApp.password=",
               f"--ServerApp.root_dir={self.root}",
               "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
               "--LabApp.extension_manager=readonly",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self._log_file = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.environment(), stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with status {self.proc.returncode} before "
                                   f"answering; its log: {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/api", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer on {self.url}/api within {timeout:.0f} s; "
                           f"its log: {self.log}")

    def stop(self) -> None:
        """SIGTERM: the server shuts its kernels down and exits (killed after 30 s); never raises."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._log_file:
            self._log_file.close()
        self.proc = None

    def __enter__(self) -> "LabServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Run:
    """What one Run All left in the saved notebook."""

    name: str
    seconds: float
    completed: bool                  # JupyterLab's run-all reported every cell succeeded
    errors: list[str] = field(default_factory=list)    # "cell N: Name: value" per error output
    unrun: list[int] = field(default_factory=list)     # code cells without an execution count
    stderr: int = 0                  # stderr stream outputs (warnings): allowed, counted

    @property
    def ok(self) -> bool:
        return self.completed and not self.errors and not self.unrun


# JavaScript run in the page; `window.jupyterapp` is the JupyterLab application. Every wait in
# the page has a deadline, so that a kernel that never starts fails the test instead of hanging it.
_WITHIN = """const within = (promise, ms, what) => Promise.race([promise, new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms))]);"""
_OPEN = """async ({ path, ms }) => {
  %s
  const app = window.jupyterapp;
  const widget = await within(app.commands.execute("docmanager:open", { path, factory: "Notebook" }),
                              ms, "opening " + path);
  window.__digitsNotebook = widget;
  await within((async () => {
    await widget.context.ready;
    await widget.sessionContext.ready;
    const kernel = widget.sessionContext.session && widget.sessionContext.session.kernel;
    if (!kernel) throw new Error("no kernel started for " + path);
    await kernel.info;   // the kernel has answered: it is up
  })(), ms, "starting the kernel of " + path);
  app.shell.activateById(widget.id);
}""" % _WITHIN
_RUN_ALL = """() => {
  const app = window.jupyterapp;
  app.shell.activateById(window.__digitsNotebook.id);
  window.__digitsRun = { done: false };
  app.commands.execute("notebook:run-all-cells").then(
    (ok) => { window.__digitsRun = { done: true, ok: ok !== false }; },
    (err) => { window.__digitsRun = { done: true, ok: false, error: String(err) }; });
}"""
_STATE = """() => {
  const w = window.__digitsNotebook;
  const kernel = w && w.sessionContext.session && w.sessionContext.session.kernel;
  return { ...window.__digitsRun, kernel: kernel ? kernel.status : "gone" };
}"""
_FINISHED = """() => {
  const state = (%s)();
  return state.kernel === "dead" || state.kernel === "gone" || (state.done && state.kernel === "idle");
}""" % _STATE
_SAVE = """async (ms) => {
  %s
  await within(window.__digitsNotebook.context.save(), ms, "saving");
}""" % _WITHIN
_CLOSE = """async (ms) => {
  %s
  const w = window.__digitsNotebook;
  if (!w) return;
  window.__digitsNotebook = null;
  try {
    await within(w.sessionContext.shutdown(), ms, "shutting the kernel down");
  } finally {
    w.dispose();
  }
}""" % _WITHIN


class LabPage:
    """One browser page on the server; runs notebooks, one open at a time (the last stays open)."""

    def __init__(self, page, server: LabServer, artifacts: Path):
        self.page, self.server, self.artifacts = page, server, Path(artifacts)
        self.console_log = self.artifacts / "browser-console.log"
        self.runs: dict[str, Run] = {}
        self.open_name: str | None = None
        page.on("console", lambda m: self._log(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self._log(f"page error: {e}"))

    def _log(self, line: str) -> None:
        with open(self.console_log, "a") as f:
            f.write(line + "\n")

    def load(self, timeout_s: float = 120) -> None:
        """JupyterLab's page, once its plugins have started and the layout is restored."""
        from playwright.sync_api import Error as PlaywrightError

        try:
            self.page.goto(f"{self.server.url}/lab", timeout=timeout_s * 1000)
            self.page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started",
                                        timeout=timeout_s * 1000)
            self.page.evaluate("async () => { await window.jupyterapp.started; await window.jupyterapp.restored; }")
        except PlaywrightError as e:
            raise RuntimeError(f"JupyterLab's page did not load: {str(e).splitlines()[0]}; "
                               f"{self.evidence('load')}") from e

    def evidence(self, label: str) -> str:
        """A screenshot and the logs' paths, for an assertion message."""
        shot = self.artifacts / f"failure-{label}.png"
        try:
            self.page.screenshot(path=str(shot), full_page=True)
        except Exception as e:   # the page itself may be what broke
            shot = Path(f"(no screenshot: {e})")
        return f"screenshot: {shot}; server log: {self.server.log}; browser console: {self.console_log}"

    def close_notebook(self) -> None:
        if self.open_name is not None:
            self.open_name = None
            self.page.evaluate(_CLOSE, 60_000)

    def run(self, path: str, timeout_s: float = 420) -> Run:
        """Open `path` (relative to the server root), run all cells, wait for idle, save, read back."""
        from playwright.sync_api import Error as PlaywrightError, TimeoutError as PlaywrightTimeout

        start = time.monotonic()
        problems = []
        try:
            self.close_notebook()   # one kernel at a time: 2 cores
            self.open_name = path
            self.page.evaluate(_OPEN, {"path": path, "ms": 120_000})
            self.page.evaluate(_RUN_ALL)
            try:
                self.page.wait_for_function(_FINISHED, timeout=timeout_s * 1000, polling=500)
            except PlaywrightTimeout:
                problems.append(f"run-all did not finish within {timeout_s:.0f} s")
            state = self.page.evaluate(_STATE)
            if state["kernel"] in ("dead", "gone"):
                problems.append(f"the kernel died (status: {state['kernel']})")
            if state.get("error"):
                problems.append(f"run-all failed: {state['error']}")
            self.page.evaluate(_SAVE, 60_000)
        except PlaywrightError as e:   # the page failed us: say where, with the evidence
            message = str(e).splitlines()[0]
            raise AssertionError(f"{path} in JupyterLab: {message}; {self.evidence(Path(path).stem)}") from e
        seconds = time.monotonic() - start
        saved = json.loads((self.server.root / path).read_text())
        run = Run(Path(path).stem, seconds, bool(state.get("ok")), errors=problems)
        for i, cell in enumerate(saved["cells"]):
            if cell["cell_type"] != "code":
                continue
            if cell.get("execution_count") is None:
                run.unrun.append(i)
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    run.errors.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
                elif out.get("output_type") == "stream" and out.get("name") == "stderr":
                    run.stderr += 1
        return run

    def run_notebook(self, name: str, keep_open: bool = False) -> tuple[Run, list[Run]]:
        """(run of notebooks/<name>.ipynb, runs of the notebooks it needs), each run once per server.

        `keep_open`: the notebook must be open with its kernel alive afterwards; it is run
        again if another one was opened since.
        """
        needs = []
        for need in NEEDS[name]:
            if need not in self.runs:
                self.run_notebook(need)
            needs.append(self.runs[need])
        path = f"notebooks/{name}.ipynb"
        if name not in self.runs or (keep_open and self.open_name != path):
            self.runs[name] = self.run(path)
        return self.runs[name], needs


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")

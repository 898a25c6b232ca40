"""Saving results safely: atomic writes, JSON records that carry parameters, seed and versions."""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is an atomic rename:
    readers see the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file private (0600); give the final file the usual umask-based mode
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def versions() -> dict[str, str]:
    """Versions of the interpreter and of every library that shapes a result."""
    import numpy
    import torch

    found = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu(),
             "torch": torch.__version__, "numpy": numpy.__version__}
    for name in ("pandas", "sklearn", "optuna"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:  # a result that did not use it does not need it
            pass
    return found


def cpu() -> str:
    """The processor's model name: float results differ between kinds of CPU, so records say which."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def plain(value: Any) -> Any:
    """JSON has no NaN/inf, tuples or tensors: turn them into what it does have."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy / torch scalars and arrays
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_json(path: str | os.PathLike, record: dict) -> Path:
    """Write `record` as indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plain(record), indent=2, allow_nan=False) + "\n")
    return path


def result_record(parameters: dict, seed: int | None, **results: Any) -> dict:
    """The shape of every saved result: what was asked, with which seed and software, then what came out."""
    return {"parameters": parameters, "seed": seed, "versions": versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **results}

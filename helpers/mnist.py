"""The four MNIST IDX archives: fetch once, verify, then load offline as tensors.

Archives live in `paths.raw_dir()`. A missing one is fetched from `MNIST_MIRROR` (a folder, or an
http(s):// URL prefix) when that is set, otherwise from the public mirrors in `DEFAULT_SOURCES`.
Each is checked against the pinned SHA-256 of its *decompressed* bytes (recompressed copies carry
the same content under another archive hash) and renamed into place only after it passes. A small
`<archive>.sha256` stamp beside it records the archive's size and mtime, so later loads skip the
full hash unless the file was replaced.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import shutil
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import paths, store

MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SIZES = {"train-images-idx3-ubyte.gz": 47_040_016, "train-labels-idx1-ubyte.gz": 60_008,
         "t10k-images-idx3-ubyte.gz": 7_840_016, "t10k-labels-idx1-ubyte.gz": 10_008}
SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# The mirrors torchvision and TensorFlow Datasets use; LeCun's own site last, as it often refuses.
DEFAULT_SOURCES = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                   "https://storage.googleapis.com/cvdf-datasets/mnist/",
                   "http://yann.lecun.com/exdb/mnist/")
TIMEOUT_S = 30
CHUNK = 1 << 20


class MnistError(RuntimeError):
    """Base class for everything this module raises about the data itself."""


class MnistFileError(MnistError):
    """A file (or downloaded copy) that is not the MNIST data it claims to be."""

    def __init__(self, source: object | None, problem: str):
        super().__init__(f"{source}: {problem}" if source else problem)


class MnistDownloadError(MnistError):
    """Every source failed for one archive; the message lists each with its reason."""


def load_mnist(split: str, data_dir: str | os.PathLike | None = None, mirror: str | None = None,
               progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N, 28, 28] and labels int64 [N] of `split` ("train" or "test").

    `data_dir` defaults to `paths.raw_dir()`; `mirror` to env MNIST_MIRROR (see `fetch`). An archive
    already in `data_dir` that fails verification is an error naming it, never silently replaced:
    it may be a copy supplied by hand, and deleting it is the caller's decision. Raises
    MnistDownloadError when no source delivers a missing archive, MnistFileError for bad data.
    """
    images, labels = (_verified(name, data_dir, mirror, progress) for name in _split_files(split))
    return read_split(images, labels)


def fetch(what: str, data_dir: str | os.PathLike | None = None, mirror: str | None = None,
          progress: bool = True) -> list[Path]:
    """Make sure the archives of a split (or one archive, by file name) are in `data_dir`, verified.

    With a mirror (argument, else env MNIST_MIRROR) only the mirror is tried: a folder is copied
    from, an http(s):// prefix downloaded from; a relative folder is taken from the repository root,
    like every path in `paths`. Without one, `DEFAULT_SOURCES` are tried in order.
    """
    names = (what,) if what in SHA256 else _split_files(what)
    return [_verified(name, data_dir, mirror, progress) for name in names]


def _split_files(split: str) -> tuple[str, str]:
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(MNIST_FILES)} (or for fetch an archive name "
                         f"in {sorted(SHA256)}), got {split!r}")
    return MNIST_FILES[split]


def _verified(name: str, data_dir, mirror, progress) -> Path:
    """The archive's path in `data_dir`, fetched if missing and hashed unless its stamp vouches for it."""
    path = (Path(data_dir).expanduser() if data_dir is not None else paths.raw_dir()) / name
    stamp = path.with_name(name + ".sha256")
    if not path.exists():
        _download(name, path, mirror, progress)
    else:
        try:
            if json.loads(stamp.read_text()) == _stamp(path):
                return path
        except (OSError, ValueError):  # no stamp, or a broken one: hash the archive
            pass
        _verify(path, name, path, hint="; delete it to fetch a fresh copy, or replace it with the genuine file")
    try:
        store.save_json(stamp, _stamp(path))
    except OSError:  # a read-only data folder still works; it is just re-hashed on every load
        pass
    return path


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"file": path.name, "sha256": SHA256[path.name], "bytes": SIZES[path.name],
            "archive_bytes": st.st_size, "archive_mtime_ns": st.st_mtime_ns}


def _verify(path: Path, name: str, source: object, hint: str = "") -> None:
    """Raise unless `path` decompresses to exactly the pinned size and SHA-256 of `name`.

    Reading stops one chunk past the pinned size, so a bogus file is never read to its end.
    """
    size, digest = 0, hashlib.sha256()
    try:
        with gzip.open(path, "rb") as fh:
            while size <= SIZES[name] and (chunk := fh.read(CHUNK)):
                digest.update(chunk)
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        # A browser's "save as" on an error page is a common culprit; name it when that is what it is.
        with open(path, "rb") as fh:
            html = fh.read(64).lstrip()[:1] == b"<"
        raise MnistFileError(source, ("is an HTML page, not a gzip archive" if html
                                      else f"not a valid gzip archive ({exc})") + hint) from exc
    if size != SIZES[name]:
        found = f"more than {SIZES[name]:,}" if size > SIZES[name] else f"{size:,}"
        raise MnistFileError(source, f"decompresses to {found} bytes, expected {SIZES[name]:,} for {name}{hint}")
    if digest.hexdigest() != SHA256[name]:
        raise MnistFileError(source, f"SHA-256 mismatch: decompressed bytes hash to "
                                     f"{digest.hexdigest()}, expected {SHA256[name]} for {name}{hint}")


def _download(name: str, path: Path, mirror, progress) -> None:
    mirror = os.environ.get("MNIST_MIRROR") if mirror is None else mirror
    failures = []
    for source in [str(mirror)] if mirror else DEFAULT_SOURCES:
        is_url = "://" in source
        where = source.rstrip("/") + "/" + name if is_url else paths.ROOT / Path(source).expanduser() / name
        try:
            with store.atomic_path(path) as tmp:  # the rename happens only if the block completes
                if is_url:
                    _fetch_url(where, tmp, name, progress)
                elif where.is_file():
                    shutil.copyfile(where, tmp)
                else:
                    raise MnistFileError(where, "no such file in the mirror folder")
                _verify(tmp, name, where)
            return
        except MnistFileError as exc:
            failures.append(str(exc))
        except (OSError, http.client.HTTPException) as exc:
            failures.append(f"{where}: {_why(exc)}")
    tried = "\n".join(f"  - {failure}" for failure in failures)
    raise MnistDownloadError(
        f"could not fetch {name} into {path.parent}; tried:\n{tried}\n"
        f"To supply the files by hand, put the four MNIST archives ({', '.join(SHA256)}) in "
        f"{path.parent}, or set MNIST_MIRROR to a folder holding them (e.g. MNIST_MIRROR=../shared/mnist) "
        "or to a URL prefix serving them.")


def _fetch_url(url: str, tmp: Path, name: str, progress: bool) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "mnist-mlp-reference"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
        # Captive portals and error pages answer 200 with HTML; say so rather than "bad gzip".
        if "html" in resp.headers.get_content_type():
            raise MnistFileError(url, "served an HTML page, not a gzip archive")
        total, got = int(resp.headers.get("Content-Length") or 0) or None, 0
        with open(tmp, "wb") as out, tqdm(total=total, desc=name, unit="B", unit_scale=True,
                                          unit_divisor=1024, file=sys.stderr, disable=not progress) as bar:
            while chunk := resp.read(CHUNK):
                out.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if total is not None and got != total:  # http.client returns short reads here without raising
        raise MnistFileError(url, f"connection closed after {got:,} of {total:,} bytes")


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {TIMEOUT_S} s"
    return f"{type(reason).__name__}: {reason}"


def read_idx(path_or_bytes: str | os.PathLike | bytes | bytearray, *, expect_ndim: int,
             name: str | None = None) -> torch.Tensor:
    """Strictly parse one uint8 IDX file (a path, gzipped or not, or its bytes) into a tensor.

    A bytearray is wrapped without copying; read-only bytes are copied so the tensor is writable.
    """
    data = path_or_bytes
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        name = name or path.name
        try:
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise MnistFileError(name, f"not a valid gzip archive ({exc})") from exc
    name = name or "<IDX bytes>"
    want = 0x0800 | expect_ndim
    if len(data) < 4:
        raise MnistFileError(name, f"only {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if data[0] or data[1] or data[2] != 0x08:
        raise MnistFileError(name, f"bad magic number 0x{magic:08X}, expected 0x{want:08X} (two zero "
                                   "bytes, then type 0x08 = unsigned byte, then the number of dimensions)")
    if data[3] != expect_ndim:
        raise MnistFileError(name, f"magic number 0x{magic:08X} says {data[3]} dimensions, "
                                   f"expected {expect_ndim} (0x{want:08X})")
    header = 4 + 4 * expect_ndim
    if len(data) < header:
        raise MnistFileError(name, f"truncated header: {len(data)} bytes, need {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=expect_ndim, offset=4))
    if expect_ndim == 3 and dims[1:] != (28, 28):
        raise MnistFileError(name, f"images are {dims[1]}x{dims[2]}, expected 28x28")
    need, have = int(np.prod(dims)), len(data) - header
    if have < need:
        raise MnistFileError(name, f"truncated: dimensions {dims} need {need:,} data bytes, found {have:,}")
    if have > need:
        raise MnistFileError(name, f"{have - need:,} bytes of trailing data after the {need:,} "
                                   f"that dimensions {dims} describe")
    array = np.frombuffer(data, np.uint8, count=need, offset=header).reshape(dims)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def read_split(images, labels, *, images_name: str | None = None,
               labels_name: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Read an images/labels IDX pair and check they agree: same count, labels in 0..9."""
    def named(given, data, default):
        return given or (Path(data).name if isinstance(data, (str, os.PathLike)) else default)

    images_name, labels_name = named(images_name, images, "images"), named(labels_name, labels, "labels")
    x = read_idx(images, expect_ndim=3, name=images_name)
    y = read_idx(labels, expect_ndim=1, name=labels_name)
    if len(x) != len(y):
        raise MnistFileError(None, f"{images_name} holds {len(x):,} images "
                                   f"but {labels_name} holds {len(y):,} labels")
    if len(y) and int(y.max()) > 9:
        bad = int(torch.nonzero(y > 9)[0])
        raise MnistFileError(labels_name, f"label {int(y[bad])} at index {bad} is outside 0..9")
    return x, y.long()

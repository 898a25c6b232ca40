"""helpers.mnist: fetching from folders and real loopback HTTP servers, verification, strict IDX parsing.

No test reaches past 127.0.0.1: the public mirrors are swapped for loopback ones in every test.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import mnist, paths

SHARED = Path(os.environ.get("MNIST_MIRROR") or paths.ROOT.parent / "shared" / "mnist")
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
LABELS = "t10k-labels-idx1-ubyte.gz"  # the smallest archive: most failure tests need only it

needs_archives = pytest.mark.skipif(not all((SHARED / n).is_file() for n in mnist.SHA256),
                                    reason=f"the four MNIST archives are not in {SHARED}")


def _dead_url() -> str:
    """A loopback port that nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_MIRROR", raising=False)
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path / "env-raw"))
    monkeypatch.setattr(mnist, "DEFAULT_SOURCES", (_dead_url(),))  # never the real internet


@pytest.fixture
def serve():
    """serve(folder, mode="files") -> URL prefix of a real HTTP server on 127.0.0.1.

    mode "html" answers every request with a 200 HTML page; "short" promises the whole file in
    Content-Length but closes the connection after half of it.
    """
    servers = []

    def start(folder: Path, mode: str = "files") -> str:
        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                if mode == "html":
                    body = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif mode == "short":
                    body = (folder / Path(self.path).name).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                else:
                    super().do_GET()

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()  # quick shutdown
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _folder_with(tmp_path: Path, name: str, content: bytes, *, others=()) -> Path:
    """A mirror folder holding `content` under `name`, plus copies of the real `others`."""
    folder = tmp_path / "mirror"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    for other in others:
        shutil.copyfile(SHARED / other, folder / other)
    return folder


def _no_final_file(data_dir: Path, name: str) -> None:
    assert not (data_dir / name).exists()
    assert not list(data_dir.glob("*.part")), "a temporary download was left behind"


def _idx(dims, payload: bytes | None = None, *, magic: bytes | None = None) -> bytes:
    header = (magic or bytes([0, 0, 8, len(dims)])) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + (bytes(int(np.prod(dims))) if payload is None else payload)


# --- loading -------------------------------------------------------------------------------------

@needs_archives
@pytest.mark.parametrize("split, counts", [("train", TRAIN_COUNTS), ("test", TEST_COUNTS)])
def test_load_from_folder_mirror(tmp_path, split, counts):
    images, labels = mnist.load_mnist(split, data_dir=tmp_path, mirror=str(SHARED), progress=False)
    n = sum(counts)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=10).tolist() == counts
    assert int(images.max()) == 255
    for name in mnist.MNIST_FILES[split]:
        assert (tmp_path / name).is_file() and (tmp_path / f"{name}.sha256").is_file()
    images[0, 0, 0] = 7  # writable, no read-only buffer underneath


@needs_archives
def test_mirror_and_data_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_MIRROR", str(SHARED))
    images, labels = mnist.load_mnist("test", progress=False)
    assert len(images) == len(labels) == 10_000
    assert (tmp_path / "env-raw" / LABELS).is_file()


@needs_archives
def test_download_train_over_http(tmp_path, serve):
    url = serve(SHARED)
    images, labels = mnist.load_mnist("train", data_dir=tmp_path / "raw", mirror=url, progress=False)
    assert images.shape == (60_000, 28, 28)
    assert torch.bincount(labels, minlength=10).tolist() == TRAIN_COUNTS


@needs_archives
def test_second_load_is_offline_and_does_not_rehash(tmp_path, serve, monkeypatch):
    first = mnist.load_mnist("test", data_dir=tmp_path, mirror=serve(SHARED), progress=False)

    class NoHashing:
        def sha256(*args):
            raise AssertionError("a stamped archive was hashed again")

    monkeypatch.setattr(mnist, "hashlib", NoHashing)
    again = mnist.load_mnist("test", data_dir=tmp_path, mirror=_dead_url(), progress=False)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


@needs_archives
def test_replaced_file_is_verified_again(tmp_path, monkeypatch):
    mnist.fetch(LABELS, data_dir=tmp_path, mirror=str(SHARED), progress=False)
    path = tmp_path / LABELS
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # "replaced by hand"
    calls, real = [], hashlib.sha256
    monkeypatch.setattr(mnist.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    mnist.fetch(LABELS, data_dir=tmp_path, mirror=_dead_url(), progress=False)
    assert calls == [1]
    mnist.fetch(LABELS, data_dir=tmp_path, mirror=_dead_url(), progress=False)
    assert calls == [1], "the new stamp should have been trusted"


@needs_archives
def test_corrupt_file_in_data_dir_is_named(tmp_path):
    good = gzip.decompress((SHARED / LABELS).read_bytes())
    (tmp_path / LABELS).write_bytes(gzip.compress(good[:-1] + b"\x03"))
    with pytest.raises(mnist.MnistFileError, match=rf"{LABELS}: SHA-256 mismatch.*delete it"):
        mnist.fetch(LABELS, data_dir=tmp_path, mirror=str(SHARED), progress=False)


def test_unknown_split():
    with pytest.raises(ValueError, match=r"split must be one of \['test', 'train'\].*'validation'"):
        mnist.load_mnist("validation")


# --- fetching: fallbacks and failures ------------------------------------------------------------

@needs_archives
def test_falls_back_past_dead_404_and_html_sources(tmp_path, serve, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(mnist, "DEFAULT_SOURCES",
                        (_dead_url(), serve(empty), serve(empty, "html"), serve(SHARED)))
    images, labels = mnist.load_mnist("test", data_dir=tmp_path / "raw", progress=False)
    assert torch.bincount(labels, minlength=10).tolist() == TEST_COUNTS


@needs_archives
def test_corrupted_copy_fails_sha_and_leaves_nothing(tmp_path, serve):
    raw = bytearray(gzip.decompress((SHARED / LABELS).read_bytes()))
    raw[100], raw[101] = raw[101], (raw[101] + 1) % 10  # still valid labels, different bytes
    url = serve(_folder_with(tmp_path, LABELS, gzip.compress(bytes(raw))))
    data_dir = tmp_path / "raw"
    with pytest.raises(mnist.MnistDownloadError) as err:
        mnist.fetch(LABELS, data_dir=data_dir, mirror=url, progress=False)
    assert f"{url}{LABELS}: SHA-256 mismatch" in str(err.value)
    assert mnist.SHA256[LABELS] in str(err.value)
    _no_final_file(data_dir, LABELS)


def test_html_page_is_reported_as_such(tmp_path, serve):
    url = serve(tmp_path, "html")
    with pytest.raises(mnist.MnistDownloadError, match="served an HTML page, not a gzip archive"):
        mnist.fetch(LABELS, data_dir=tmp_path / "raw", mirror=url, progress=False)
    _no_final_file(tmp_path / "raw", LABELS)

@needs_archives
def test_progress_bar_goes_to_stderr(tmp_path, serve, capsys):
    mnist.fetch(LABELS, data_dir=tmp_path, mirror=serve(SHARED), progress=True)
    assert LABELS in capsys.readouterr().err


def test_html_file_in_folder_mirror_is_reported_as_such(tmp_path):
    folder = _folder_with(tmp_path, LABELS, b"\n<!DOCTYPE html><html>404 Not Found</html>")
    with pytest.raises(mnist.MnistDownloadError, match="is an HTML page, not a gzip archive"):
        mnist.fetch(LABELS, data_dir=tmp_path / "raw", mirror=str(folder), progress=False)
    _no_final_file(tmp_path / "raw", LABELS)


def test_all_sources_failing_lists_each_and_how_to_supply(tmp_path, serve, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    dead, missing, html = _dead_url(), serve(empty), serve(empty, "html")
    monkeypatch.setattr(mnist, "DEFAULT_SOURCES", (dead, missing, html))
    data_dir = tmp_path / "raw"
    with pytest.raises(mnist.MnistDownloadError) as err:
        mnist.load_mnist("test", data_dir=data_dir, progress=False)
    message = str(err.value)
    assert f"{dead}t10k-images-idx3-ubyte.gz: ConnectionRefusedError" in message
    assert f"{missing}t10k-images-idx3-ubyte.gz: HTTP 404" in message
    assert f"{html}t10k-images-idx3-ubyte.gz: served an HTML page" in message
    assert "put the four MNIST archives" in message and str(data_dir) in message
    assert "MNIST_MIRROR" in message
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_folder_mirror_missing_file(tmp_path):
    with pytest.raises(mnist.MnistDownloadError, match=rf"(?s){LABELS}: no such file in the mirror folder.*MNIST_MIRROR"):
        mnist.fetch(LABELS, data_dir=tmp_path / "raw", mirror=str(tmp_path), progress=False)


@needs_archives
def test_connection_closed_early_leaves_nothing(tmp_path, serve):
    url = serve(SHARED, "short")
    with pytest.raises(mnist.MnistDownloadError, match=r"connection closed after 2,271 of 4,542 bytes"):
        mnist.fetch(LABELS, data_dir=tmp_path / "raw", mirror=url, progress=False)
    _no_final_file(tmp_path / "raw", LABELS)


@needs_archives
def test_truncated_gzip_leaves_nothing(tmp_path, serve):
    cut = (SHARED / LABELS).read_bytes()[:3000]
    url = serve(_folder_with(tmp_path, LABELS, cut))
    with pytest.raises(mnist.MnistDownloadError, match=r"not a valid gzip archive \(Compressed file ended"):
        mnist.fetch(LABELS, data_dir=tmp_path / "raw", mirror=url, progress=False)
    _no_final_file(tmp_path / "raw", LABELS)


# --- strict IDX reader ---------------------------------------------------------------------------

def test_read_idx_roundtrip_is_writable():
    data = _idx((2, 28, 28), bytes(range(256)) * 6 + bytes(32))
    images = mnist.read_idx(data, expect_ndim=3, name="x.idx")
    assert images.shape == (2, 28, 28) and images[0, 0, 5] == 5
    images[0, 0, 0] = 9  # read-only bytes were copied, so this is allowed
    shared = bytearray(data)
    view = mnist.read_idx(shared, expect_ndim=3)
    shared[-1] = 42  # a bytearray is wrapped, not copied: 47 MB less for the train images
    assert view[1, 27, 27] == 42


@pytest.mark.parametrize("magic, expected", [
    (b"\x1f\x8b\x08\x03", r"bad magic number 0x1F8B0803, expected 0x00000803"),
    (b"\x00\x00\x0d\x03", r"bad magic number 0x00000D03, expected 0x00000803.*type 0x08"),
])
def test_read_idx_wrong_magic(magic, expected):
    with pytest.raises(mnist.MnistFileError, match=rf"imgs.idx: {expected}"):
        mnist.read_idx(_idx((1, 28, 28), magic=magic), expect_ndim=3, name="imgs.idx")


def test_read_idx_wrong_ndim():
    with pytest.raises(mnist.MnistFileError, match=r"labels.idx: magic number 0x00000801 says 1 dimensions, expected 3"):
        mnist.read_idx(_idx((5,)), expect_ndim=3, name="labels.idx")


def test_read_idx_wrong_image_size():
    with pytest.raises(mnist.MnistFileError, match=r"imgs.idx: images are 27x28, expected 28x28"):
        mnist.read_idx(_idx((3, 27, 28)), expect_ndim=3, name="imgs.idx")


def test_read_idx_truncated_and_trailing():
    full = _idx((3, 28, 28))
    with pytest.raises(mnist.MnistFileError, match=r"imgs.idx: truncated: .* need 2,352 data bytes, found 2,351"):
        mnist.read_idx(full[:-1], expect_ndim=3, name="imgs.idx")
    with pytest.raises(mnist.MnistFileError, match=r"imgs.idx: 2 bytes of trailing data"):
        mnist.read_idx(full + b"\0\0", expect_ndim=3, name="imgs.idx")
    with pytest.raises(mnist.MnistFileError, match=r"imgs.idx: truncated header"):
        mnist.read_idx(full[:9], expect_ndim=3, name="imgs.idx")


def test_read_split_count_mismatch_names_both_files(tmp_path):
    (tmp_path / "a-images.gz").write_bytes(gzip.compress(_idx((4, 28, 28))))
    (tmp_path / "a-labels.gz").write_bytes(gzip.compress(_idx((3,))))
    with pytest.raises(mnist.MnistFileError, match=r"a-images.gz holds 4 images but a-labels.gz holds 3 labels"):
        mnist.read_split(tmp_path / "a-images.gz", tmp_path / "a-labels.gz")


def test_read_split_unnamed_bytes_still_say_which():
    with pytest.raises(mnist.MnistFileError, match=r"images holds 1 images but labels holds 2 labels"):
        mnist.read_split(_idx((1, 28, 28)), _idx((2,)))


def test_read_split_label_out_of_range():
    with pytest.raises(mnist.MnistFileError, match=r"y.idx: label 12 at index 1 is outside 0..9"):
        mnist.read_split(_idx((2, 28, 28)), _idx((2,), bytes([3, 12])), images_name="x.idx", labels_name="y.idx")


def test_read_idx_bad_gzip_path_is_named(tmp_path):
    (tmp_path / "broken.gz").write_bytes(b"<html>nope</html>")
    with pytest.raises(mnist.MnistFileError, match=r"broken.gz: not a valid gzip archive"):
        mnist.read_idx(tmp_path / "broken.gz", expect_ndim=1)

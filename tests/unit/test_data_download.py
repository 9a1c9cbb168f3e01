"""Downloads against a local HTTP server: verification, atomicity, resume, mirrors, CIFAR tar."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ngrad.data import DataError, download_dataset, load_dataset
from ngrad.data import catalog as data_catalog
from ngrad.data.checksums import CIFAR10_ARCHIVE_MD5, IDX_SHA256
from ngrad.data.download import RemoteFile, fetch_file, resolve_mirrors
from ngrad.data.idx import IDX_FILES

# ---------------------------------------------------------------- a tiny HTTP server with Range


@dataclass
class ServerState:
    """What the server serves and how it misbehaves; and the requests it saw."""

    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> body
    truncate: set[str] = field(default_factory=set)  # paths that send half then hang up
    ignore_range: bool = False  # answer 200 with the full body to Range requests
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        range_header = self.headers.get("Range")
        state.requests.append((self.path, range_header))
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not state.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.path in state.truncate:
            payload = payload[: len(payload) // 2]  # then close: fewer bytes than announced
        self.wfile.write(payload)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


class _Server(ThreadingHTTPServer):
    state: ServerState


@dataclass
class LocalServer:
    state: ServerState
    url: str


@pytest.fixture
def data_http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("NGRAD_MIRROR", raising=False)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = ServerState()
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield LocalServer(server.state, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ---------------------------------------------------------------- fake IDX files for "mnist"


def _idx(array: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return head + array.astype(np.uint8).tobytes()


@pytest.fixture
def fake_mnist(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Raw IDX bytes of a 30/6 fake MNIST whose digests replace the real ones in the table."""
    rng = np.random.default_rng(5)
    raw = {
        "train-images-idx3-ubyte": _idx(rng.integers(0, 256, (30, 28, 28))),
        "train-labels-idx1-ubyte": _idx(rng.integers(0, 10, 30)),
        "t10k-images-idx3-ubyte": _idx(rng.integers(0, 256, (6, 28, 28))),
        "t10k-labels-idx1-ubyte": _idx(rng.integers(0, 10, 6)),
    }
    for stem, data in raw.items():
        monkeypatch.setitem(IDX_SHA256["mnist"], stem, hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(data_catalog, "N_VAL", 5)
    return raw


def _serve_mnist(server: LocalServer, raw: dict[str, bytes], prefix: str = "/m") -> str:
    for stem, data in raw.items():
        server.state.files[f"{prefix}/{stem}.gz"] = gzip.compress(data, mtime=0)
    return server.url + prefix + "/"


def _remote(data: bytes) -> RemoteFile:
    return RemoteFile("f.gz", "sha256", hashlib.sha256(data).hexdigest(), gunzip=True)


# ---------------------------------------------------------------- tests


def test_download_verifies_and_lands(
    tmp_path: Path, data_http_server: LocalServer, fake_mnist: dict[str, bytes]
) -> None:
    base = _serve_mnist(data_http_server, fake_mnist)
    directory = download_dataset("mnist", data_dir=tmp_path, mirrors=[base])
    assert directory == tmp_path / "mnist"
    assert sorted(p.name for p in directory.iterdir()) == sorted(f"{s}.gz" for s in IDX_FILES)
    for stem, data in fake_mnist.items():
        assert gzip.decompress((directory / f"{stem}.gz").read_bytes()) == data
    splits = load_dataset("mnist", data_dir=tmp_path)
    assert splits.sizes == (25, 5, 6)
    # a second call finds verified files and fetches nothing
    seen = len(data_http_server.state.requests)
    download_dataset("mnist", data_dir=tmp_path, mirrors=[base])
    assert len(data_http_server.state.requests) == seen


def test_corrupt_download_is_deleted_and_reported(
    tmp_path: Path, data_http_server: LocalServer
) -> None:
    good, bad = b"the real content", b"something else!"
    data_http_server.state.files["/f.gz"] = gzip.compress(bad)
    remote = _remote(good)
    with pytest.raises(DataError) as info:
        fetch_file(remote, tmp_path, [data_http_server.url], dataset="mnist")
    message = str(info.value)
    assert "f.gz" in message
    assert remote.digest in message
    assert hashlib.sha256(bad).hexdigest() in message
    assert list(tmp_path.iterdir()) == []  # neither f.gz nor f.gz.part


def test_not_gzip_download_is_reported(tmp_path: Path, data_http_server: LocalServer) -> None:
    data_http_server.state.files["/f.gz"] = b"<html>an error page</html>"
    with pytest.raises(DataError, match="not a valid gzip file"):
        fetch_file(_remote(b"x"), tmp_path, [data_http_server.url], dataset="mnist")
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_keeps_part_then_resumes(
    tmp_path: Path, data_http_server: LocalServer
) -> None:
    content = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    body = gzip.compress(content)
    state = data_http_server.state
    state.files["/f.gz"] = body
    state.truncate.add("/f.gz")
    with pytest.raises(DataError, match=r"connection closed after \d+ of \d+ bytes"):
        fetch_file(_remote(content), tmp_path, [data_http_server.url], dataset="mnist")
    part = tmp_path / "f.gz.part"
    assert not (tmp_path / "f.gz").exists()  # nothing that looks complete
    assert part.read_bytes() == body[: len(body) // 2]
    assert [p.name for p in tmp_path.iterdir()] == ["f.gz.part"]

    state.truncate.clear()
    state.requests.clear()
    path = fetch_file(_remote(content), tmp_path, [data_http_server.url], dataset="mnist")
    assert state.requests == [("/f.gz", f"bytes={len(body) // 2}-")]  # resumed, one request
    assert path.read_bytes() == body
    assert not part.exists()


def test_server_ignoring_range_restarts_the_file(
    tmp_path: Path, data_http_server: LocalServer
) -> None:
    content = b"0123456789" * 500
    body = gzip.compress(content)
    data_http_server.state.files["/f.gz"] = body
    data_http_server.state.ignore_range = True
    (tmp_path / "f.gz.part").write_bytes(body[:20])
    path = fetch_file(_remote(content), tmp_path, [data_http_server.url], dataset="mnist")
    assert data_http_server.state.requests == [("/f.gz", "bytes=20-")]
    assert path.read_bytes() == body


def test_stale_part_from_another_copy_is_redone(
    tmp_path: Path, data_http_server: LocalServer
) -> None:
    content = b"abc" * 2000
    body = gzip.compress(content)
    data_http_server.state.files["/f.gz"] = body
    (tmp_path / "f.gz.part").write_bytes(b"\x1f\x8bjunk from a different mirror's copy")
    path = fetch_file(_remote(content), tmp_path, [data_http_server.url], dataset="mnist")
    ranges = [r for _, r in data_http_server.state.requests]
    assert ranges[0] is not None
    assert ranges[-1] is None  # restarted from scratch after the resumed file failed to verify
    assert path.read_bytes() == body


def test_mirror_fallback(tmp_path: Path, data_http_server: LocalServer) -> None:
    content = b"mirror two has it"
    data_http_server.state.files["/two/f.gz"] = gzip.compress(content)
    mirrors = [data_http_server.url + "/one/", data_http_server.url + "/two"]
    path = fetch_file(_remote(content), tmp_path, mirrors, dataset="mnist", progress=True)
    assert gzip.decompress(path.read_bytes()) == content
    assert [p for p, _ in data_http_server.state.requests] == ["/one/f.gz", "/two/f.gz"]


def test_all_mirrors_failing_lists_each(tmp_path: Path, data_http_server: LocalServer) -> None:
    mirrors = [data_http_server.url + "/one/", "http://127.0.0.1:1/", "no-scheme.example/"]
    with pytest.raises(DataError) as info:
        fetch_file(_remote(b"x"), tmp_path, mirrors, dataset="mnist", timeout=5)
    message = str(info.value)
    assert "/one/f.gz: HTTP 404" in message
    assert "http://127.0.0.1:1/f.gz" in message
    assert "no-scheme.example/f.gz" in message
    assert list(tmp_path.iterdir()) == []


def test_mirror_env_and_load_with_download(
    tmp_path: Path,
    data_http_server: LocalServer,
    fake_mnist: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = _serve_mnist(data_http_server, fake_mnist, prefix="/env")
    monkeypatch.setenv("NGRAD_MIRROR", f"{data_http_server.url}/nothing-here/, {base}")
    assert resolve_mirrors("mnist") == [f"{data_http_server.url}/nothing-here/", base]
    assert resolve_mirrors("mnist", ["http://x/"]) == ["http://x/"]
    assert resolve_mirrors("mnist", "http://x/") == ["http://x/"]
    # one file already present (raw): only the other three are fetched
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(
        fake_mnist["t10k-labels-idx1-ubyte"]
    )
    splits = load_dataset("mnist", data_dir=tmp_path, download=True)
    assert splits.sizes == (25, 5, 6)
    fetched = {p for p, _ in data_http_server.state.requests if p.startswith("/env/")}
    assert fetched == {f"/env/{s}.gz" for s in IDX_FILES if s != "t10k-labels-idx1-ubyte"}


def test_download_refuses_existing_corrupt_file(
    tmp_path: Path, data_http_server: LocalServer, fake_mnist: dict[str, bytes]
) -> None:
    base = _serve_mnist(data_http_server, fake_mnist)
    (tmp_path / "mnist").mkdir()
    bad = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"wrong"))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz exists but is corrupt"):
        download_dataset("mnist", data_dir=tmp_path, mirrors=[base])


def test_default_mirrors() -> None:
    assert resolve_mirrors("mnist", None)[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    with pytest.raises(DataError, match="no download mirror"):
        resolve_mirrors("unknown", None)


# ---------------------------------------------------------------- CIFAR-10 archive


def _cifar_archive(n: int = 4) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(1)
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
        for name in names:
            batch = {
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"labels": [int(v) for v in rng.integers(0, 10, n)],
            }
            data = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_cifar_download_and_extract(
    tmp_path: Path, data_http_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _cifar_archive()
    data_http_server.state.files["/kriz/cifar-10-python.tar.gz"] = archive
    md5 = hashlib.md5(archive).hexdigest()
    monkeypatch.setitem(CIFAR10_ARCHIVE_MD5, "cifar-10-python.tar.gz", md5)
    monkeypatch.setattr(data_catalog, "N_VAL", 4)
    monkeypatch.setenv("NGRAD_MIRROR", data_http_server.url + "/kriz/")
    splits = load_dataset("cifar10", data_dir=tmp_path, download=True)
    assert splits.sizes == (16, 4, 4)
    assert splits.train_x.shape == (16, 3, 32, 32)
    dest = tmp_path / "cifar10"
    assert sorted(p.name for p in dest.iterdir()) == [
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
    ]
    assert download_dataset("cifar10", data_dir=tmp_path) == dest / "cifar-10-batches-py"


def test_cifar_archive_md5_mismatch(
    tmp_path: Path, data_http_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_http_server.state.files["/cifar-10-python.tar.gz"] = _cifar_archive()
    monkeypatch.setitem(CIFAR10_ARCHIVE_MD5, "cifar-10-python.tar.gz", "0" * 32)
    with pytest.raises(
        DataError, match=r"cifar-10-python\.tar\.gz.*expected 0{32}, got [0-9a-f]{32}"
    ):
        download_dataset("cifar10", data_dir=tmp_path, mirrors=[data_http_server.url])
    assert list((tmp_path / "cifar10").iterdir()) == []


def test_full_size_part_answered_416_starts_over(
    tmp_path: Path, data_http_server: LocalServer
) -> None:
    content = b"xyz" * 3000
    body = gzip.compress(content)
    data_http_server.state.files["/f.gz"] = body
    (tmp_path / "f.gz.part").write_bytes(b"\0" * len(body))  # as long as the file, but wrong
    path = fetch_file(_remote(content), tmp_path, [data_http_server.url], dataset="mnist")
    ranges = [r for _, r in data_http_server.state.requests]
    assert ranges == [f"bytes={len(body)}-", None]
    assert path.read_bytes() == body

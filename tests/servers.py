"""Real FTP and HTTP servers on 127.0.0.1 for the download tests, and small but real model files.

Each server runs in a thread of the test process, binds port 0 and is stopped
when its ``with`` block ends.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np

from gamornet.core.network import tflearn_variable_prefixes, weight_shapes


def dead_url() -> str:
    """An http:// URL on a port where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/pub/aghosh/"


class _Handler(SimpleHTTPRequestHandler):
    """Static files, with per-file misbehaviour from ``server.rules``.

    Rules (keyed by path relative to the served root): ``("truncate", fraction)``
    sends the full Content-Length but closes after ``fraction`` of the body;
    ``("stall", seconds)`` sends the headers and 1 KiB, then stalls;
    ``("throttle", seconds)`` spreads the body over ``seconds``.
    """

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        self.server.requests.append(rel)
        rule = self.server.rules.get(rel)
        if rule is None:
            return super().do_GET()
        kind, value = rule
        data = (Path(self.directory) / rel).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.close_connection = True
        try:
            if kind == "truncate":
                self.wfile.write(data[: int(len(data) * value)])
            elif kind == "stall":
                self.wfile.write(data[:1024])
                self.wfile.flush()
                self.server.stopping.wait(value)
                self.wfile.write(data[1024:])
            elif kind == "throttle":
                for i in range(10):
                    self.wfile.write(data[i * len(data) // 10 : (i + 1) * len(data) // 10])
                    self.wfile.flush()
                    time.sleep(value / 10)
        except OSError:
            pass  # the client gave up


@contextmanager
def http_server(root: Path, rules: dict | None = None) -> Iterator[ThreadingHTTPServer]:
    """Serve ``root`` over HTTP; yields the server (``.url`` base URL, ``.requests`` log)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    server.daemon_threads = True
    server.rules, server.requests, server.stopping = dict(rules or {}), [], threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def ftp_server(root: Path, size_offset: int = 0) -> Iterator[str]:
    """Serve ``root`` read-only to anonymous FTP users; yields the base URL.

    ``size_offset`` is added to the sizes the SIZE command reports: a transfer
    then ends short of the announced size, as when the data connection is cut.
    """
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    quiet = logging.getLogger("pyftpdlib")  # a handler stops pyftpdlib from installing its own
    quiet.setLevel(logging.WARNING)
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(str(root))

    def ftp_size(self, path):
        if not size_offset or not os.path.isfile(path):
            return FTPHandler.ftp_SIZE(self, path)
        self.respond(f"213 {os.path.getsize(path) + size_offset}")

    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "ftp_SIZE": ftp_size})
    server = FTPServer(("127.0.0.1", 0), handler)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            server.ioloop.loop(0.05, blocking=False)
        server.close_all()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"ftp://127.0.0.1:{server.address[1]}/"
    finally:
        stop.set()
        thread.join(5)


def write_keras_file(path: Path, input_shape: tuple[int, int, int]) -> Path:
    """A Keras-2-style full-model HDF5 file with GaMorNet's weight datasets.

    Small datasets hold random values; large ones are chunked and left
    unwritten (they read as zeros), so the file stays small whatever the shape.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"conv2d_{i}" for i in range(1, 6)] + [f"dense_{i}" for i in range(1, 4)]
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = b"2.3.1"
        f.attrs["backend"] = b"tensorflow"
        group = f.create_group("model_weights")
        group.attrs["layer_names"] = [n.encode() for n in names]
        for name, (kernel, bias) in zip(names, weight_shapes(input_shape)):
            layer = group.create_group(name)
            layer.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            for weight, shape in (("kernel:0", kernel), ("bias:0", bias)):
                if np.prod(shape) <= 50_000:
                    layer.create_dataset(f"{name}/{weight}", data=rng.standard_normal(shape, dtype=np.float32))
                else:
                    layer.create_dataset(f"{name}/{weight}", shape=shape, dtype="f4", chunks=True)
    return path


def write_checkpoint(prefix: Path, input_shape: tuple[int, int, int]) -> Path:
    """A real TF1 checkpoint (3 files) with TFLearn's variable names, written with plain TensorFlow 2."""
    import tensorflow as tf

    prefix.parent.mkdir(parents=True, exist_ok=True)
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        for scope, (kernel, bias) in zip(tflearn_variable_prefixes(), weight_shapes(input_shape)):
            with v1.variable_scope(scope):
                v1.get_variable("W", shape=kernel, initializer=v1.zeros_initializer())
                v1.get_variable("b", shape=bias, initializer=v1.constant_initializer(0.1))
        v1.get_variable("Training_step", shape=(), dtype=tf.int64, initializer=v1.zeros_initializer())
        saver = v1.train.Saver()
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            saver.save(sess, str(prefix))
    (prefix.parent / "checkpoint").unlink(missing_ok=True)
    return prefix


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files served in parts, as cloud stores serve them.

    ``Range: bytes=a-b`` (also ``a-`` and ``-n``) gets 206 Partial Content with
    Content-Range; HEAD gets the Content-Length; a range past the end gets 416.
    Each GET is logged in ``server.ranges`` as ``(path, first byte, bytes sent)``
    and its bytes added to ``server.served[path]`` (paths relative to the root).
    """

    protocol_version = "HTTP/1.1"  # connections kept alive, as by cloud stores
    disable_nagle_algorithm = True  # else the body waits for the client's delayed ACK of the headers (40 ms)

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._send(body=False)

    def do_GET(self) -> None:
        self._send(body=True)

    def _span(self, size: int) -> tuple[int, int] | None:
        """``(start, stop)`` of the Range header (the whole file without one); None if it is not satisfiable."""
        header = self.headers.get("Range")
        if header is None:
            return 0, size
        match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
        if match is None or not (match[1] or match[2]):
            return None
        if match[1]:
            start, stop = int(match[1]), size if not match[2] else min(size, int(match[2]) + 1)
        else:
            start, stop = max(0, size - int(match[2])), size
        return (start, stop) if start < stop else None

    def _send(self, body: bool) -> None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        path = Path(self.directory) / rel
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        span = self._span(size)
        if span is None:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, stop = span
        self.send_response(206 if self.headers.get("Range") else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(stop - start))
        self.send_header("Last-Modified", self.date_time_string(int(path.stat().st_mtime)))
        if self.headers.get("Range"):
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(stop - start)
        try:
            self.wfile.write(data)
        except OSError:
            return  # the client gave up
        with self.server.lock:
            self.server.ranges.append((rel, start, len(data)))
            self.server.served[rel] = self.server.served.get(rel, 0) + len(data)


@contextmanager
def range_http_server(root: Path) -> Iterator[ThreadingHTTPServer]:
    """Serve ``root`` over HTTP with byte ranges; yields the server (``.url`` base URL, ``.served`` bytes sent per
    file, ``.ranges`` log of GETs), both logs emptied by ``.reset()``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(root)))
    server.daemon_threads = True
    server.served, server.ranges, server.lock = {}, [], threading.Lock()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"

    def reset() -> None:
        with server.lock:
            server.served.clear()
            server.ranges.clear()

    server.reset = reset
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

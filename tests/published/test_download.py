"""The download helper against real FTP, HTTP and file:// sources on 127.0.0.1 (never the internet).

Each test ends with either a validated cache file or the clear error, and
checks that no partial or temporary file is left in the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gamornet.published import download as transfers
from gamornet.published import models as published
from gamornet.published import registry
from gamornet.published.models import CacheDirError, ModelDownloadError, cached_path, fetch_file, fetch_model, is_cached
from gamornet.published.registry import get_model_info
from gamornet.weights import validate_checkpoint

from helpers import REPO
from servers import dead_url, ftp_server, http_server, write_checkpoint, write_keras_file

SMALL = (32, 32, 1)
BASE = "pub/aghosh/"  # the servers publish the tree under the same sub-path as the authors' server
QUICK = {"progress": False, "backoff": 0.0, "timeout": 10.0}

# pyftpdlib 2.2 still imports asyncore / asynchat
pytestmark = pytest.mark.filterwarnings("ignore:The asyn:DeprecationWarning")


def _info(name: str, flavor: str = "keras") -> registry.PublishedModel:
    return get_model_info(name, flavor)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("GAMORNET_HOME", "GAMORNET_MODELS_URL", "GAMORNET_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Served root; the published tree lies under ``pub/aghosh/``.

    CANDELS_sim keras: valid for SMALL.  CANDELS_tl keras: valid for the real
    CANDELS shape.  SDSS_sim keras: not HDF5.  SDSS_tl keras: HDF5 with wrong shapes.
    """
    root = tmp_path_factory.mktemp("server")
    top = root / BASE
    write_keras_file(top / _info("CANDELS_sim").path, SMALL)
    write_keras_file(top / _info("CANDELS_tl").path, (83, 83, 1))
    (top / _info("SDSS_sim").path).parent.mkdir(parents=True)
    (top / _info("SDSS_sim").path).write_text("<html>Service unavailable</html>\n" * 100)
    write_keras_file(top / _info("SDSS_tl").path, (64, 64, 1))
    return root


@pytest.fixture(scope="module")
def ckpt_tree(tree) -> Path:
    """Adds checkpoints: CANDELS_sim valid for SMALL; CANDELS_tl without its .meta; SDSS_sim with a damaged .index."""
    top = tree / BASE
    good = _info("CANDELS_sim", "tflearn")
    write_checkpoint(top / good.path, SMALL)
    for name, skip in (("CANDELS_tl", ".meta"), ("SDSS_sim", ".index")):
        info = _info(name, "tflearn")
        (top / info.path).parent.mkdir(parents=True, exist_ok=True)
        for src, dst in zip(good.files, info.files):
            if not dst.endswith(skip):
                os.link(top / src, top / dst)
    bad_index = top / (_info("SDSS_sim", "tflearn").path + ".index")
    bad_index.write_bytes(os.urandom(700))
    return tree


def leftovers(cache: Path) -> list[Path]:
    """Temporary or partial files in the cache (lock files in ``.locks`` are allowed)."""
    if not cache.exists():
        return []
    return [
        p
        for p in cache.rglob("*")
        if ".locks" not in p.relative_to(cache).parts and (p.name.startswith(".") or p.name.endswith(".part"))
    ]


def cached_files(cache: Path) -> list[Path]:
    if not cache.exists():
        return []
    return [p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.relative_to(cache).parts]


def same_bytes(a: Path | str, b: Path | str) -> bool:
    return Path(a).read_bytes() == Path(b).read_bytes()


def test_ftp_download_then_cache_used_without_network(tree, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    with ftp_server(tree) as url:
        path = fetch_model("CANDELS_sim", cache_dir=cache, base_urls=url + BASE, input_shape=SMALL, **QUICK)
    assert path == cached_path("CANDELS_sim", cache_dir=cache)
    assert same_bytes(path, tree / BASE / _info("CANDELS_sim").path)
    assert is_cached("CANDELS_sim", "keras", cache_dir=cache)
    monkeypatch.setattr(transfers, "_TRANSPORTS", {})  # any network access would now fail
    again = fetch_model("CANDELS_sim", cache_dir=cache, base_urls=dead_url(), input_shape=SMALL, **QUICK)
    assert again == path
    assert cached_files(cache) == [Path(path)] and leftovers(cache) == []


def test_tflearn_checkpoint_over_ftp_with_progress_bar(ckpt_tree, tmp_path, capsys):
    cache = tmp_path / "cache"
    info = _info("CANDELS_sim", "tflearn")
    with ftp_server(ckpt_tree) as url:
        prefix = fetch_model("CANDELS_sim", "tflearn", cache_dir=cache, base_urls=url + BASE, input_shape=SMALL)
    err = capsys.readouterr().err
    assert "Downloading ftp://" in err and "100%" in err
    assert prefix == str(cache / info.path)
    for rel in info.files:
        assert same_bytes(cache / rel, ckpt_tree / BASE / rel)
    validate_checkpoint(prefix, SMALL)
    assert fetch_model("CANDELS_sim", "tflearn", cache_dir=cache, base_urls=dead_url(), **QUICK) == prefix
    assert sorted(cached_files(cache)) == sorted(cache / rel for rel in info.files) and leftovers(cache) == []


def test_mirror_fallback_first_dead_second_works(tree, tmp_path):
    cache = tmp_path / "cache"
    with http_server(tree) as server:
        path = fetch_model(
            "CANDELS_sim", cache_dir=cache, base_urls=[dead_url(), server.url + BASE], input_shape=SMALL, **QUICK
        )
        assert server.requests == [BASE + _info("CANDELS_sim").path]
    assert same_bytes(path, tree / BASE / _info("CANDELS_sim").path) and leftovers(cache) == []


def test_every_source_down_gives_one_clear_error(tmp_path):
    cache = tmp_path / "cache"
    dead_http, dead_ftp = dead_url(), dead_url().replace("http://", "ftp://")
    with pytest.raises(ModelDownloadError) as caught:
        fetch_model("CANDELS_sim", cache_dir=cache, base_urls=f"{dead_http}, {dead_ftp}", retries=1, **QUICK)
    text = str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert "'CANDELS_sim' (keras)" in text and text.count("connection refused (2 attempts)") == 2
    assert dead_http + _info("CANDELS_sim").path in text and dead_ftp + _info("CANDELS_sim").path in text
    assert cached_path("CANDELS_sim", cache_dir=cache) in text
    assert "single archive" in text and "model_load_path" in text
    assert cached_files(cache) == [] and leftovers(cache) == []


def test_missing_file_http_404_and_ftp_550_not_retried(tmp_path):
    empty, cache = tmp_path / "empty", tmp_path / "cache"
    empty.mkdir()
    with http_server(empty) as server, ftp_server(empty) as ftp:
        with pytest.raises(ModelDownloadError) as caught:
            fetch_model("CANDELS_sim", cache_dir=cache, base_urls=[server.url + BASE, ftp + BASE], retries=3, **QUICK)
        assert len(server.requests) == 1  # a missing file is not retried
    text = str(caught.value)
    assert "HTTP 404" in text and "FTP error 550" in text
    assert cached_files(cache) == [] and leftovers(cache) == []


def test_transfer_cut_mid_file_is_retried_then_refused(tree, tmp_path):
    cache, rel = tmp_path / "cache", _info("CANDELS_sim").path
    with http_server(tree, rules={BASE + rel: ("truncate", 0.5)}) as server:
        with pytest.raises(ModelDownloadError, match="transfer cut short.*2 attempts"):
            fetch_model("CANDELS_sim", cache_dir=cache, base_urls=server.url + BASE, retries=1, **QUICK)
        assert len(server.requests) == 2
    assert cached_files(cache) == [] and leftovers(cache) == []


def test_ftp_transfer_shorter_than_announced_size_is_refused(tree, tmp_path):
    cache, size = tmp_path / "cache", (tree / BASE / _info("CANDELS_sim").path).stat().st_size
    with ftp_server(tree, size_offset=1000) as url:
        with pytest.raises(ModelDownloadError, match=f"received {size} of {size + 1000} bytes \\(2 attempts\\)"):
            fetch_model("CANDELS_sim", cache_dir=cache, base_urls=url + BASE, retries=1, **QUICK)
    assert cached_files(cache) == [] and leftovers(cache) == []


def test_sha256_checked_for_files_and_registry_entries(tree, tmp_path, monkeypatch):
    cache, rel = tmp_path / "cache", _info("CANDELS_sim").path
    digest = hashlib.sha256((tree / BASE / rel).read_bytes()).hexdigest()
    with http_server(tree) as server:
        base = server.url + BASE
        with pytest.raises(ModelDownloadError, match="SHA-256 mismatch"):
            fetch_file(rel, base_urls=base, cache_dir=cache, sha256="0" * 64, **QUICK)
        assert cached_files(cache) == []
        bad = dataclasses.replace(_info("CANDELS_sim"), sha256=((rel, "f" * 64),))
        monkeypatch.setitem(registry.MODELS, ("CANDELS_sim", "keras"), bad)
        with pytest.raises(ModelDownloadError, match="SHA-256 mismatch"):
            fetch_model("CANDELS_sim", base_urls=base, cache_dir=cache, input_shape=SMALL, **QUICK)
        assert cached_files(cache) == []
        path = fetch_file(rel, base_urls=base, cache_dir=cache, sha256=digest.upper(), **QUICK)
    assert path == cache / rel and same_bytes(path, tree / BASE / rel) and leftovers(cache) == []


def test_corrupt_keras_files_are_refused(tree, tmp_path):
    cache = tmp_path / "cache"
    with http_server(tree) as server:
        with pytest.raises(ModelDownloadError, match="content check failed: .* is not a readable HDF5 file"):
            fetch_model("SDSS_sim", cache_dir=cache, base_urls=server.url + BASE, input_shape=SMALL, **QUICK)
        shape_mismatch = r"not a GaMorNet Keras model for input shape \(32, 32, 1\): layer 13 \(dense_1\): expected"
        with pytest.raises(ModelDownloadError, match=shape_mismatch):
            fetch_model("SDSS_tl", cache_dir=cache, base_urls=server.url + BASE, input_shape=SMALL, **QUICK)
    assert cached_files(cache) == [] and leftovers(cache) == []


def test_incomplete_or_damaged_checkpoint_leaves_nothing(ckpt_tree, tmp_path):
    cache = tmp_path / "cache"
    with ftp_server(ckpt_tree) as url:
        with pytest.raises(ModelDownloadError, match=r"check-571275\.meta: FTP error 550"):
            fetch_model("CANDELS_tl", "tflearn", cache_dir=cache, base_urls=url + BASE, input_shape=SMALL, **QUICK)
        assert cached_files(cache) == []  # the .data and .index files that did arrive were not kept
        with pytest.raises(ModelDownloadError, match="not a readable TensorFlow checkpoint"):
            fetch_model("SDSS_sim", "tflearn", cache_dir=cache, base_urls=url + BASE, input_shape=SMALL, **QUICK)
    assert cached_files(cache) == [] and leftovers(cache) == []


def test_slow_server_hits_the_timeout(tree, tmp_path):
    cache, rel = tmp_path / "cache", _info("CANDELS_sim").path
    slow = {**QUICK, "timeout": 1.0, "retries": 0}
    with http_server(tree, rules={BASE + rel: ("stall", 3.0)}) as server:
        start = time.monotonic()
        with pytest.raises(ModelDownloadError, match=r"timed out \(no answer within 1 s\)"):
            fetch_model("CANDELS_sim", cache_dir=cache, base_urls=server.url + BASE, **slow)
        assert time.monotonic() - start < 2.8
    assert cached_files(cache) == [] and leftovers(cache) == []


_CHILD = """
import pathlib, sys, time
from gamornet.published.models import fetch_model
go, ready, base, cache = sys.argv[1:]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.005)
print(fetch_model("CANDELS_sim", base_urls=base, cache_dir=cache, input_shape=(32, 32, 1), progress=False))
"""


def test_two_processes_fetching_at_once_get_one_good_file(tree, tmp_path):
    cache, rel, go = tmp_path / "cache", _info("CANDELS_sim").path, tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with http_server(tree, rules={BASE + rel: ("throttle", 1.0)}) as server:
        ready = [tmp_path / f"ready{i}" for i in range(2)]
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(go), str(r), server.url + BASE, str(cache)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in ready
        ]
        try:
            deadline = time.monotonic() + 30
            while not all(r.exists() for r in ready) and time.monotonic() < deadline:
                time.sleep(0.01)
            go.touch()  # both start fetching now; the download takes 1 s
            results = [c.communicate(timeout=60) for c in children]
        finally:
            for c in children:
                if c.poll() is None:
                    c.kill()
        assert [c.returncode for c in children] == [0, 0], results
        assert server.requests == [BASE + rel]  # one download; the other process waited and used it
    paths = {out.strip() for out, _ in results}
    assert paths == {str(cache / rel)}
    assert same_bytes(cache / rel, tree / BASE / rel)
    assert cached_files(cache) == [cache / rel] and leftovers(cache) == []


def test_offline_mode_uses_cache_only(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("GAMORNET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    dest = Path(cached_path("CANDELS_sim"))
    with http_server(tree) as server:
        with pytest.raises(ModelDownloadError) as caught:
            fetch_model("CANDELS_sim", base_urls=server.url + BASE, input_shape=SMALL, **QUICK)
        assert "GAMORNET_OFFLINE" in str(caught.value) and str(dest) in str(caught.value)
        dest.parent.mkdir(parents=True)  # placed by hand, as the error message explains
        shutil.copyfile(tree / BASE / _info("CANDELS_sim").path, dest)
        assert fetch_model("CANDELS_sim", base_urls=server.url + BASE, input_shape=SMALL, **QUICK) == str(dest)
        assert server.requests == []
    assert leftovers(tmp_path / "home") == []


def test_cache_dir_that_cannot_be_created(tree, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # fails even as root, unlike chmod
    monkeypatch.setenv("GAMORNET_HOME", str(blocker / "cache"))
    with http_server(tree) as server:
        with pytest.raises(CacheDirError) as caught:
            fetch_model("CANDELS_sim", base_urls=server.url + BASE, input_shape=SMALL, **QUICK)
        assert server.requests == []
    assert str(blocker / "cache") in str(caught.value) and "GAMORNET_HOME" in str(caught.value)
    assert isinstance(caught.value, ModelDownloadError) and blocker.read_text() == "not a directory"


def test_file_urls_and_plain_directories(tree, tmp_path):
    for i, base in enumerate([(tree / BASE).as_uri(), str(tree / BASE)]):
        cache = tmp_path / f"cache{i}"
        path = fetch_model("CANDELS_sim", cache_dir=cache, base_urls=base, input_shape=SMALL, **QUICK)
        assert same_bytes(path, tree / BASE / _info("CANDELS_sim").path) and leftovers(cache) == []
    with pytest.raises(ModelDownloadError, match="no such file"):
        fetch_model("CANDELS_sim", cache_dir=tmp_path / "c", base_urls=(tmp_path / "nowhere").as_uri(), **QUICK)
    assert cached_files(tmp_path / "c") == []


def test_env_url_list_and_resolve_model_path(tree, tmp_path, monkeypatch):
    from gamornet.utils import resolve_model_path

    home, empty = tmp_path / "home", tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("GAMORNET_HOME", str(home))
    with http_server(empty) as missing, ftp_server(tree) as ftp:
        monkeypatch.setenv("GAMORNET_MODELS_URL", f" {missing.url}{BASE},\n{ftp}{BASE} ")
        assert published.mirror_urls() == [missing.url + BASE, ftp + BASE]
        path = resolve_model_path("CANDELS_tl", "keras", progress=False)  # validated at the real CANDELS shape
        assert len(missing.requests) == 1
    assert path == str(home / _info("CANDELS_tl").path) == cached_path("CANDELS_tl")
    assert same_bytes(path, tree / BASE / _info("CANDELS_tl").path) and leftovers(home) == []
    assert resolve_model_path("my/own_model.h5") == "my/own_model.h5"
    assert resolve_model_path(Path("my/own_model.h5")) == "my/own_model.h5"


def test_interrupted_download_never_becomes_a_cache_entry(tree, tmp_path):
    cache, rel = tmp_path / "cache", _info("CANDELS_sim").path
    folder = (cache / rel).parent
    folder.mkdir(parents=True)
    stale = folder / ".model_candels_sim_trained.x1y2.part"  # left by a killed process
    stale.mkdir()
    (stale / Path(rel).name).write_bytes(b"half a file")

    def interrupt(path: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_file(rel, base_urls=(tree / BASE).as_uri(), cache_dir=cache, validate=interrupt, **QUICK)
    assert cached_files(cache) == [] and leftovers(cache) == []
    path = fetch_file(rel, base_urls=(tree / BASE).as_uri(), cache_dir=cache, **QUICK)
    assert same_bytes(path, tree / BASE / rel) and leftovers(cache) == []


def test_defaults_cache_dir_and_mirror_list(tmp_path, monkeypatch):
    assert published.mirror_urls() == [registry.DEFAULT_BASE_URL]
    assert published.cache_dir().name == "gamornet"
    monkeypatch.setenv("GAMORNET_HOME", str(tmp_path))
    assert published.cache_dir() == tmp_path
    assert published.mirror_urls("ftp://a/x/ http://b/y/,https://c/") == ["ftp://a/x/", "http://b/y/", "https://c/"]
    with pytest.raises(ValueError, match="inside the published tree"):
        fetch_file("../etc/passwd", progress=False)
    with pytest.raises(ValueError, match="not a published model"):
        fetch_model("SDSS_huge")


def test_cli_download_and_models(tree, tmp_path, monkeypatch, capsys):
    from gamornet.cli.models import register_cli

    monkeypatch.setenv("GAMORNET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMORNET_MODELS_URL", (tree / BASE).as_uri())
    parser = argparse.ArgumentParser(prog="gamornet")
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["download", "CANDELS_tl", "--flavor", "keras", "--quiet"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == cached_path("CANDELS_tl") and err == ""
    args = parser.parse_args(["models"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "home") in out and (tree / BASE).as_uri() in out
    assert "CANDELS_tl   keras    input CANDELS  cached" in out
    assert "CANDELS_sim  keras    input CANDELS  not cached" in out
    assert cached_path("CANDELS_tl") in out and "missing" in out


def _truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


def test_damaged_cached_model_is_checked_and_fetched_again(tree, tmp_path, capsys):
    cache, rel = tmp_path / "cache", _info("CANDELS_sim").path
    with http_server(tree) as server:
        base = server.url + BASE
        path = Path(fetch_model("CANDELS_sim", cache_dir=cache, base_urls=base, input_shape=SMALL, **QUICK))
        assert fetch_model("CANDELS_sim", cache_dir=cache, base_urls=base, input_shape=SMALL, **QUICK) == str(path)
        assert server.requests == [BASE + rel]  # a sound cached file: no network
        _truncate(path)  # damaged in the cache (an interrupted copy, a full disk...)
        again = fetch_model("CANDELS_sim", cache_dir=cache, base_urls=base, input_shape=SMALL, progress=True,
                            backoff=0.0, timeout=10.0)
        assert again == str(path) and server.requests == [BASE + rel] * 2
    err = capsys.readouterr().err
    assert "The cached copy of the published model 'CANDELS_sim' (keras) is damaged" in err and "HDF5" in err
    assert same_bytes(path, tree / BASE / rel) and leftovers(cache) == []


def test_damaged_cached_checkpoint_is_fetched_again_over_ftp(ckpt_tree, tmp_path):
    cache, info = tmp_path / "cache", _info("CANDELS_sim", "tflearn")
    with ftp_server(ckpt_tree) as url:
        prefix = fetch_model("CANDELS_sim", "tflearn", cache_dir=cache, base_urls=url + BASE, input_shape=SMALL,
                             **QUICK)
        _truncate(cache / (info.path + ".data-00000-of-00001"))
        assert fetch_model("CANDELS_sim", "tflearn", cache_dir=cache, base_urls=url + BASE, input_shape=SMALL,
                           **QUICK) == prefix
    for rel in info.files:
        assert same_bytes(cache / rel, ckpt_tree / BASE / rel)
    validate_checkpoint(prefix, SMALL)
    assert leftovers(cache) == []


def test_damaged_cached_model_offline_names_the_cache_path(tree, tmp_path, monkeypatch):
    cache, rel = tmp_path / "cache", _info("CANDELS_sim").path
    fetch_model("CANDELS_sim", cache_dir=cache, base_urls=(tree / BASE).as_uri(), input_shape=SMALL, **QUICK)
    half = _truncate(cache / rel)[: (cache / rel).stat().st_size]
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    with pytest.raises(ModelDownloadError) as caught:
        fetch_model("CANDELS_sim", cache_dir=cache, base_urls=(tree / BASE).as_uri(), input_shape=SMALL, **QUICK)
    message = str(caught.value)
    assert "is damaged" in message and str(cache / rel) in message and "GAMORNET_OFFLINE" in message
    assert (cache / rel).read_bytes() == half  # left for the user to replace


def test_download_command_checks_a_cached_model_fully(tree, tmp_path, monkeypatch, capsys):
    from gamornet.cli.models import register_cli

    home, rel = tmp_path / "home", _info("CANDELS_tl").path
    monkeypatch.setenv("GAMORNET_HOME", str(home))
    write_keras_file(home / rel, (64, 64, 1))  # readable HDF5, but not the published CANDELS model
    parser = argparse.ArgumentParser(prog="gamornet")
    register_cli(parser.add_subparsers(dest="command"))
    with http_server(tree) as server:
        monkeypatch.setenv("GAMORNET_MODELS_URL", server.url + BASE)
        assert fetch_model("CANDELS_tl", **QUICK) == str(home / rel)  # loads: only damage is looked for
        assert server.requests == []
        args = parser.parse_args(["download", "CANDELS_tl", "--backoff", "0"])
        assert args.func(args) == 0
        assert server.requests == [BASE + rel]
        out, err = capsys.readouterr()
        assert out.strip() == str(home / rel) and "is damaged" in err and "(11, 11, 1, 96)" not in err
        assert same_bytes(home / rel, tree / BASE / rel)
        assert args.func(args) == 0  # now sound: checked, not fetched
        assert server.requests == [BASE + rel] and "checked and is sound" in capsys.readouterr().err
        bad = dataclasses.replace(_info("CANDELS_tl"), sha256=((rel, "e" * 64),))
        monkeypatch.setitem(registry.MODELS, ("CANDELS_tl", "keras"), bad)
        with pytest.raises(ModelDownloadError, match="SHA-256 mismatch") as caught:  # a digest nothing matches
            args.func(args)
        assert "The cached copy there is damaged (SHA-256 of" in str(caught.value)
        assert same_bytes(home / rel, tree / BASE / rel) and leftovers(home) == []


def test_repair_model_for_loaders_whose_load_failed(tree, tmp_path):
    import h5py

    cache, rel = tmp_path / "cache", _info("CANDELS_sim").path
    (cache / rel).parent.mkdir(parents=True)
    with h5py.File(cache / rel, "w") as f:  # readable HDF5 holding something else: only loading it fails
        f["x"] = [1, 2, 3]
    kwargs = dict(cache_dir=cache, base_urls=(tree / BASE).as_uri(), input_shape=SMALL, **QUICK)
    assert fetch_model("CANDELS_sim", **kwargs) == str(cache / rel)
    assert published.repair_model("CANDELS_sim", "keras", **kwargs) is True
    assert same_bytes(cache / rel, tree / BASE / rel)
    assert published.repair_model("CANDELS_sim", "keras", **kwargs) is False  # sound: the failure lies elsewhere


@pytest.mark.parametrize(
    "option, value",
    [("retries", -1), ("retries", 1.5), ("retries", True), ("timeout", 0), ("timeout", float("nan")),
     ("timeout", "5"), ("backoff", -1.0), ("backoff", float("inf"))],
)
def test_bad_network_settings_are_refused_before_any_request(tree, tmp_path, option, value):
    settings = {**QUICK, option: value}
    with http_server(tree) as server:
        for call in (lambda: fetch_model("CANDELS_sim", cache_dir=tmp_path, base_urls=server.url + BASE, **settings),
                     lambda: fetch_file("x.txt", cache_dir=tmp_path, base_urls=server.url + BASE, **settings)):
            with pytest.raises(ValueError, match=rf"`{option}` must be .*Received: {option}={value!r}"):
                call()
        assert server.requests == []


def test_cli_refuses_bad_network_settings(tmp_path, monkeypatch, capsys):
    from gamornet.cli import main

    monkeypatch.setenv("GAMORNET_HOME", str(tmp_path))
    monkeypatch.setenv("GAMORNET_MODELS_URL", dead_url())  # never the authors' server, whatever happens

    for argv, shown in ((["--retries", "-1"], "`--retries` must be an integer >= 0. Received: --retries='-1'"),
                        (["--timeout", "0"], "`--timeout` must be a finite number > 0. Received: --timeout='0'"),
                        (["--backoff", "nan"], "`--backoff` must be a finite number >= 0. Received: --backoff='nan'")):
        with pytest.raises(SystemExit) as caught:
            main(["download", "CANDELS_sim", *argv])
        assert caught.value.code == 2 and shown in capsys.readouterr().err


def test_download_action_decides_use_download_or_repair(tmp_path, capsys):
    dests = [tmp_path / "m.ckpt.index", tmp_path / "m.ckpt.data"]
    settings = {"offline": False, "offline_note": "offline here", "help": "Ask.", "progress": True}
    asked = []

    def problem(answer):
        return lambda: asked.append(answer) or answer

    # A file missing: download, without asking the cached copy anything; offline, an error naming it.
    dests[0].write_bytes(b"x")
    assert transfers.download_action("M", dests, problem(None), **settings) == ("download", None)
    assert asked == []
    with pytest.raises(ModelDownloadError, match=r"(?s)M is not in the cache and offline here.*m\.ckpt\.data.*Ask\."):
        transfers.download_action("M", dests, problem(None), **{**settings, "offline": True})
    # All cached: used when sound, repaired (with a message) when damaged; offline, an error naming the damage.
    dests[1].write_bytes(b"y")
    assert transfers.download_action("M", dests, problem(None), **settings) == ("use", None)
    assert transfers.download_action("M", dests, problem("torn"), **settings) == ("repair", "torn")
    assert "The cached copy of M is damaged (torn); downloading it again." in capsys.readouterr().err
    with pytest.raises(ModelDownloadError, match=r"(?s)damaged \(torn\) and offline here.*m\.ckpt\.index"):
        transfers.download_action("M", dests, problem("torn"), **{**settings, "offline": True})
    assert asked == [None, "torn", "torn"]

"""File prediction on a Dask cluster (127.0.0.1 only): tables equal to one process's, faults, resume, the CLI.

The reference table is a one-process run of the command line with TensorFlow's
thread pools of one thread, as in every worker below (``--nthreads 1``): the
same operations on the same batches, so a cluster's table must have the same
ids, order and labels, and probabilities within 1e-6 (float32 rounding; the
same kernels give equal values).  Against a one-process run with
TensorFlow's default pools (more threads split the sums differently) they
agree to ORDER_ATOL.

Few process starts, as each worker imports TensorFlow: one LocalCluster of two
workers shared by the module, and each test that needs its own scheduler or
``--workers`` cluster starts only that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402

from gamornet.core.files import OutputLockedError  # noqa: E402
from gamornet.core.network import CLASS_NAMES  # noqa: E402
from gamornet.predict import distributed as on_cluster  # noqa: E402
from gamornet.predict import predict_files, read_table  # noqa: E402
from gamornet.predict.chunks import ChunkStore, StaleChunkError, write_chunk  # noqa: E402
from gamornet.predict.tables import CHUNKS_SUFFIX  # noqa: E402

from helpers import ORDER_ATOL, REPO, saved_keras_model  # noqa: E402

SHAPE = (32, 32, 1)
N_IMAGES = 192
#: Settings of every run compared with the reference (same batch size, same chunks).
RUN = {"input_shape": SHAPE, "batch_size": 16, "chunk_size": 8, "progress": False}
CLI_RUN = ["--input-shape", "32,32,1", "--batch-size", "16", "--chunk-size", "8", "--quiet"]
N_CHUNKS = N_IMAGES // RUN["chunk_size"]
#: A child process whose TensorFlow uses one thread per pool, as a worker started with --nthreads 1.
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3", **extra)


def _probs(table: Table) -> np.ndarray:
    return np.stack([np.asarray(table[f"p_{c}"]) for c in CLASS_NAMES], axis=1)


#: Probabilities of the same operations on the same batches (one thread per pool on both sides).
SAME_RUN_ATOL = 1e-6


def _assert_same_table(a: Table, b: Table, atol: float = SAME_RUN_ATOL) -> None:
    """Same columns, ids, order and labels; probabilities within ``atol``."""
    assert a.colnames == b.colnames and len(a) == len(b)
    for name in a.colnames:
        if name.startswith("p_"):
            np.testing.assert_allclose(np.asarray(a[name]), np.asarray(b[name]), rtol=0, atol=atol, err_msg=name)
        else:
            assert np.array_equal(np.asarray(a[name]), np.asarray(b[name])), name


def _chunk_files(directory: str) -> set[str]:
    """Names of the complete chunks in a chunk folder (not the temporary files of chunks being written)."""
    if not os.path.isdir(directory):
        return set()
    return {n for n in os.listdir(directory) if re.fullmatch(r"chunk-\d{6}\.npz", n)}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> str:
    return saved_keras_model(tmp_path_factory.mktemp("model"), SHAPE, seed=3)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("cutouts")
    rng = np.random.default_rng(5)
    for i in range(N_IMAGES):
        fits.writeto(directory / f"g{i:04d}.fits", rng.normal(10.0, 3.0, size=SHAPE[:2]).astype(np.float32))
    return str(directory)


@pytest.fixture(scope="module")
def reference(image_dir, model_path, tmp_path_factory) -> dict:
    """A one-process run (the command line) in a child whose TensorFlow pools have one thread."""
    out = tmp_path_factory.mktemp("reference") / "one.ecsv"
    script = textwrap.dedent(f"""
        import json, sys
        from gamornet.cli import main

        code = main(["predict", {image_dir!r}, "--model", {model_path!r}, "--output", {str(out)!r},
                     *{CLI_RUN!r}])
        print(json.dumps({{"code": code, "dask": sorted(m for m in sys.modules
                                                       if m.split(".")[0] in ("dask", "distributed"))}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=_env(**ONE_THREAD), cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "table": read_table(out)}


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, on 127.0.0.1."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


@contextlib.contextmanager
def external_cluster(directory, n_workers: int):
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (each in its own process group)."""
    scheduler_file = os.path.join(directory, "scheduler.json")
    dask = [sys.executable, "-m", "dask"]
    env = _env()
    processes = []
    log = open(os.path.join(directory, "dask.log"), "wb")
    try:
        processes.append(subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                           "--scheduler-file", scheduler_file, "--no-dashboard"], env=env,
                                          stdout=log, stderr=log, start_new_session=True))
        deadline = time.monotonic() + 120
        while not os.path.exists(scheduler_file):
            assert time.monotonic() < deadline and processes[0].poll() is None, "the scheduler did not start"
            time.sleep(0.1)
        for _ in range(n_workers):
            processes.append(subprocess.Popen([*dask, "worker", "--nthreads", "1", "--host", "127.0.0.1",
                                               "--scheduler-file", scheduler_file, "--no-dashboard"], env=env,
                                              stdout=log, stderr=log, start_new_session=True))
        with Client(scheduler_file=scheduler_file) as watcher:
            watcher.wait_for_workers(n_workers, timeout=300)
        yield scheduler_file, processes
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _wait(condition, what: str, seconds: float = 300.0, poll: float = 0.02) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


# ---------------------------------------------------------------- one process imports no Dask


def test_plain_run_imports_no_dask(reference):
    assert reference["code"] == 0 and len(reference["table"]) == N_IMAGES
    assert reference["dask"] == []


# ---------------------------------------------------------------- a LocalCluster of two processes


def test_local_cluster_table_equals_one_process(image_dir, model_path, reference, client, tmp_path):
    out = str(tmp_path / "cluster.ecsv")
    progress, refused = [], []

    def second_writer(done, total):
        progress.append((done, total))
        if done == 2:  # the client holds the output lock while the workers write chunks
            with pytest.raises(OutputLockedError, match="being written by another run"):
                predict_files(image_dir, model_path, output=out, overwrite=True, **RUN)
            refused.append(done)

    table = predict_files(image_dir, model_path, output=out, client=client, on_chunk=second_writer, **RUN)
    _assert_same_table(table, reference["table"])
    _assert_same_table(read_table(out), reference["table"])
    assert table.meta["run_sha256"] == reference["table"].meta["run_sha256"]  # the same run
    assert [d for d, _ in progress] == list(range(1, N_CHUNKS + 1)) and refused == [2]
    assert not os.path.exists(out + CHUNKS_SUFFIX) and not os.path.exists(out + ".lock")

    # each worker process built the model once and sized TensorFlow's pools to its one thread
    def worker_state():
        import tensorflow as tf

        from gamornet.predict import distributed as module

        return (len(module._BACKENDS), tf.config.threading.get_intra_op_parallelism_threads(),
                tf.config.threading.get_inter_op_parallelism_threads())

    assert sorted(client.run(worker_state).values()) == [(1, 1, 1), (1, 1, 1)]

    in_memory = predict_files(image_dir, model_path, client=client, **RUN)  # no output: chunks come back
    _assert_same_table(in_memory, reference["table"])
    default_threads = predict_files(image_dir, model_path, **RUN)  # this process: TensorFlow's default pools
    assert default_threads["id"].tolist() == table["id"].tolist()
    np.testing.assert_allclose(_probs(table), _probs(default_threads), rtol=0, atol=ORDER_ATOL)
    assert sorted(client.run(worker_state).values()) == [(1, 1, 1), (1, 1, 1)]  # still one model per process


def test_mc_dropout_npy_and_bad_images_on_the_cluster(image_dir, model_path, reference, client, tmp_path):
    files = sorted(os.listdir(image_dir))[:40]
    inputs = [os.path.join(image_dir, name) for name in files]
    mc = predict_files(inputs, model_path, client=client, mc_samples=2, **RUN)
    here = predict_files(inputs, model_path, mc_samples=2, **RUN)  # chunk k's passes are seeded with seed + k
    assert mc["id"].tolist() == here["id"].tolist()
    for suffix in ("", "_mean", "_std"):
        for c in CLASS_NAMES:
            np.testing.assert_allclose(mc[f"p_{c}{suffix}"], here[f"p_{c}{suffix}"], rtol=0, atol=ORDER_ATOL)
    assert (np.asarray(mc["p_disk_std"]) > 0).all()

    # a .npy stack: each worker memory-maps the file itself (the task carries its name, not the data)
    stack = np.stack([fits.getdata(path) for path in inputs])[..., None]
    np.save(tmp_path / "stack.npy", stack)
    from_stack = predict_files(str(tmp_path / "stack.npy"), model_path, client=client, **RUN)
    here = predict_files(str(tmp_path / "stack.npy"), model_path, **RUN)
    assert sorted(from_stack["id"]) == sorted(f"stack.npy:{i}" for i in range(40))
    assert from_stack["id"].tolist() == here["id"].tolist()
    np.testing.assert_allclose(_probs(from_stack), _probs(here), rtol=0, atol=ORDER_ATOL)
    order = np.argsort([int(i.split(":")[1]) for i in from_stack["id"]])  # image i of the stack is inputs[i]
    assert [os.path.basename(i) for i in reference["table"]["id"][:40]] == files
    np.testing.assert_allclose(_probs(from_stack)[order], _probs(reference["table"])[:40], rtol=0,
                               atol=SAME_RUN_ATOL)

    nan = np.ones((32, 32), np.float32)
    nan[3, 4] = np.nan
    fits.writeto(tmp_path / "nan.fits", nan)
    with pytest.raises(ValueError, match=r"nan\.fits: has NaN or inf pixels"):  # raised on a worker, reported here
        predict_files([*inputs, str(tmp_path / "nan.fits")], model_path, client=client,
                      output=str(tmp_path / "t.ecsv"), **RUN)
    with pytest.warns(UserWarning, match="1 bad image"):
        skipped = predict_files([*inputs, str(tmp_path / "nan.fits")], model_path, client=client, skip_bad=True,
                                **RUN)
    assert len(skipped) == 40 and skipped.meta["nskipped"] == 1
    assert skipped.meta["skipped"][0].endswith("nan.fits: has NaN or inf pixels")


def test_interrupted_cluster_run_resumes_in_one_process(image_dir, model_path, reference, client, tmp_path):
    out = str(tmp_path / "run.ecsv")

    class Stop(Exception):
        pass

    def stop(done, total):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        predict_files(image_dir, model_path, output=out, client=client, on_chunk=stop, **RUN)
    # the run's cancelled tasks that were executing finish on the workers (their chunks are complete ones
    # of this run: the manifest still names it)
    def _worker_tasks(dask_worker=None) -> int:  # nested: pickled by value (the workers cannot import tests)
        return len(dask_worker.state.tasks)  # a cancelled task that is executing stays until it ends

    _wait(lambda: not any(client.run(_worker_tasks).values()), "the workers to finish the interrupted run's tasks",
          poll=0.2)
    chunks = out + CHUNKS_SUFFIX
    before = _chunk_files(chunks)
    assert not os.path.exists(out) and 3 <= len(before) < N_CHUNKS
    with pytest.raises(FileExistsError, match="failed run .*Stop"):
        predict_files(image_dir, model_path, output=out, client=client, **RUN)
    assert _chunk_files(chunks) == before

    # resumed in one process (no cluster): only the missing chunks are predicted, the complete ones are kept
    calls = []
    resumed = predict_files(image_dir, model_path, output=out, resume=True,
                            on_chunk=lambda done, total: calls.append(done), **RUN)
    assert calls == list(range(len(before) + 1, N_CHUNKS + 1))
    _assert_same_table(resumed, reference["table"], atol=ORDER_ATOL)  # this process: TensorFlow's default pools
    _assert_same_table(read_table(out), resumed, atol=0)


def test_stale_chunks_of_an_earlier_run_are_refused(image_dir, model_path, tmp_path):
    out = str(tmp_path / "out.ecsv")
    arrays = {"ids": np.array(["a"]), "probs": np.zeros((1, 3), np.float32)}
    first = ChunkStore(out, {"setting": 1}, resume=False)
    write_chunk(first.dir, 0, arrays, first.run_id)
    second = ChunkStore(out, {"setting": 1}, resume=True)  # a resumed run: new run id, same chunks
    assert second.run_id != first.run_id and second.done() == {0}
    with pytest.raises(StaleChunkError, match=f"computed for run {first.run_id}"):
        write_chunk(second.dir, 1, arrays, first.run_id)
    assert second.done() == {0} and sorted(os.listdir(second.dir)) == ["chunk-000000.npz", "manifest.json"]
    write_chunk(second.dir, 1, arrays, second.run_id)
    assert second.done() == {0, 1}
    second.remove()

    # a task of an interrupted run, finishing after the run was started again, does not write its chunk
    refs = [os.path.join(image_dir, name) for name in sorted(os.listdir(image_dir))[:16]]

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_files(refs, model_path, output=out, on_chunk=interrupt, **RUN)
    manifest_path = out + CHUNKS_SUFFIX + "/manifest.json"
    with open(manifest_path) as f:
        manifest = json.load(f)
    old_job, task = _one_task(refs, model_path, out, manifest.pop("run_id"))
    restarted = ChunkStore(out, manifest, resume=True)
    with pytest.raises(StaleChunkError):
        on_cluster.predict_chunk(old_job, task)
    assert restarted.done() == {0}
    assert on_cluster.predict_chunk(dataclasses.replace(old_job, run_id=restarted.run_id), task)["n"] == 8
    assert restarted.done() == {0, 1}
    resumed = predict_files(refs, model_path, output=out, resume=True, **RUN)
    _assert_same_table(resumed, predict_files(refs, model_path, **RUN))


def _one_task(refs, model_path, out, run_id):
    """The task of chunk 1 as a cluster run with run id ``run_id`` would send it."""
    import functools

    from gamornet.predict.files import _Backend
    from gamornet.predict.images import ImageReader, scan_images
    from gamornet.predict.inputs import list_images

    listed, _ = list_images(refs)
    good, _ = scan_images(listed, SHAPE)
    make_backend = functools.partial(_Backend, model=model_path, flavor="keras", shape=SHAPE, batch_size=16,
                                     mc_samples=0, seed=0)
    job = on_cluster._Job(make_backend, ImageReader(SHAPE), out + CHUNKS_SUFFIX, run_id, 1, 1)
    return job, on_cluster._chunk_task(1, good, list(range(len(good))), RUN["chunk_size"], {})


# ---------------------------------------------------------------- external scheduler and workers


def test_external_cluster_survives_a_killed_worker_and_a_lost_scheduler_is_resumed(image_dir, model_path, reference,
                                                                                  client, tmp_path):
    """``gamornet predict --scheduler`` with one of two ``dask worker`` processes killed mid-run; then, on the
    same cluster (the surviving worker), a run whose scheduler is killed, resumed on two other workers."""
    out, lost_out = str(tmp_path / "killed.ecsv"), str(tmp_path / "lost.ecsv")
    chunks = out + CHUNKS_SUFFIX
    with external_cluster(str(tmp_path), n_workers=2) as (scheduler_file, processes):
        with open(scheduler_file) as f:
            address = json.load(f)["address"]
        assert address.startswith("tcp://127.0.0.1:")
        command = [sys.executable, "-m", "gamornet", "predict", image_dir, "--model", model_path, "--output", out,
                   "--scheduler", address, *CLI_RUN]
        run = subprocess.Popen(command, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        with Client(scheduler_file=scheduler_file) as watcher:
            pids = watcher.run(os.getpid)
            _wait(lambda: _chunk_files(chunks) or run.poll() is not None, "the first chunk")
            assert run.poll() is None, f"the run ended before a worker could be killed: {run.communicate()[1][-3000:]}"
            # the worker to kill: one holding chunk tasks
            held = {worker: [key for key in keys if str(key).startswith("gamornet-chunk-")]
                    for worker, keys in watcher.processing().items()}
            victim = max(held, key=lambda worker: len(held[worker]))
            assert held[victim], held
            os.killpg(os.getpgid(pids[victim]), signal.SIGKILL)  # the worker and its nanny
            done_at_kill = _chunk_files(chunks)
            _, stderr = run.communicate(timeout=600)
            assert run.returncode == 0, stderr[-3000:]
            assert list(watcher.scheduler_info()["workers"]) == [w for w in pids if w != victim]

            # the scheduler sent the killed worker's chunk tasks to a worker again (from its transition log)
            def _started_twice(keys, dask_scheduler=None) -> list:  # nested: pickled by value
                return [key for key in keys
                        if sum(t[0] == key and t[2] == "processing" for t in dask_scheduler.story(key)) > 1]

            rerun = watcher.run_on_scheduler(_started_twice, held[victim])
        assert rerun and len(done_at_kill) < N_CHUNKS, (rerun, held)
        _assert_same_table(read_table(out), reference["table"])
        assert not os.path.exists(chunks)

        # the scheduler killed during a run: a clear error, the complete chunks kept
        def kill_scheduler(done, total):
            if done == 2:
                os.killpg(processes[0].pid, signal.SIGKILL)

        with Client(scheduler_file=scheduler_file) as remote:
            with pytest.raises(on_cluster.SchedulerLostError,
                               match=rf"lost the connection to the Dask scheduler .* after \d+ of {N_CHUNKS} chunks.*"
                                     r"kept in .*lost\.ecsv\.chunks.*--resume"):
                predict_files(image_dir, model_path, output=lost_out, client=remote, on_chunk=kill_scheduler, **RUN)
    assert not os.path.exists(lost_out) and not os.path.exists(lost_out + ".lock")
    with open(lost_out + CHUNKS_SUFFIX + "/manifest.json") as f:
        assert "SchedulerLostError" in json.load(f)["failed"]
    before = _chunk_files(lost_out + CHUNKS_SUFFIX)  # the workers are gone with the cluster: nothing comes later
    assert 2 <= len(before) < N_CHUNKS

    # resumed on a cluster of two workers (the interrupted run had one): only the missing chunks are tasks
    calls = []
    resumed = predict_files(image_dir, model_path, output=lost_out, resume=True, client=client,
                            on_chunk=lambda done, total: calls.append(done), **RUN)
    assert calls == list(range(len(before) + 1, N_CHUNKS + 1))
    _assert_same_table(resumed, reference["table"])


# ---------------------------------------------------------------- the command line


def test_cli_workers_writes_the_one_process_table(image_dir, model_path, reference, tmp_path):
    out = str(tmp_path / "workers.ecsv")
    proc = subprocess.run([sys.executable, "-m", "gamornet", "predict", image_dir, "--model", model_path,
                           "--output", out, "--workers", "2", *CLI_RUN], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_table(read_table(out), reference["table"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cluster_arguments_are_checked_first(image_dir, model_path, client, tmp_path, capsys):
    from gamornet.cli import main

    images = np.zeros((4, *SHAPE), np.float32)
    with pytest.raises(ValueError, match=r"`client` needs image files.*numpy\.save.*Received: inputs=array of shape"):
        predict_files(images, model_path, client=client, **RUN)
    with pytest.raises(TypeError, match=r"`client` must be a distributed\.Client\. Received: client='tcp://x:1'"):
        predict_files(image_dir, model_path, client="tcp://x:1", **RUN)
    with pytest.raises(ValueError, match=r"`strategy` must be 'auto' or None.*Received: strategy="):
        predict_files(image_dir, model_path, client=client, strategy=object(), **RUN)
    with pytest.raises(ValueError, match=r"`read_threads` must be .*Received: read_threads=0"):
        predict_files(image_dir, model_path, read_threads=0, **RUN)
    with pytest.warns(DeprecationWarning, match="`read_threads`"):
        old = predict_files(os.path.join(image_dir, "g0000.fits"), model_path, workers=1, **RUN)
    assert old["id"].tolist() == ["g0000.fits"]

    for extra, message in [
        (["--workers", "0"], r"argument --workers: `workers` must be an integer >= 1\. Received: workers='0'"),
        (["--scheduler", "no such file"], r"argument --scheduler: `scheduler` must be a Dask scheduler address"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], r"not allowed with argument"),
    ]:
        with pytest.raises(SystemExit):
            main(["predict", image_dir, "--model", model_path, *CLI_RUN, *extra])
        assert __import__("re").search(message, capsys.readouterr().err), extra

    import dask

    port = _free_port()  # nothing listens there
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        code = main(["predict", image_dir, "--model", model_path, "--output", str(tmp_path / "never.ecsv"),
                     "--scheduler", f"tcp://127.0.0.1:{port}", *CLI_RUN])
    assert code == 2
    assert f"cannot connect to the Dask scheduler at tcp://127.0.0.1:{port}" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []

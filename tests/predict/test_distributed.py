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
import shutil
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


def _start_worker(scheduler_file: str, log, cwd=None) -> subprocess.Popen:
    """A ``dask worker`` process of one thread (in its own process group), started in ``cwd``."""
    return subprocess.Popen([sys.executable, "-m", "dask", "worker", "--nthreads", "1", "--host", "127.0.0.1",
                             "--scheduler-file", scheduler_file, "--no-dashboard"], env=_env(), cwd=cwd, stdout=log,
                            stderr=log, start_new_session=True)


@contextlib.contextmanager
def external_cluster(directory, n_workers: int, cwd=None):
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (each in its own process group).

    The workers run in ``cwd`` (by default this process's working directory).
    """
    scheduler_file = os.path.join(directory, "scheduler.json")
    processes = []
    log = open(os.path.join(directory, "dask.log"), "wb")
    try:
        processes.append(subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                                           "--port", "0", "--scheduler-file", scheduler_file, "--no-dashboard"],
                                          env=_env(), stdout=log, stderr=log, start_new_session=True))
        deadline = time.monotonic() + 120
        while not os.path.exists(scheduler_file):
            assert time.monotonic() < deadline and processes[0].poll() is None, "the scheduler did not start"
            time.sleep(0.1)
        processes += [_start_worker(scheduler_file, log, cwd) for _ in range(n_workers)]
        if n_workers:
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


@pytest.mark.slow
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

        return (len(module._FORWARD_PASSES), tf.config.threading.get_intra_op_parallelism_threads(),
                tf.config.threading.get_inter_op_parallelism_threads())

    assert sorted(client.run(worker_state).values()) == [(1, 1, 1), (1, 1, 1)]

    in_memory = predict_files(image_dir, model_path, client=client, **RUN)  # no output: chunks come back
    _assert_same_table(in_memory, reference["table"])
    default_threads = predict_files(image_dir, model_path, **RUN)  # this process: TensorFlow's default pools
    assert default_threads["id"].tolist() == table["id"].tolist()
    np.testing.assert_allclose(_probs(table), _probs(default_threads), rtol=0, atol=ORDER_ATOL)
    assert sorted(client.run(worker_state).values()) == [(1, 1, 1), (1, 1, 1)]  # still one model per process


@pytest.mark.slow
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


@pytest.mark.slow
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
    from gamornet.engines import choose_engine
    from gamornet.predict.images import ImageReader, scan_images
    from gamornet.predict.inputs import list_images
    from gamornet.predict.passes import ChunkPlan, ForwardSpec

    listed, _ = list_images(refs)
    good, _ = scan_images(listed, SHAPE)
    spec = ForwardSpec.describe(model_path, "keras", SHAPE, choose_engine(), batch_size=16, mc_samples=0,
                                seed=0)  # the engine predict_files(**RUN) chooses: the run's chunks agree exactly
    run = on_cluster.ClusterRun(spec, ImageReader(SHAPE), out + CHUNKS_SUFFIX, run_id, 1, 1)
    plan = ChunkPlan(good, list(range(len(good))), [1], 2, RUN["chunk_size"])
    return run, on_cluster.chunk_task(1, plan, {})


# ---------------------------------------------------------------- external scheduler and workers


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ---------------------------------------------------------------- what workers get: resolved on the client


def _copy_images(directory, n: int, image_dir: str) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    names = sorted(os.listdir(image_dir))[:n]
    for name in names:
        shutil.copyfile(os.path.join(image_dir, name), os.path.join(directory, name))
    return names


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["keras", "openvino"])
def test_a_replaced_model_file_is_loaded_again_by_a_reused_client(engine, image_dir, model_path, client, tmp_path):
    if engine == "openvino":
        pytest.importorskip("openvino")
    other = saved_keras_model(tmp_path, SHAPE, seed=4)  # same architecture: a file of the same size or so
    inputs = [os.path.join(image_dir, name) for name in sorted(os.listdir(image_dir))[:16]]
    current = str(tmp_path / "M.keras")
    shutil.copyfile(model_path, current)
    first = predict_files(inputs, current, client=client, engine=engine, **RUN)
    shutil.copyfile(other, current)  # model B over the same path, on the same workers
    second = predict_files(inputs, current, client=client, engine=engine, **RUN)
    np.testing.assert_allclose(_probs(first), _probs(predict_files(inputs, model_path, engine=engine, **RUN)),
                               rtol=0, atol=ORDER_ATOL)
    np.testing.assert_allclose(_probs(second), _probs(predict_files(inputs, other, engine=engine, **RUN)),
                               rtol=0, atol=ORDER_ATOL)
    assert np.abs(_probs(second) - _probs(first)).max() > 1e-3  # B's numbers, not A's kept in memory


@pytest.mark.slow
def test_relative_model_inputs_and_output_are_resolved_on_the_client(image_dir, model_path, reference, tmp_path):
    """Workers started in another directory holding another ``model.keras``: the run uses the client's files."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    names = _copy_images(here / "cut", 16, image_dir)
    shutil.copyfile(model_path, here / "model.keras")
    os.makedirs(elsewhere)
    other = saved_keras_model(elsewhere, SHAPE, seed=4)
    os.rename(other, elsewhere / "model.keras")  # the workers' directory: another model of the same name
    command = [sys.executable, "-m", "gamornet", "predict", "cut", "--model", "model.keras", "-o", "t7c.ecsv",
               "--overwrite", *CLI_RUN]
    with external_cluster(str(tmp_path), n_workers=1, cwd=elsewhere) as (scheduler_file, _):
        first = subprocess.run([*command, "--scheduler", scheduler_file], env=_env(), cwd=here, capture_output=True,
                               text=True, timeout=600)
        assert first.returncode == 0, first.stderr[-3000:]
        table = read_table(str(here / "t7c.ecsv"))
        assert table["id"].tolist() == names and table.meta["model"] == str(here / "model.keras")
        _assert_same_table(table, reference["table"][:16])  # the first block of 16: the same batch and rows
        assert not os.path.exists(here / ("t7c.ecsv" + CHUNKS_SUFFIX))
        assert not os.path.exists(elsewhere / ("t7c.ecsv" + CHUNKS_SUFFIX))

        # the same command on the same worker after model.keras is replaced: the new file's numbers
        shutil.copyfile(elsewhere / "model.keras", here / "model.keras")
        second = subprocess.run([*command, "--scheduler", scheduler_file], env=_env(), cwd=here, capture_output=True,
                                text=True, timeout=600)
        assert second.returncode == 0, second.stderr[-3000:]
    expected = predict_files([str(here / "cut" / name) for name in names], str(elsewhere / "model.keras"), **RUN)
    np.testing.assert_allclose(_probs(read_table(str(here / "t7c.ecsv"))), _probs(expected), rtol=0,
                               atol=ORDER_ATOL)


# ---------------------------------------------------------------- no scheduler, no workers


def test_unreachable_scheduler_and_bad_ports_are_reported_at_once(tmp_path, capsys):
    from gamornet.cli import main

    (tmp_path / "m.keras").write_bytes(b"never opened")
    port = _free_port()  # nothing listens there: connection refused
    with open(tmp_path / "scheduler.json", "w") as f:
        json.dump({"address": f"tcp://127.0.0.1:{port}"}, f)
    base = ["predict", str(tmp_path), "--model", str(tmp_path / "m.keras"), "--input-shape", "32,32,1", "--quiet",
            "--output", str(tmp_path / "never.ecsv")]
    for scheduler in (f"tcp://127.0.0.1:{port}", str(tmp_path / "scheduler.json")):
        started = time.monotonic()
        assert main([*base, "--scheduler", scheduler]) == 2
        assert time.monotonic() - started < 5
        err = capsys.readouterr().err
        assert err.startswith(f"gamornet predict: error: cannot connect to the Dask scheduler at {scheduler}: ")
        assert err.count("\n") == 1 and f"Received: scheduler={scheduler!r}" in err
    assert not os.path.exists(tmp_path / "never.ecsv")

    for address in ("tcp://127.0.0.1:99999", "127.0.0.1:0", "tcp://[::1]:65536"):
        with pytest.raises(ValueError, match=rf"port in 1\.\.65535\. Received: scheduler='{re.escape(address)}'"):
            on_cluster.check_scheduler(address)
    with pytest.raises(SystemExit):
        main([*base, "--scheduler", "tcp://127.0.0.1:99999"])
    assert "argument --scheduler: `scheduler` must have a port in 1..65535" in capsys.readouterr().err
    assert on_cluster.check_scheduler("tcp://127.0.0.1:65535") == "tcp://127.0.0.1:65535"


@pytest.mark.slow
def test_a_cluster_without_workers_ends_the_run(image_dir, model_path, tmp_path):
    """No worker at all, then the last worker lost mid-run: a one-line error after ``worker_timeout``."""
    _copy_images(tmp_path / "cut", 16, image_dir)
    out = str(tmp_path / "none.ecsv")
    with external_cluster(str(tmp_path), n_workers=0) as (scheduler_file, processes):
        with open(scheduler_file) as f:
            address = json.load(f)["address"]
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "gamornet", "predict", "cut", "--model", model_path, "-o", out,
                               "--scheduler", scheduler_file, "--worker-timeout", "3", *CLI_RUN], env=_env(),
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no Dask log lines or tracebacks
        assert proc.stderr.startswith(f"gamornet predict: error: the Dask scheduler {address} has had no workers "
                                      "for 3 s"), proc.stderr
        assert "after 0 of 2 chunks" in proc.stderr and "--worker-timeout" in proc.stderr
        assert time.monotonic() - started < 60 and not os.path.exists(out + CHUNKS_SUFFIX)

        # one worker, killed after the first chunk: the complete chunks are kept for --resume
        with open(tmp_path / "worker.log", "wb") as log:
            worker = _start_worker(scheduler_file, log)
            processes.append(worker)

            def kill_worker(done, total):
                if done == 1:
                    os.killpg(worker.pid, signal.SIGKILL)

            with Client(scheduler_file=scheduler_file) as remote:
                remote.wait_for_workers(1, timeout=300)
                with pytest.raises(on_cluster.NoWorkersError,
                                   match=rf"{re.escape(address)} has had no workers for 3 s .* after \d+ of {N_CHUNKS} "
                                         r"chunks; the \d+ complete chunk\(s\) are kept in .*none\.ecsv\.chunks"):
                    predict_files(image_dir, model_path, output=out, client=remote, worker_timeout=3,
                                  on_chunk=kill_worker, **RUN)
    assert _chunk_files(out + CHUNKS_SUFFIX) and not os.path.exists(out)


# ---------------------------------------------------------------- the command line's errors: one line on stderr

#: Images of a run long enough to be stopped after its first chunk (500 chunks of 8).
LONG_RUN = 4000


def _long_stack(directory) -> str:
    """A ``.npy`` stack of :data:`LONG_RUN` images (reading it costs next to nothing beside the forward passes)."""
    path = os.path.join(directory, "long.npy")
    np.save(path, np.random.default_rng(7).normal(10.0, 3.0, size=(LONG_RUN, *SHAPE)).astype(np.float32))
    return path


@contextlib.contextmanager
def _cli_run(args: list[str], directory):
    """``gamornet predict ARGS`` in its own process group, stdout and stderr to files (a pipe left unread could
    block it); yields the process and a function reading its stderr.  The group (with any process the command
    started) is killed on the way out.  ``TF_CPP_MIN_LOG_LEVEL`` is left unset, as by a user: the command line
    keeps TensorFlow's start-up lines off the terminal itself."""
    env = _env()
    del env["TF_CPP_MIN_LOG_LEVEL"]
    with open(os.path.join(directory, "cli.out"), "wb") as out, open(os.path.join(directory, "cli.err"), "wb") as err:
        run = subprocess.Popen([sys.executable, "-m", "gamornet", "predict", *args], env=env, cwd=directory,
                               stdout=out, stderr=err, start_new_session=True)

        def stderr() -> str:
            with open(err.name, encoding="utf8", errors="replace") as f:
                return f.read()

        try:
            yield run, stderr
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
            run.wait()


def _stopped_after_first_chunk(run: subprocess.Popen, chunks: str, stderr, stop) -> None:
    """Wait for ``run``'s first complete chunk, call ``stop()`` and wait for ``run`` to end."""
    _wait(lambda: _chunk_files(chunks) or run.poll() is not None, "the first chunk", seconds=600, poll=0.05)
    assert run.poll() is None, f"the run ended before it could be stopped: {stderr()[-3000:]}"
    stop()
    try:
        run.wait(timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run did not end within 300 s of being stopped: {stderr()[-3000:]}")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_cli_lost_scheduler_is_one_line(model_path, tmp_path):
    """``gamornet predict --scheduler`` whose scheduler is killed mid-run: one error line, exit status 2."""
    stack = _long_stack(tmp_path)
    out = str(tmp_path / "lost.ecsv")
    with external_cluster(str(tmp_path), n_workers=1) as (scheduler_file, processes):
        with open(scheduler_file) as f:
            address = json.load(f)["address"]
        with _cli_run([stack, "--model", model_path, "--output", out, "--scheduler", address, *CLI_RUN],
                      tmp_path) as (run, stderr):
            _stopped_after_first_chunk(run, out + CHUNKS_SUFFIX, stderr,
                                       lambda: os.killpg(processes[0].pid, signal.SIGKILL))
            err = stderr()
    assert run.returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = _lines(err)
    assert len(lines) == 1, err[-3000:]  # no log lines of Dask's client
    assert lines[0].startswith(f"gamornet predict: error: lost the connection to the Dask scheduler {address} "
                               f"after "), lines
    assert "--resume" in lines[0] and not os.path.exists(out)
    assert _chunk_files(out + CHUNKS_SUFFIX)


@pytest.mark.slow
def test_cli_ctrl_c_on_local_workers_is_one_line(model_path, tmp_path):
    """Ctrl-C on ``gamornet predict --workers 2``: SIGINT to the whole process group (as a terminal sends it, the
    cluster's processes included) gives one line and exit status 130, the complete chunks kept."""
    stack = _long_stack(tmp_path)
    out = str(tmp_path / "stopped.ecsv")
    with _cli_run([stack, "--model", model_path, "--output", out, "--workers", "2", *CLI_RUN],
                  tmp_path) as (run, stderr):
        _stopped_after_first_chunk(run, out + CHUNKS_SUFFIX, stderr, lambda: os.killpg(run.pid, signal.SIGINT))
        err = stderr()
    assert run.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "Async instruction" not in err, err[-3000:]
    assert _lines(err) == ["gamornet predict: interrupted (rerun with --resume to continue)"], err[-3000:]
    assert not os.path.exists(out) and _chunk_files(out + CHUNKS_SUFFIX)

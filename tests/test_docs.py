"""The documentation: the Sphinx build, the tutorial notebooks and every code example.

- ``built_docs`` (one per test session): ``sphinx-build -W`` (any warning
  fails) into a temporary folder.  The build executes the five notebooks of
  ``tutorials/`` (``docs/_ext/gamornet_docs.py``) in fresh kernels of the
  current interpreter (a ``python3`` kernel spec written to a temporary
  ``JUPYTER_PATH``), small and offline (``GAMORNET_TUTORIAL_SMALL=1``,
  ``GAMORNET_OFFLINE=1``, an empty ``GAMORNET_HOME``), and renders their
  outputs.
- ``test_docs_build``: the build succeeded; the main pages exist and say what
  they should; every tutorial page shows its figures.
- ``test_notebook``: the executed copy of each notebook (kept by the build)
  has no error and at least three PNG figures; the stored notebook has no
  outputs.
- ``test_python_examples``: runs every ``python`` code block of ``README.md``
  and ``docs/*.rst``, the blocks of one file in order in one namespace, which
  starts with :func:`example_namespace` (``img_array`` and friends).  Published
  Keras models named in the examples are served from a local HTTP server on
  127.0.0.1 (small stand-in files at the registry's paths), through
  ``GAMORNET_MODELS_URL`` and a temporary ``GAMORNET_HOME``: no example ever
  reaches the internet.  A block runs up to a line
  ``# On the cluster (needs ...):`` (what follows needs a batch system);
  dask-jobqueue clusters start their scheduler on 127.0.0.1, and the Dask
  clusters an example leaves open are closed.
- ``test_slurm_example_job_script``: the SLURM example of the cluster page
  builds the batch script it describes.
- ``test_console_examples``: runs the cheap ``$ gamornet ...`` lines of the
  ``console`` blocks (version, help, model list, tiny simulations); installs,
  the demo and large runs are left to the other tests.

The slow tests need the ``docs`` tools (sphinx, furo, nbformat, nbclient,
ipykernel) and are skipped without them.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO
from servers import http_server, write_checkpoint, write_keras_file

DOCS = REPO / "docs"
TUTORIALS = REPO / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))

#: Pages of the built site and text each must contain.
EXPECTED_PAGES = {
    "index.html": ["GaMorNet", "Getting started"],
    "getting_started.html": ["gamornet-cpu", "tensorflow-cpu", "gamornet --version", "gamornet demo"],
    "data_release.html": ["99.72%", "95.25%", "78.62%", "model_sdsss_tl.hdf5", "check-1405593", "keras_candels"],
    "api.html": ["gamornet_predict_keras", "gamornet_train_keras", "gamornet_tl_keras", "gamornet_predict_tflearn",
                 "gamornet_train_tflearn", "gamornet_tl_tflearn", "classify_probabilities", "simulate_galaxies"],
    "faq.html": ["tensorflow-cpu", "GAMORNET_OFFLINE", "LRN"],
    "changelog.html": ["1.0.0", "0.4.3"],
    "citation.html": ["@article{Ghosh2020", "10.3847/1538-4357/ab8a47"],
    "cli.html": ["gamornet models", "gamornet download"],
    "performance.html": ["python -m benchmarks"],
    "architecture.html": ["Architecture", "Keras backend", "engine", "flavour", "precision"],
    "cluster.html": ["Running on a cluster", "SLURMCluster", "--scheduler", "--workers", "--shard", "gamornet merge",
                     "Memory per worker"],
    "tutorials/predictions.html": ["Making predictions", "gamornet_predict_keras", "gamornet_predict_tflearn"],
    "tutorials/training.html": ["Training GaMorNet from scratch", "gamornet_train_keras", "gamornet_train_tflearn"],
    "tutorials/transfer_learning.html": ["Transfer learning", "gamornet_tl_keras", "gamornet_tl_tflearn"],
    "tutorials/adapting.html": ["Adapting GaMorNet to your survey", "target_purity", "make_gallery"],
    "adapt.html": ["--folds", "selection.json", "oof_predictions.ecsv"],
    "gallery.html": ["gamornet gallery", "borderline"],
}

_sphinx_tools = ("sphinx", "furo")
_notebook_tools = ("nbformat", "nbclient", "ipykernel")


def _require(*modules: str) -> None:
    for name in modules:
        pytest.importorskip(name)


def _env(**extra: str) -> dict[str, str]:
    """The current environment with the repository importable and TensorFlow quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


# --------------------------------------------------------------------------- Sphinx


def _text(html: str) -> str:
    text = re.sub(r"<[^>]+>", "", html)
    for entity, char in (("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'")):
        text = text.replace(entity, char)
    return re.sub(r"\s+", " ", text)


def _kernel_spec(root: Path) -> Path:
    """A ``python3`` kernel spec running ipykernel on this interpreter, in ``root``; returns the JUPYTER_PATH."""
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Python ({sys.executable})", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root


@pytest.fixture(scope="session")
def built_docs(tmp_path_factory):
    """One ``sphinx-build -W`` of the docs, notebooks executed small and offline: (result, html, doctrees)."""
    _require(*_sphinx_tools, *_notebook_tools)
    root = tmp_path_factory.mktemp("docs")
    out, doctrees = root / "html", root / "doctrees"
    env = _env(
        GAMORNET_TUTORIAL_SMALL="1",
        GAMORNET_OFFLINE="1",
        GAMORNET_HOME=str(root / "cache"),  # empty: the notebooks must manage without published models
        JUPYTER_PATH=str(_kernel_spec(root / "jupyter")),
        IPYTHONDIR=str(root / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    for key in ("GAMORNET_MODELS_URL", "GAMORNET_DOCS_EXECUTED_NOTEBOOKS", "GAMORNET_DOCS_EXECUTE", "MPLBACKEND"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out),
           "-d", str(doctrees)]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=2400)
    return result, out, doctrees


def _build_log(result) -> str:
    return f"sphinx-build failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


@pytest.mark.slow
def test_docs_build(built_docs):
    result, out, _ = built_docs
    assert result.returncode == 0, _build_log(result)

    for page, needles in EXPECTED_PAGES.items():
        path = out / page
        assert path.is_file(), f"{page} was not built"
        text = _text(path.read_text(encoding="utf-8"))
        missing = [n for n in needles if n not in text]
        assert not missing, f"{page} lacks {missing}"

    from gamornet.cli import build_parser

    cli_text = _text((out / "cli.html").read_text(encoding="utf-8"))
    subcommands = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"][0].choices
    assert subcommands and all(f"gamornet {name}" in cli_text for name in subcommands)
    assert {p.name for p in (out / "_images").glob("montage_*.png")} == {"montage_sdss.png", "montage_candels.png"}
    assert 'src="_images/layers.png"' in (out / "architecture.html").read_text(encoding="utf-8")  # the layers drawn
    assert len(list((out / "_downloads").rglob("*.ipynb"))) == len(NOTEBOOKS) == 5

    for page in ("predictions", "training", "transfer_learning", "survey_cutouts", "adapting"):
        html = (out / "tutorials" / f"{page}.html").read_text(encoding="utf-8")
        figures = re.findall(r'<img class="notebook-output" src="data:image/png;base64,([A-Za-z0-9+/=]{100,})"', html)
        assert len(figures) >= 3, f"tutorials/{page}.html shows {len(figures)} figures"
        assert all(base64.b64decode(f)[:8] == b"\x89PNG\r\n\x1a\n" for f in figures)
        assert "GAMORNET_TUTORIAL_SMALL=1" in _text(html)  # the page says its outputs are from the small run


def _docs_extension():
    _require("sphinx")
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        import gamornet_docs
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    return gamornet_docs


def test_notebook_rendering_with_outputs():
    """Stored outputs (text, PNG) of an executed notebook become part of its page; errors are left out."""
    ext = _docs_extension()
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    notebook = {
        "metadata": {"language_info": {"name": "python"}},
        "cells": [
            {"cell_type": "markdown", "source": "# Title\n\nSome `code` and a [link](https://example.org)."},
            {"cell_type": "code", "source": ["x = 1\n", "print(x)"], "outputs": [
                {"output_type": "stream", "name": "stdout", "text": "10%\r100%\n1\n"},
                {"output_type": "display_data", "data": {"image/png": png, "text/plain": "<Figure>"}},
                {"output_type": "error", "ename": "E", "evalue": "boom", "traceback": []},
            ]},
        ],
    }
    rst = "\n".join(ext.notebook_to_rst(notebook, after_title=["AFTER-TITLE"]))
    assert rst.index("Title\n=====") < rst.index("AFTER-TITLE") < rst.index("``code``")
    assert "`link <https://example.org>`__" in rst
    assert ".. code-block:: python" in rst and "   print(x)" in rst
    assert "   100%" in rst and "10%" not in rst
    assert f"data:image/png;base64,{png}" in rst and "boom" not in rst


def test_citation_files_agree():
    doi = "10.3847/1538-4357/ab8a47"
    cff = (REPO / "CITATION.cff").read_text(encoding="utf-8")
    assert cff.startswith("cff-version: 1.2.0") and f'doi: "{doi}"' in cff and "year: 2020" in cff
    for path in (REPO / "README.md", DOCS / "citation.rst"):
        text = path.read_text(encoding="utf-8")
        assert "@article{Ghosh2020" in text and doi in text, path
    yaml = pytest.importorskip("yaml")
    assert yaml.safe_load(cff)["preferred-citation"]["volume"] == 895


# --------------------------------------------------------------------------- notebooks


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(notebook, built_docs):
    _require(*_notebook_tools)
    import nbformat

    stored = nbformat.read(notebook, as_version=4)
    assert all(not cell.get("outputs") for cell in stored.cells if cell.cell_type == "code"), \
        f"{notebook.name} must be stored without outputs"
    result, _, doctrees = built_docs
    copies = sorted((doctrees / "executed_notebooks").glob(f"{notebook.stem}-*.ipynb"))
    assert copies, f"{notebook.name} was not executed by the docs build.\n{_build_log(result)}"
    nb = nbformat.read(copies[0], as_version=4)

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    errors = [out for out in outputs if out.get("output_type") == "error"]
    assert not errors, f"{notebook.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert all(cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code" and cell.source.strip())
    pngs = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(pngs) >= 3, f"{notebook.name} shows {len(pngs)} PNG figures"


# --------------------------------------------------------------------------- code examples

_RST_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. code-block:: *(?P<lang>\S+)[ \t]*\n", re.M)
_MD_FENCE = re.compile(r"^```(?P<lang>\w*)[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)


def rst_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    """Bodies of the ``.. code-block::`` directives of the given languages, dedented."""
    blocks = []
    lines = text.splitlines()
    starts = {text[: m.start()].count("\n"): m for m in _RST_BLOCK.finditer(text)}
    for line_no, match in sorted(starts.items()):
        if match.group("lang") not in languages:
            continue
        base = len(match.group("indent").expandtabs())
        body, i = [], line_no + 1
        while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(":")) and not body:
            i += 1  # options and the blank line before the body
        indent = None
        while i < len(lines):
            line = lines[i]
            if line.strip():
                width = len(line) - len(line.lstrip())
                if width <= base:
                    break
                indent = width if indent is None else min(indent, width)
            body.append(line)
            i += 1
        blocks.append("\n".join(ln[indent:] for ln in body).strip("\n") + "\n")
    return blocks


def markdown_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return [m.group("code") for m in _MD_FENCE.finditer(text) if m.group("lang") in languages]


def _example_files() -> list[Path]:
    return [REPO / "README.md", *sorted(DOCS.glob("*.rst")), *sorted(DOCS.glob("*/*.rst"))]


#: The line after which a block needs a batch system (SLURM...): the tests run the lines before it.
_NEEDS_CLUSTER = re.compile(r"^# On the cluster \(needs [^)]+\):[ \t]*$", re.M)


def runnable_part(block: str) -> str:
    """``block`` up to its ``# On the cluster (needs ...):`` line, if it has one."""
    match = _NEEDS_CLUSTER.search(block)
    return block if match is None else block[: match.start()]


def python_examples() -> dict[str, list[str]]:
    """``{file relative to the repository: [python blocks, each up to a line needing a batch system]}``."""
    found = {}
    for path in _example_files():
        text = path.read_text(encoding="utf-8")
        blocks = markdown_blocks(text, ("python",)) if path.suffix == ".md" else rst_blocks(text, ("python",))
        if blocks:
            found[str(path.relative_to(REPO))] = [runnable_part(block) for block in blocks]
    return found


def _jobqueue_on_loopback():
    """dask-jobqueue clusters start their scheduler on 127.0.0.1 (a no-op without Dask)."""
    try:
        import dask
        import dask_jobqueue  # noqa: F401  (its defaults first: leaving the block restores the config as it was)
    except ImportError:
        return contextlib.nullcontext()
    systems = ("slurm", "pbs", "sge", "lsf", "htcondor", "oar", "moab")
    return dask.config.set({f"jobqueue.{name}.scheduler-options": {"host": "127.0.0.1"} for name in systems})


def _close_dask_objects(namespace: dict) -> None:
    """Close the Dask clients and clusters an example left open."""
    for value in list(namespace.values()):
        if type(value).__module__.split(".")[0] in ("distributed", "dask_jobqueue") and callable(
                getattr(value, "close", None)):
            with contextlib.suppress(Exception):
                value.close()


EXAMPLES = python_examples()


#: Other spellings of Python code blocks: examples written with them would escape the tests.
_PYTHON_ALIASES = {"py", "py3", "python3", "pycon", "ipython", "ipython3", "default"}


def test_examples_are_collected():
    assert "README.md" in EXAMPLES and len(EXAMPLES["README.md"]) >= 2
    assert any(name.startswith("docs/") for name in EXAMPLES)
    for path in _example_files():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".md":
            langs = {m.group("lang") for m in _MD_FENCE.finditer(text)}
        else:
            langs = set(re.findall(r"^\s*\.\. (?:code-block|code|sourcecode)::[ \t]*(\S*)", text, re.M))
            assert not re.search(r"^\s*\.\. (?:code|sourcecode)::[ \t]*python", text, re.M), path
        assert not langs & _PYTHON_ALIASES, f"{path}: write Python examples as `python` blocks, not {langs}"


@pytest.fixture(scope="module")
def example_server(tmp_path_factory):
    """A local HTTP server holding stand-ins of the published Keras models at the registry's paths."""
    from gamornet.published.registry import MODELS

    root = tmp_path_factory.mktemp("published")
    for (_, flavor), info in MODELS.items():
        if flavor == "keras":
            shape = (167, 167, 1) if info.input_shape == "SDSS" else (83, 83, 1)
            write_keras_file(root / info.path, shape)
    with http_server(root) as server:
        server.cache = tmp_path_factory.mktemp("cache")  # shared: each model is fetched once, as for a user
        yield server


@pytest.fixture(scope="module")
def example_namespace(tmp_path_factory) -> dict:
    """The names the examples use without defining them."""
    rng = np.random.default_rng(7)
    ckpt = write_checkpoint(tmp_path_factory.mktemp("checkpoint") / "check-1200", (83, 83, 1))

    def images(n, size):
        return rng.normal(0.0, 1.0, size=(n, size, size, 1)).astype(np.float32)

    labels = np.eye(3, dtype=np.float32)[np.arange(6) % 3]
    return {
        "img_array": images(4, 167),
        "candels_imgs": images(4, 83),
        "checkpoint_prefix": str(ckpt),
        "preds": rng.dirichlet(np.ones(3), size=10).astype(np.float32),
        "training_imgs": images(6, 83),
        "training_labels": labels,
        "validation_imgs": images(6, 83),
        "validation_labels": labels,
    }


#: Example pages whose examples start Dask clusters: slow.
_CLUSTER_EXAMPLES = {"docs/cluster.rst"}


@pytest.mark.parametrize("source", [pytest.param(s, marks=pytest.mark.slow) if s in _CLUSTER_EXAMPLES else s
                                    for s in sorted(EXAMPLES)])
def test_python_examples(source, example_server, example_namespace, tmp_path, monkeypatch):
    saved_env = dict(os.environ)
    monkeypatch.chdir(tmp_path)
    os.environ.pop("GAMORNET_OFFLINE", None)
    os.environ["GAMORNET_MODELS_URL"] = example_server.url
    os.environ["GAMORNET_HOME"] = str(example_server.cache)
    namespace = {"__name__": "__main__", **example_namespace}
    try:
        with _jobqueue_on_loopback():
            for k, block in enumerate(EXAMPLES[source]):
                try:
                    exec(compile(block, f"<{source} example {k + 1}>", "exec"), namespace)
                except Exception as exc:
                    pytest.fail(f"example {k + 1} of {source} failed: {type(exc).__name__}: {exc}\n\n{block}")
    finally:
        _close_dask_objects(namespace)
        os.environ.clear()
        os.environ.update(saved_env)


def test_slurm_example_job_script(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    text = (DOCS / "cluster.rst").read_text(encoding="utf-8")
    block = next(b for b in rst_blocks(text, ("python",)) if "SLURMCluster(" in b)
    runnable = runnable_part(block)
    assert "cluster.scale(" in block and "client=client" in block  # shown, but needs SLURM
    assert "cluster.scale(" not in runnable and runnable.rstrip().endswith("submitting anything")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    with _jobqueue_on_loopback(), contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(runnable, "<docs/cluster.rst SLURM example>", "exec"), namespace)
    cluster = namespace["cluster"]
    try:
        script = cluster.job_script()
        assert printed.getvalue().strip() == script.strip()
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:") and cluster.scheduler_address in script
        for line in ("#SBATCH -p normal", "#SBATCH -A my_survey", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=16G",
                     "#SBATCH -t 04:00:00", "source ~/venvs/gamornet/bin/activate"):
            assert line in script.splitlines(), line
        worker = next(line for line in script.splitlines() if "dask_worker" in line or "dask worker" in line)
        for option in ("--nthreads 1", "--nworkers 8", "--memory-limit 2.00GiB"):  # as the page says
            assert option in worker and option in text, option
    finally:
        cluster.close()


# --------------------------------------------------------------------------- shell examples


def _is_cheap(args: list[str]) -> bool:
    """Commands quick enough to run here: version, help, model list, simulations of a few galaxies."""
    if not args or args[0] in ("--version", "--help", "-h", "models") or "--help" in args:
        return True
    if args[0] == "simulate" and "-n" in args:
        return int(args[args.index("-n") + 1]) <= 16
    return False


def console_commands() -> list[str]:
    commands = []
    for path in _example_files():
        if path.suffix != ".rst":
            continue
        for block in rst_blocks(path.read_text(encoding="utf-8"), ("console",)):
            for line in block.replace("\\\n", " ").splitlines():  # a command continued with a backslash: one line
                if line.startswith("$ gamornet") and _is_cheap(shlex.split(line)[2:]):
                    commands.append(line[2:])
    return sorted(set(commands))


@pytest.mark.slow
def test_console_examples(tmp_path):
    commands = console_commands()
    assert "gamornet --version" in commands and "gamornet models" in commands
    env = _env(GAMORNET_HOME=str(tmp_path / "cache"), GAMORNET_OFFLINE="1")
    for command in commands:
        args = shlex.split(command)[1:]
        result = subprocess.run([sys.executable, "-m", "gamornet", *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"`{command}` failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"

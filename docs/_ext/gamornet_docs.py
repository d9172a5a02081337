"""Sphinx directives of the GaMorNet documentation (no dependency beyond Sphinx itself).

``.. gamornet-cli::``
    The help of ``gamornet`` and of each of its subcommands, rendered at build
    time from :func:`gamornet.cli.build_parser`, one section per subcommand.
``.. gamornet-notebook:: PATH``
    A Jupyter notebook (path relative to the repository root) rendered as
    reStructuredText: markdown cells converted by a small converter for the
    subset of markdown the tutorials use, code cells as Python code blocks,
    then their outputs (text and figures).  The stored notebooks hold no
    outputs, so the build executes each one (:func:`execute_notebook`, with
    nbclient) and renders the executed copy, which it keeps in the doctree
    folder under a key of the notebook, the package sources and the
    settings, so an unchanged notebook is not run again.  By default the
    kernel runs with ``GAMORNET_TUTORIAL_SMALL=1`` (tiny sizes, a few minutes
    for the tutorials on a CPU); set ``GAMORNET_TUTORIAL_SMALL=0`` in the
    environment of ``sphinx-build`` for the full sizes.  A failing cell is a
    build warning (an error with ``-W``).  ``GAMORNET_DOCS_EXECUTED_NOTEBOOKS``
    may name a folder of executed copies (same file names) to render instead;
    ``GAMORNET_DOCS_EXECUTE=0`` renders code only.
``.. gamornet-automodule:: MODULE``
    A section titled with the module name followed by ``automodule`` with
    ``:members:``; a module missing from the package is a warning (so
    ``sphinx-build -W`` fails).

Each directive produces reStructuredText lines that are inserted into the
document being parsed (as the ``include`` directive does), so the headings it
produces become real sections of the page.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path

from docutils.parsers.rst import Directive, directives
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: Underline characters of markdown heading levels 1, 2, 3, 4 (the rst pages
#: holding a notebook contain nothing else, so the notebook's own title is the
#: page title).
_HEADING_CHARS = "=-~^"
#: Width of the rendered ``--help`` text.
CLI_COLUMNS = 96


# --------------------------------------------------------------------------- markdown -> rst


_CODE_SPAN = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Inline markdown (code spans, links; bold and italics are the same in rst) to rst."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append("``" + part[1:-1] + "``")
        else:
            out.append(_LINK.sub(lambda m: f"`{m.group(1)} <{m.group(2)}>`__", part))
    return "".join(out)


def markdown_to_rst(markdown: str) -> list[str]:
    """Convert the markdown subset of the tutorials to reStructuredText lines.

    Supported: ATX headings (``#`` to ``####``), paragraphs, ``-`` / ``*`` and
    numbered lists, fenced code blocks, inline code, links, bold and italics,
    and ``>`` quotes (rendered as a note).
    """
    lines = markdown.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence:
            language = fence.group(1) or "text"
            out += ["", f".. code-block:: {language}", ""]
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                out.append("   " + lines[i] if lines[i].strip() else "")
                i += 1
            out.append("")
            i += 1
            continue
        heading = re.match(r"^(#{1,4})\s+(.*?)\s*#*\s*$", line)
        if heading:
            title = _inline(heading.group(2))
            out += ["", title, _HEADING_CHARS[len(heading.group(1)) - 1] * max(len(title), 4), ""]
            i += 1
            continue
        if line.startswith(">"):
            quote = []
            while i < len(lines) and lines[i].startswith(">"):
                quote.append(lines[i][1:].strip())
                i += 1
            out += ["", ".. note::", ""] + ["   " + _inline(q) if q else "" for q in quote] + [""]
            continue
        out.append(_inline(line))
        i += 1
    return out


# --------------------------------------------------------------------------- notebooks


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _indented(text: str, prefix: str = "   ") -> list[str]:
    return [prefix + ln if ln.strip() else "" for ln in text.rstrip("\n").splitlines()]


def _output_lines(output) -> list[str]:
    """rst lines for one stored output of a code cell (text, PNG image); errors are left out."""
    kind = output.get("output_type")
    if kind == "stream":
        text = _source({"source": output.get("text", "")})
        # progress bars rewrite their line with carriage returns: keep the last state
        text = "\n".join(ln.rstrip("\r").rsplit("\r", 1)[-1] for ln in text.split("\n"))
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
        return ["", ".. code-block:: text", ""] + _indented(text) + [""] if text.strip() else []
    if kind in ("execute_result", "display_data"):
        data = output.get("data", {})
        if "image/png" in data:
            png = data["image/png"]
            png = "".join(png) if isinstance(png, list) else png
            base64.b64decode(png, validate=False)  # refuse anything that is not base64
            uri = "data:image/png;base64," + png.replace("\n", "")
            return ["", ".. raw:: html", "", f'   <img class="notebook-output" src="{uri}" alt="output figure"/>', ""]
        if "text/plain" in data:
            text = _source({"source": data["text/plain"]})
            return ["", ".. code-block:: text", ""] + _indented(text) + [""]
    return []


def notebook_to_rst(notebook: dict, after_title: list[str] | None = None) -> list[str]:
    """reStructuredText lines of a notebook (as read by :func:`json.load`).

    ``after_title`` lines are inserted right after the first heading of the
    first markdown cell (the page title).
    """
    language = notebook.get("metadata", {}).get("language_info", {}).get("name", "python")
    out: list[str] = []
    pending = list(after_title or [])
    for cell in notebook.get("cells", []):
        source = _source(cell)
        if not source.strip():
            continue
        if cell.get("cell_type") == "markdown":
            lines = markdown_to_rst(source)
            if pending:
                underline = next((k for k, ln in enumerate(lines) if ln and set(ln) == {_HEADING_CHARS[0]}), None)
                if underline is not None:
                    lines[underline + 1 : underline + 1] = ["", *pending, ""]
                    pending = []
            out += lines + [""]
        elif cell.get("cell_type") == "code":
            out += ["", f".. code-block:: {language}", ""] + _indented(source) + [""]
            for output in cell.get("outputs", []):
                out += _output_lines(output)
    return out


#: Kernel environment the docs build sets unless the environment already has these variables.
NOTEBOOK_ENV_DEFAULTS = {"GAMORNET_TUTORIAL_SMALL": "1", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}


def _truthy(value: str) -> bool:
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def notebook_environment() -> dict[str, str]:
    """The settings (a subset of the environment) a notebook is executed with: part of its cache key."""
    env = {key: os.environ.get(key, value) for key, value in NOTEBOOK_ENV_DEFAULTS.items()}
    for key in ("GAMORNET_OFFLINE", "GAMORNET_MODELS_URL", "GAMORNET_HOME"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def _package_digest(root: Path) -> str:
    """SHA-256 of the package's Python sources, so that executed copies follow changes of the code."""
    digest = hashlib.sha256()
    for path in sorted((root / "gamornet").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def execute_notebook(source: Path, target: Path, env: dict[str, str] | None = None, timeout: float = 1800,
                     kernel_name: str = "python3") -> tuple[dict, str | None]:
    """Execute a notebook in a fresh kernel and write the executed copy to ``target``.

    The kernel runs in a temporary working folder (also its
    ``GAMORNET_TUTORIAL_DIR``) with the current environment updated by
    ``env``.  The copy is written under a temporary name and renamed, also
    after a failure (up to the failing cell), so that it can be inspected.

    Returns
    -------
    (notebook, error)
        The executed notebook (as :func:`json.load` gives it) and None, or
        the error text of the first failing cell.
    """
    import tempfile

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(str(source), as_version=4)
    error = None
    with tempfile.TemporaryDirectory(prefix="gamornet-notebook-") as work:
        kernel_env = {**os.environ, "GAMORNET_TUTORIAL_DIR": work, **(env or {})}
        client = NotebookClient(nb, kernel_name=kernel_name, timeout=timeout,
                                resources={"metadata": {"path": work}})
        try:
            client.execute(env=kernel_env, cwd=work)
        except CellExecutionError as exc:
            error = str(exc)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    nbformat.write(nb, str(partial))
    os.replace(partial, target)
    with open(target, encoding="utf-8") as f:
        return json.load(f), error


def _executed_copy(env, path: Path) -> tuple[Path | None, str | None]:
    """The executed copy of a notebook (made now if needed), or (None, None) when notebooks are not executed."""
    config = env.config
    given = config.gamornet_executed_notebooks
    if given:
        copy = Path(given) / path.name
        return (copy, None) if copy.is_file() else (None, None)
    if not config.gamornet_execute_notebooks:
        return None, None
    settings = notebook_environment()
    key = hashlib.sha256(path.read_bytes())
    key.update(_package_digest(Path(config.gamornet_repository_root)).encode())
    key.update(json.dumps(settings, sort_keys=True).encode())
    copy = Path(env.doctreedir) / "executed_notebooks" / f"{path.stem}-{key.hexdigest()[:16]}.ipynb"
    if copy.is_file():
        return copy, None
    logger.info(f"gamornet-notebook: executing {path.name} ({', '.join(f'{k}={v}' for k, v in settings.items())})")
    _, error = execute_notebook(path, copy.with_name(copy.stem + "-run.ipynb"), settings)
    if error is not None:
        return copy.with_name(copy.stem + "-run.ipynb"), error
    os.replace(copy.with_name(copy.stem + "-run.ipynb"), copy)
    return copy, None


def _small_run_note(settings: dict[str, str]) -> list[str]:
    if not _truthy(settings.get("GAMORNET_TUTORIAL_SMALL", "0")):
        return []
    return [".. note::", "",
            "   The outputs on this page come from running the notebook with ``GAMORNET_TUTORIAL_SMALL=1``:",
            "   tiny sizes that check every step in a few minutes but train nothing useful, so the figures",
            "   show what each step produces, not a good classifier.  Run the notebook as it is for the",
            "   real sizes.", ""]


class NotebookDirective(Directive):
    """``.. gamornet-notebook:: tutorials/NAME.ipynb`` (path relative to the repository root)."""

    required_arguments = 1
    has_content = False

    def run(self):
        env = self.state.document.settings.env
        root = Path(env.config.gamornet_repository_root)
        path = (root / self.arguments[0]).resolve()
        env.note_dependency(str(path))
        copy, error = _executed_copy(env, path)
        if error is not None:
            logger.warning(f"gamornet-notebook: {path.name} failed (partial copy {copy}):\n{error[-3000:]}",
                           location=(env.docname, self.lineno))
        with open(copy or path, encoding="utf-8") as f:
            notebook = json.load(f)
        source_dir = Path(self.state.document.current_source).parent
        link = os.path.relpath(path, source_dir).replace(os.sep, "/")
        after_title = [f":download:`Download this notebook ({path.name}) <{link}>`", ""]
        if copy is not None and not env.config.gamornet_executed_notebooks:
            after_title += _small_run_note(notebook_environment())
        lines = notebook_to_rst(notebook, after_title)
        self.state_machine.insert_input(lines, str(path))
        return []


# --------------------------------------------------------------------------- command line


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def cli_rst(parser: argparse.ArgumentParser, heading: str = "-") -> list[str]:
    """rst lines: the parser's help, then one section per subcommand with its help."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(CLI_COLUMNS)
    try:
        out = ["", ".. code-block:: text", ""] + _indented(parser.format_help()) + [""]
        sub = _subparsers(parser)
        helps = {a.dest: a.help for a in (sub._choices_actions if sub else [])}
        for name, subparser in (sub.choices.items() if sub else []):
            title = f"{parser.prog} {name}"
            out += ["", f".. _cli-{name}:", "", title, heading * len(title), ""]
            if helps.get(name):
                summary = helps[name][0].upper() + helps[name][1:]
                out += [summary.rstrip(".") + ".", ""]
            out += [".. code-block:: text", ""] + _indented(subparser.format_help()) + [""]
        return out
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


class CliDirective(Directive):
    """``.. gamornet-cli::``: the whole command line, from :func:`gamornet.cli.build_parser`."""

    has_content = False
    option_spec = {"heading": directives.unchanged}

    def run(self):
        from gamornet.cli import build_parser

        lines = cli_rst(build_parser(), self.options.get("heading", "-"))
        self.state_machine.insert_input(lines, "<gamornet.cli.build_parser()>")
        return []


# --------------------------------------------------------------------------- API


def module_exists(name: str) -> bool:
    """Whether ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


class AutomoduleDirective(Directive):
    """``.. gamornet-automodule:: gamornet.NAME``: a section with the module's autodoc (a missing module warns).

    Options ``:exclude-members:`` and ``:heading:`` (underline character,
    default ``-``) are passed on.
    """

    required_arguments = 1
    has_content = False
    option_spec = {"exclude-members": directives.unchanged, "heading": directives.unchanged}

    def run(self):
        name = self.arguments[0]
        if not module_exists(name):
            logger.warning(f"gamornet-automodule: no module {name} in this checkout")
            return []
        title = f"``{name}``"
        lines = ["", title, self.options.get("heading", "-") * len(title), "", f".. automodule:: {name}",
                 "   :members:"]
        if self.options.get("exclude-members"):
            lines.append(f"   :exclude-members: {self.options['exclude-members']}")
        self.state_machine.insert_input(lines + [""], f"<automodule {name}>")
        return []


def setup(app):
    app.add_config_value("gamornet_repository_root", str(Path(__file__).resolve().parents[2]), "env")
    app.add_config_value("gamornet_executed_notebooks", os.environ.get("GAMORNET_DOCS_EXECUTED_NOTEBOOKS", ""), "env")
    app.add_config_value("gamornet_execute_notebooks", _truthy(os.environ.get("GAMORNET_DOCS_EXECUTE", "1")), "env")
    app.add_directive("gamornet-cli", CliDirective)
    app.add_directive("gamornet-notebook", NotebookDirective)
    app.add_directive("gamornet-automodule", AutomoduleDirective)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

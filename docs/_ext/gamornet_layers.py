"""The picture of the package's layers on the architecture page, drawn from ``pyproject.toml`` at build time.

The ``layers`` contract of ``[tool.importlinter]`` in ``pyproject.toml``
(checked by ``lint-imports``) lists the layers of ``gamornet`` from the top
down; the modules of one layer are separated by ``|`` (or ``:``).  When the
builder starts, :func:`write_layers_figure` reads that contract and draws it
with matplotlib as stacked boxes, one row per layer and one box per module,
with arrows pointing down (the direction imports may go), into
``docs/_generated/layers.png``, which ``docs/architecture.rst`` shows with
``.. figure::``.  The file is rewritten only when its content changes, so an
unchanged contract does not make Sphinx read the page again.

The figure cannot go stale: it is made from the contract on every build.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the backport Sphinx itself installs there
    import tomli as tomllib

#: Where the figure goes, relative to the documentation's source folder.
FIGURE = Path("_generated") / "layers.png"
#: Prefix left out of the module names in the boxes.
PACKAGE = "gamornet."


def read_layers(pyproject: Path) -> tuple[str, list[list[str]]]:
    """The name and the layers (top first, each a list of module names) of the layers contract.

    Raises
    ------
    ValueError
        If ``pyproject`` has no import-linter contract of type ``layers``.
    """
    with open(pyproject, "rb") as file:
        config = tomllib.load(file)
    contracts = config.get("tool", {}).get("importlinter", {}).get("contracts", [])
    for contract in contracts:
        if contract.get("type") == "layers":
            layers = []
            for layer in contract["layers"]:
                names = layer.replace(":", "|").split("|")
                layers.append([name.strip().strip("()").strip() for name in names if name.strip()])
            return contract.get("name", "Layers"), layers
    raise ValueError(f"`pyproject` must hold an import-linter contract of type 'layers'. Received: {pyproject}")


def draw_layers(layers: list[list[str]]) -> bytes:
    """The layers as a PNG: one row of boxes per layer, top first, arrows pointing down between rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    row, gap, width = 0.62, 0.38, 10.0
    height = len(layers) * row + (len(layers) - 1) * gap
    figure = Figure(figsize=(width, height + 0.2), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, width)
    axes.set_ylim(-0.1, height + 0.1)
    axes.set_axis_off()
    for index, modules in enumerate(layers):
        top = height - index * (row + gap)
        box_width = (width - 0.4 - 0.15 * (len(modules) - 1)) / len(modules)
        for position, module in enumerate(modules):
            left = 0.2 + position * (box_width + 0.15)
            colour = "#dbe9f6" if index < len(layers) - 1 else "#e3f1df"
            axes.add_patch(FancyBboxPatch((left, top - row), box_width, row, boxstyle="round,pad=0,rounding_size=0.08",
                                          facecolor=colour, edgecolor="#2f4f6f", linewidth=1.0))
            label = module.removeprefix(PACKAGE)
            axes.text(left + box_width / 2, top - row / 2, label, ha="center", va="center",
                      fontsize=11, family="monospace")
        if index < len(layers) - 1:
            axes.add_patch(FancyArrowPatch((width / 2, top - row), (width / 2, top - row - gap),
                                           arrowstyle="-|>", mutation_scale=14, color="#2f4f6f", linewidth=1.2))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def write_if_changed(path: Path, content: bytes) -> bool:
    """Write ``content`` to ``path`` (atomically) unless it already holds it; return whether it was written."""
    if path.is_file() and path.read_bytes() == content:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def write_layers_figure(app) -> None:
    """``builder-inited``: draw the layers contract of the repository's ``pyproject.toml``."""
    root = Path(getattr(app.config, "gamornet_repository_root", "") or Path(app.srcdir).parent)
    _, layers = read_layers(root / "pyproject.toml")
    write_if_changed(Path(app.srcdir) / FIGURE, draw_layers(layers))


def setup(app):
    app.connect("builder-inited", write_layers_figure)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

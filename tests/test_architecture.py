"""Rules of the code's shape, checked on the sources without importing them (no TensorFlow, a second or so).

- ``test_no_import_cycle``: the import graph of ``gamornet`` (built by
  grimp, the library behind import-linter, from the sources: function-level
  imports included, imports under ``if TYPE_CHECKING:`` left out as they never
  run) has no cycle; a failure lists each cycle found.
- ``test_no_private_name_of_another_module``: no module of ``gamornet`` or
  ``benchmarks`` uses a private name (one underscore first, not a dunder) of
  another module: ``from gamornet.x import _name``, ``import gamornet.x._y``
  or ``module._name`` on an imported module.  A module may use its own
  private names, and a private module (``gamornet.a._b``) may be imported
  within its parent package ``gamornet.a``; a package ``__init__`` may
  re-export only public names of its submodules.
- ``test_no_long_function``: no function of ``gamornet`` has more than
  :data:`MAX_CODE_LINES` lines of code (docstrings, comments and blank lines
  left out; the lines of a nested function count in the function around it
  too); a failure lists each function with its count.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest

from helpers import REPO

#: The packages whose modules the checks read.
PACKAGES = ("gamornet", "benchmarks")
#: Most lines of code a function may have.
MAX_CODE_LINES = 80

pytestmark = pytest.mark.skipif(not (REPO / "gamornet").is_dir(), reason="needs the source tree")


# --------------------------------------------------------------------------- reading the sources


def module_files(package: str, root: Path = REPO) -> dict[str, Path]:
    """Module name -> source file of every module of ``package`` (a folder of ``root``)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def is_private(name: str) -> bool:
    """One underscore first and not a dunder name (``__version__``, ``__main__`` are public)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module named by ``from <level dots><name> import ...`` in ``module``."""
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def private_module_allowed(importer: str, imported: str) -> bool:
    """Whether ``importer`` may import ``imported`` as far as private module names go.

    Each private component ``_b`` of ``gamornet.a._b.c`` may only be imported
    within its parent package ``gamornet.a``.
    """
    parts = imported.split(".")
    for i, part in enumerate(parts):
        if is_private(part):
            parent = ".".join(parts[:i])
            if importer != parent and not importer.startswith(parent + "."):
                return False
    return True


# --------------------------------------------------------------------------- a: import cycles


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def import_cycles(graph: grimp.ImportGraph, package: str) -> list[str]:
    """One cycle (``a -> b -> a``) through each tangle of modules of ``package``.

    A tangle (strongly connected modules) may hold more cycles than the one
    shown: its other modules are named after the cycle.
    """
    nodes = {m for m in graph.modules if m == package or m.startswith(package + ".")}
    edges = {m: graph.find_modules_directly_imported_by(m) & nodes for m in nodes}
    cycles = []
    for component in strongly_connected(nodes, edges):
        first = component[0]
        back = min((m for m in component if first in edges[m]), key=lambda m: (len(
            graph.find_shortest_chain(importer=first, imported=m) or ()), m))
        cycle = list(graph.find_shortest_chain(importer=first, imported=back)) + [first]
        others = sorted(set(component) - set(cycle))
        cycles.append(" -> ".join(cycle) + (f" (tangled with {', '.join(others)})" if others else ""))
    return cycles


def test_import_cycles_names_each_tangle():
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.d", "p.b"),
                               ("p.e", "p.a"), ("p.f", "p.g"), ("p.g", "p.f"), ("p.h", "p.i")]:
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph, "p") == ["p.a -> p.b -> p.c -> p.a (tangled with p.d)", "p.f -> p.g -> p.f"]


def test_no_import_cycle():
    graph = grimp.build_graph("gamornet", exclude_type_checking_imports=True, cache_dir=None)
    cycles = import_cycles(graph, "gamornet")
    message = "\n".join(cycles)
    assert not cycles, f"{len(cycles)} import cycle(s) in gamornet (lazy imports included):\n{message}"


# --------------------------------------------------------------------------- b: private names


def module_bindings(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> dict[str, str]:
    """Local name -> project module it is bound to by an import anywhere in the file."""
    bindings = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bindings[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bindings[top] = top
        elif isinstance(node, ast.ImportFrom):
            source = resolve_relative(module, is_package, node.level, node.module)
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    bindings[alias.asname or alias.name] = f"{source}.{alias.name}"
    return {name: target for name, target in bindings.items() if target.split(".")[0] in PACKAGES}


def dotted(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]``; ``None`` for anything but names and attributes."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id] + parts[::-1]


def private_uses(path: Path, module: str, known: set[str], root: Path = REPO) -> Iterator[str]:
    """Each use in ``path`` (module ``module``) of a private name of another project module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    where = path.relative_to(root)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES and not private_module_allowed(module, alias.name):
                    yield f"{where}:{node.lineno}: import {alias.name}"
        elif isinstance(node, ast.ImportFrom):
            source = resolve_relative(module, is_package, node.level, node.module)
            if source.split(".")[0] not in PACKAGES:
                continue
            if not private_module_allowed(module, source):
                yield f"{where}:{node.lineno}: from {source} import ..."
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:
                    allowed = private_module_allowed(module, submodule)
                else:
                    allowed = not is_private(alias.name) or source == module
                if not allowed:
                    yield f"{where}:{node.lineno}: from {source} import {alias.name}"
    bindings = module_bindings(tree, module, is_package, known)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        parts = dotted(node.value)
        if parts is None or parts[0] not in bindings:
            continue
        target = ".".join([bindings[parts[0]]] + parts[1:])
        if target in known and target != module:
            yield f"{where}:{node.lineno}: {'.'.join(parts)}.{node.attr} (a private name of {target})"


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        modules.update(module_files(package))
    return modules


def test_private_use_scan(tmp_path):
    """The scan flags another module's private names and passes a module's own ones and public re-exports."""
    files = {
        "gamornet/__init__.py": "",
        "gamornet/a.py": "_X = 1\nY = _X\n",
        "gamornet/b.py": "from gamornet.a import _X, Y\nfrom gamornet import a\nimport gamornet.a as aa\n"
                         "def f():\n    return a._X, aa._X, a.Y, a.__name__\n",
        "gamornet/p/__init__.py": "from gamornet.p._impl import run\nfrom ._impl import _helper\n",
        "gamornet/p/_impl.py": "def run():\n    return _helper()\ndef _helper():\n    pass\n",
        "gamornet/c.py": "from gamornet.p import _impl\nimport gamornet.p._impl\nfrom gamornet.p import run\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = module_files("gamornet", tmp_path)
    found = [use.split(": ", 1)[1] for module, path in modules.items()
             for use in private_uses(path, module, set(modules), tmp_path)]
    assert found == [
        "from gamornet.a import _X",
        "a._X (a private name of gamornet.a)",
        "aa._X (a private name of gamornet.a)",
        "from gamornet.p import _impl",
        "import gamornet.p._impl",
        "from gamornet.p._impl import _helper",
    ]


def test_no_private_name_of_another_module():
    modules = project_modules()
    known = set(modules)
    found = [use for module, path in modules.items() for use in private_uses(path, module, known)]
    message = "\n".join(found)
    assert not found, f"{len(found)} use(s) of another module's private names:\n{message}"


# --------------------------------------------------------------------------- c: long functions


def code_lines(source: str, tree: ast.AST) -> set[int]:
    """Numbers of the lines holding code: not blank, not only a comment, not part of a docstring."""
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.difference_update(range(first.lineno, first.end_lineno + 1))
    return lines


def function_lengths(path: Path) -> Iterator[tuple[str, int]]:
    """``(qualified name, lines of code)`` of each function and method of the file, nested ones too."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    lines = code_lines(source, tree)

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield name, len(lines.intersection(range(child.lineno, child.end_lineno + 1)))
                yield from visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def test_function_lengths_leave_out_docstrings_and_comments(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text(
        'def outer(a):\n'
        '    """Docstring,\n\n    two lines."""\n'
        '    # a comment\n\n'
        '    text = """not a\n    docstring"""\n'
        '    def inner():\n'
        '        return a\n'
        '    return inner, text\n'
    )
    assert dict(function_lengths(path)) == {"outer": 6, "outer.inner": 2}


def test_no_long_function():
    long = [
        f"{path.relative_to(REPO)}: {name} has {count} lines of code"
        for path in module_files("gamornet").values()
        for name, count in function_lengths(path)
        if count > MAX_CODE_LINES
    ]
    message = "\n".join(long)
    assert not long, f"{len(long)} function(s) over {MAX_CODE_LINES} lines of code:\n{message}"

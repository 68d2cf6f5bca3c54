"""Fail if the package's runtime import graph has a cycle, or if a module is over MAX_LINES lines.

``python scripts/check_imports.py [PACKAGE_DIR] [--max-lines N]`` (default: the ``ringaudio``
package next to this script, 400 lines). Exit status 0 when clean, 1 with each cycle and each long
module listed. Standard library only (``ast``): nothing is imported, so a broken or slow module
cannot hide a problem or make the check itself slow.

What counts as an import, and why:

- Imports that run when the module is imported count: at module level, including inside ``try``,
  ``with``, plain ``if`` blocks and class bodies, all of which execute at import time.
- ``if TYPE_CHECKING:`` blocks are skipped (their ``else`` branch is not): they never run.
- Imports inside functions and methods are ignored. They run when the function is called, which
  is (unless the module calls it while it is being imported) after every module involved has
  finished importing, so they do not see a half-initialised module; a deferred import is the usual
  way to keep a heavy or mutually dependent module off the import path, and counting it would
  report exactly the cycles it was written to break.
- ``from . import x`` is an edge to the submodule ``x`` when ``x`` is one, else to the package
  (``x`` is then a name its ``__init__`` defines, so the package must have run that far).
  ``from .a import b`` is an edge to ``a``, and to ``a.b`` when that is a submodule. Relative
  imports are resolved against the importing module's package.
- Importing ``pkg.a.b`` runs ``pkg/a/__init__`` first, so it is an edge to ``pkg.a`` too, except
  when ``pkg.a`` encloses the importing module: Python imported that package before the module, and
  a package whose ``__init__`` imports its own submodules is the normal layout, not a cycle. Such a
  package is an edge only when the module asks it for a name (``from .. import __version__``).
- Imports of modules outside the package are ignored.

``--type-checking`` counts the ``if TYPE_CHECKING:`` imports too, to see the cycles that exist only
for the type checker (allowed: they never run).
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

MAX_LINES = 400
MAX_CYCLES = 200  # listed per run: a tangled graph has exponentially many, the first ones say enough


def modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package (packages by ``__init__``)."""
    root = package_dir.name
    found: dict[str, Path] = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("")
        parts = [root, *rel.parts]
        if any(not part.isidentifier() for part in parts):
            continue  # not importable by name (e.g. a "-" in a script's name)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _runtime_imports(body: Iterable[ast.stmt], type_checking: bool = False) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module body runs (see the module docstring): function
    bodies are not entered, since a ``def`` only binds a name."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if type_checking or not _is_type_checking(node.test):
                yield from _runtime_imports(node.body, type_checking)
            yield from _runtime_imports(node.orelse, type_checking)
        elif isinstance(node, ast.ClassDef):
            yield from _runtime_imports(node.body, type_checking)
        elif isinstance(node, ast.Try | ast.TryStar):
            yield from _runtime_imports(node.body, type_checking)
            for handler in node.handlers:
                yield from _runtime_imports(handler.body, type_checking)
            yield from _runtime_imports(node.orelse, type_checking)
            yield from _runtime_imports(node.finalbody, type_checking)
        elif isinstance(node, ast.With | ast.AsyncWith):
            yield from _runtime_imports(node.body, type_checking)
        elif isinstance(node, ast.For | ast.AsyncFor | ast.While):
            yield from _runtime_imports(node.body, type_checking)
            yield from _runtime_imports(node.orelse, type_checking)
        elif isinstance(node, ast.Match):
            for case in node.cases:
                yield from _runtime_imports(case.body, type_checking)


def _package_of(name: str, path: Path) -> str:
    """The package a relative import in module ``name`` is resolved against."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(name: str, path: Path, known: set[str], type_checking: bool = False) -> set[str]:
    """The package's modules that module ``name`` imports when it is imported."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    enclosing = {name.rsplit(".", n)[0] for n in range(name.count(".") + 1)}  # name and its packages
    out: set[str] = set()

    def module(target: str) -> None:
        """``target`` runs, after each package above it that does not enclose this module."""
        parts = target.split(".")
        for n in range(1, len(parts) + 1):
            prefix = ".".join(parts[:n])
            if prefix in known and prefix not in enclosing:
                out.add(prefix)

    for node in _runtime_imports(tree.body, type_checking):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module(alias.name)
            continue
        if node.level:
            base = _package_of(name, path)
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in known:
                module(sub)  # a submodule (and the packages above it)
            elif target in known:
                module(target)
                if target != name:
                    out.add(target)  # a name defined by target (perhaps a package enclosing this module)
    return out


def graph(package_dir: Path, type_checking: bool = False) -> dict[str, set[str]]:
    mods = modules(package_dir)
    known = set(mods)
    return {name: imports_of(name, path, known, type_checking) for name, path in mods.items()}


def _components(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
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
                    found.append(sorted(component))
    return found


def cycles(edges: dict[str, set[str]], limit: int = MAX_CYCLES) -> list[list[str]]:
    """The elementary import cycles, each listed once, starting at its smallest module name."""
    out: list[list[str]] = []
    for component in _components(edges):
        members = set(component)
        for start in component:  # sorted: each cycle is found from its smallest member only
            path = [start]
            on_path = {start}
            work = [iter(sorted(edges[start] & members))]
            while work:
                child = next(work[-1], None)
                if child is None:
                    work.pop()
                    on_path.discard(path.pop())
                    continue
                if child == start:
                    out.append([*path, start])
                    if len(out) >= limit:
                        return out
                elif child > start and child not in on_path:
                    path.append(child)
                    on_path.add(child)
                    work.append(iter(sorted(edges[child] & members)))
    return out


def long_modules(package_dir: Path, max_lines: int) -> list[tuple[str, int]]:
    out = []
    for name, path in modules(package_dir).items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > max_lines:
            out.append((name, lines))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fail on import cycles and on modules over --max-lines lines")
    parser.add_argument("package", nargs="?", type=Path, default=Path(__file__).resolve().parents[1] / "ringaudio")
    parser.add_argument("--max-lines", type=int, default=MAX_LINES)
    parser.add_argument("--type-checking", action="store_true", help="count `if TYPE_CHECKING:` imports too")
    args = parser.parse_args(argv)
    package_dir: Path = args.package.resolve()
    if not (package_dir / "__init__.py").is_file():
        print(f"{package_dir} is not a package (no __init__.py)", file=sys.stderr)
        return 2
    found = cycles(graph(package_dir, args.type_checking))
    long = long_modules(package_dir, args.max_lines)
    for cycle in found:
        print("import cycle: " + " -> ".join(cycle))
    if len(found) >= MAX_CYCLES:
        print(f"(the first {MAX_CYCLES} cycles only)")
    for name, lines in long:
        print(f"module over {args.max_lines} lines: {name} ({lines} lines)")
    if found or long:
        return 1
    print(f"{package_dir.name}: no import cycles, no module over {args.max_lines} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())

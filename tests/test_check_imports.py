"""scripts/check_imports.py on throwaway packages: the cycles and long modules it must report, and the
imports it must not count."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).parents[1] / "scripts" / "check_imports.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_imports", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


C = _load()


def package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def run(pkg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(pkg), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_a_cycle_and_a_long_module_are_reported(tmp_path: Path) -> None:
    pkg = package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from . import b\n",
            "b.py": "from .c import thing\n",
            "c.py": "import pkg.a\nthing = 1\n",
            "long.py": "x = 1\n" * 401,
            "fine.py": "y = 1\n" * 400,  # exactly the limit: allowed
        },
    )
    out = run(pkg)
    assert out.returncode == 1, out
    assert "import cycle: pkg.a -> pkg.b -> pkg.c -> pkg.a" in out.stdout
    assert "module over 400 lines: pkg.long (401 lines)" in out.stdout
    assert "pkg.fine" not in out.stdout
    assert run(pkg, "--max-lines", "1000").stdout.count("\n") == 1  # the cycle alone


def test_a_clean_package_passes(tmp_path: Path) -> None:
    pkg = package(
        tmp_path,
        {
            "__init__.py": "from .core import Thing\nfrom . import sub\n",  # a package importing its parts
            "core.py": "from .errors import Error\n\nclass Thing:\n    pass\n",
            "errors.py": "class Error(Exception):\n    pass\n",
            "sub/__init__.py": "from .leaf import f\n",
            "sub/leaf.py": "from ..errors import Error\nimport os\n\ndef f() -> None:\n    pass\n",
            "typed.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from .late import Late\n"
                "else:\n"
                "    Late = None\n"
            ),
            "late.py": "from .typed import Late\n\ndef g() -> None:\n    from . import late  # deferred\n",
        },
    )
    out = run(pkg)
    assert out.returncode == 0, out
    assert out.stdout == "pkg: no import cycles, no module over 400 lines\n"
    # the TYPE_CHECKING import is a cycle for the type checker only
    typed = run(pkg, "--type-checking")
    assert typed.returncode == 1 and "import cycle: pkg.late -> pkg.typed -> pkg.late" in typed.stdout


def test_what_counts_as_an_import(tmp_path: Path) -> None:
    pkg = package(
        tmp_path,
        {
            "__init__.py": "VERSION = 1\n",
            "a/__init__.py": "",
            "a/b.py": "from .. import VERSION\nfrom ..c import d\nimport pkg.e.f as f\n",
            "c/__init__.py": "",
            "c/d.py": "",
            "e/__init__.py": "",
            "e/f.py": (
                "import json\n"
                "try:\n    from . import g\nexcept ImportError:\n    pass\n"
                "class K:\n    from .h import x\n"
                "def later() -> None:\n    from .. import a\n"
                "if TYPE_CHECKING:\n    from ..a import b\n"
            ),
            "e/g.py": "",
            "e/h.py": "x = 1\n",
        },
    )
    edges = C.graph(pkg)
    # a name from the enclosing package is an edge to it; its own package a is not (it encloses b)
    assert edges["pkg.a.b"] == {"pkg", "pkg.c", "pkg.c.d", "pkg.e", "pkg.e.f"}
    # try and class bodies run at import time; a function body and TYPE_CHECKING do not
    assert edges["pkg.e.f"] == {"pkg.e.g", "pkg.e.h"}
    assert C.graph(pkg, type_checking=True)["pkg.e.f"] == {"pkg.e.g", "pkg.e.h", "pkg.a", "pkg.a.b"}


def test_cycles_are_listed_once_each(tmp_path: Path) -> None:
    edges = {"a": {"b", "c"}, "b": {"a", "c"}, "c": {"a"}, "d": {"d"}, "e": set()}
    assert sorted(C.cycles(edges)) == [["a", "b", "a"], ["a", "b", "c", "a"], ["a", "c", "a"]]

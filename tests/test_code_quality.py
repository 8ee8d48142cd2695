"""The package stays ruff-clean and mypy-strict-clean."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: What is linted: the package, the example, the tests and the benchmarks.
SOURCES = [
    name for name in ("flask_shimmie", "example_songs", "tests", "benchmarks") if (ROOT / name).is_dir()
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (pip install -e '.[test]')")
def test_ruff_lint_and_format() -> None:
    lint = _run("ruff", "check", *SOURCES)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = _run("ruff", "format", "--check", *SOURCES)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy_strict() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


PACKAGE = ROOT / "flask_shimmie"
STORAGE = PACKAGE / "storage"
#: The only modules of the package above it that storage/ may import.
STORAGE_MAY_IMPORT = ("flask_shimmie.events", "flask_shimmie.errors")
DRIVERS = {"sqlite3", "psycopg", "psycopg_pool"}
FLASK_FAMILY = {"flask", "werkzeug", "flask_cors", "blinker", "click"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The absolute names of the modules ``source`` (the module ``module``) imports."""
    package = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.append(target)
            names.extend(f"{target}.{alias.name}" for alias in node.names)  # "from . import x"
    return names


def _imports_of(path: Path) -> list[str]:
    return _imports(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")


def _storage_offence(name: str) -> bool:
    """Whether a module under storage/ may not import ``name``."""
    if name.split(".")[0] in FLASK_FAMILY:
        return True
    if name == "flask_shimmie" or not name.startswith("flask_shimmie."):
        return False
    allowed = ("flask_shimmie.storage", *STORAGE_MAY_IMPORT)
    return not any(name == ok or name.startswith(ok + ".") for ok in allowed)


def test_storage_imports_neither_flask_nor_the_package_above_it() -> None:
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(STORAGE.rglob("*.py"))
        for name in _imports_of(path)
        if _storage_offence(name)
    ]
    assert offences == []


def test_no_database_driver_is_imported_outside_storage() -> None:
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if STORAGE not in path.parents
        for name in _imports_of(path)
        if name.split(".")[0] in DRIVERS
    ]
    assert offences == []


def test_no_module_but_the_extension_reads_the_stacks_private_attributes() -> None:
    pattern = re.compile(r"\bstack(\(\))?\._[a-z]")
    offences = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "extension.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offences == []


def test_the_layer_checks_notice_an_offence() -> None:
    module = "flask_shimmie.storage.sqlite.events"
    assert any(_storage_offence(n) for n in _imports("from flask import g", module))
    assert any(_storage_offence(n) for n in _imports("from ...state import AppState", module))
    assert any(_storage_offence(n) for n in _imports("from ... import dispatch", module))
    assert not any(_storage_offence(n) for n in _imports("from ...errors import ShimmieError", module))
    assert not any(_storage_offence(n) for n in _imports("from ..codec import decode_rows", module))
    assert "sqlite3" in _imports("import sqlite3", "flask_shimmie.cli")
    assert "psycopg" in _imports("from psycopg import sql", "flask_shimmie.cli")
    assert re.search(r"\bstack(\(\))?\._[a-z]", "check = state.stack._admin_authorizer")

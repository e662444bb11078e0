"""The import layering of STYLE.md, checked by walking each module's ``ast`` imports.

errors -> config, record, fs, simfs, keys -> filenames, chunks, bloom, block, rangedel, expiry -> sorted_array,
sorted_file, table_writer, wal, metadata -> merge, builder, runs, covered -> helper -> view, isolation -> core
-> snapshot -> versions -> commit, jobs -> recovery, check, backup, transaction -> store -> aio, then the benchmark
and the command line above it: bench, display -> dumpfile, inspector, report -> shell -> commands -> cli ->
__main__.
A module imports only modules of lower layers, never a sibling or a higher layer.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "kvstore"

LAYERS: list[set[str]] = [
    {"errors"},
    {"config", "record", "fs", "simfs", "keys", "keyspace", "metrics"},
    {"filenames", "chunks", "bloom", "block", "rangedel", "expiry"},
    {"cache"},
    {"sorted_array", "sorted_file", "table_writer", "wal", "metadata"},
    {"merge", "builder", "runs", "covered"},
    # a merge done file to file in a helper process
    {"helper"},
    # the engine's mechanisms, bottom up: what readers hold and what transactions read; the one typed home
    # of the hot fields; reading one snapshot; the live set of files; the commit pipeline beside flushes
    # and merges; then recovery, check, backup and transactions; the KV facade on top
    {"view", "isolation", "collection"},
    {"core", "spacestats"},
    {"snapshot", "stats", "trace"},
    {"cursor"},
    {"versions"},
    {"commit", "jobs"},
    {"recovery", "check", "backup", "transaction", "upgrade"},
    {"store"},
    # the asyncio API over the KV
    {"aiorun"},
    {"aio"},
    # the benchmark (python -m kvstore.bench, a user of the public API) and the command line, above the
    # engine: byte display, then the dump format, file inspectors and renderings, then the shell, the
    # commands, their parser and ``python -m kvstore``
    {"bench", "display"},
    {"dumpfile", "inspector", "report"},
    {"shell", "serve"},
    {"commands"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# Modules that may join the package beside the core (docs/limits.md, "The package": "more modules appear where a
# real need does"): they sit above the core and may import any of it, but nothing in the core imports them.
TOP = len(LAYERS)

THIRD_PARTY_HOME = {"sortedcontainers": {"sorted_array"}, "crc32c": {"record"}}
#: Packages of an optional extra (pyproject.toml), each imported by its one module only: ``serve``.
EXTRA_HOME = {"starlette": {"serve"}, "uvicorn": {"serve"}}
ALLOWED_THIRD_PARTY = {"attrs"} | set(THIRD_PARTY_HOME)


def _modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(kvstore modules imported, other top-level packages imported) by ``module``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(), filename=f"{module}.py")
    internal: set[str] = set()
    external: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "kvstore":
                    if len(parts) > 1:
                        internal.add(parts[1])
                    else:
                        internal.add("__init__")
                else:
                    external.add(parts[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # relative import: "from . import x" or "from .x import y"
                if node.module:
                    internal.add(node.module.split(".")[0])
                else:
                    internal.update(alias.name for alias in node.names)
            elif node.module is not None:
                parts = node.module.split(".")
                if parts[0] == "kvstore":
                    if len(parts) > 1:
                        internal.add(parts[1])
                    else:
                        internal.update(alias.name for alias in node.names)
                else:
                    external.add(parts[0])
    return internal, external


def _stdlib() -> frozenset[str]:
    import sys

    return frozenset(sys.stdlib_module_names)


def test_every_core_module_of_the_layering_exists() -> None:
    assert set(LAYER_OF) <= set(_modules())


@pytest.mark.parametrize("module", _modules(), ids=_modules())
def test_module_imports_only_lower_layers(module: str) -> None:
    internal, _ = _imports(module)
    mine = LAYER_OF.get(module, TOP)
    for dep in internal:
        assert dep != "__init__", f"{module} imports the package root"
        assert dep in LAYER_OF or mine == TOP, f"core module {module} imports non-core module {dep}"
        theirs = LAYER_OF.get(dep, TOP)
        assert theirs < mine, f"{module} (layer {mine}) imports {dep} (layer {theirs})"


@pytest.mark.parametrize("module", _modules(), ids=_modules())
def test_module_imports_only_declared_third_party_packages(module: str) -> None:
    _, external = _imports(module)
    stdlib = _stdlib()
    for dep in external - stdlib - {"__future__"}:
        if dep in EXTRA_HOME:
            assert module in EXTRA_HOME[dep], f"{dep}, of an optional extra, may be imported only in {EXTRA_HOME[dep]}"
            continue
        assert dep in ALLOWED_THIRD_PARTY, f"{module} imports {dep}, not a runtime dependency"
        home = THIRD_PARTY_HOME.get(dep)
        assert home is None or module in home, f"{dep} may be imported only in {sorted(home or ())}, not {module}"


@pytest.mark.parametrize(("package", "home"), sorted({**THIRD_PARTY_HOME, **EXTRA_HOME}.items()),
                         ids=sorted({**THIRD_PARTY_HOME, **EXTRA_HOME}))
def test_third_party_package_is_imported_in_its_home_module(package: str, home: set[str]) -> None:
    importers = {m for m in _modules() if package in _imports(m)[1]}
    assert importers == home


def test_errors_module_is_the_bottom_and_imports_nothing_of_kvstore() -> None:
    internal, _ = _imports("errors")
    assert internal == set()


def test_init_only_re_exports_with_all() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    imported: set[str] = set()
    assigned: set[str] = set()
    all_names: list[str] | None = None
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom):
            assert node.module is not None and node.module.startswith("kvstore."), ast.dump(node)
            imported.update(alias.asname or alias.name for alias in node.names)
            continue
        if isinstance(node, ast.Import):
            imported.update(alias.asname or alias.name for alias in node.names)
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            assert len(names) == 1, ast.dump(node)
            name = names[0]
            if name == "__all__":
                assert node.value is not None
                all_names = ast.literal_eval(node.value)
            else:
                assert isinstance(node.value, ast.Constant), f"__init__ computes {name}"
                assigned.add(name)
            continue
        pytest.fail(f"__init__.py does more than re-export: {ast.dump(node)[:80]}")
    assert all_names is not None, "__init__.py has no __all__"
    assert set(all_names) == imported | assigned
    assert len(all_names) == len(set(all_names))


def test_init_all_names_resolve() -> None:
    import kvstore

    for name in kvstore.__all__:
        assert hasattr(kvstore, name), name


def test_layering_walker_sees_a_violation() -> None:
    # the walker itself must report both forms of import, or every test above passes vacuously
    internal, external = _imports("store")
    assert {"commit", "jobs", "config", "errors"} <= internal
    assert "time" in external
    assert "attrs" in _imports("stats")[1]
    internal, external = _imports("sorted_array")
    assert "sortedcontainers" in external

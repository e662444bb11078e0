"""The documentation (``docs/``, ``mkdocs.yml``): it builds strictly, every public name has a docstring and a
place in the API reference, the examples on its pages run, and the command line and tuning pages cover
every command, option and ``Config`` field.

The reference is built by mkdocstrings from what griffe reads statically, so the docstring checks load the
package with griffe too: what they find missing is what the reference would show without a description.
"""

from __future__ import annotations

import argparse
import contextlib
import doctest
import io
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import griffe
import pytest

import kvstore
from kvstore import Config, cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

#: The classes whose every public member must be documented, by their public path.
CLASSES = ["kvstore.KV", "kvstore.KVTX", "kvstore.Cursor", "kvstore.Config", "kvstore.Stats", "kvstore.TableStats",
           "kvstore.simfs.SimFS", "kvstore.Collection", "kvstore.CollectionStats", "kvstore.aio.AsyncKV",
           "kvstore.aio.AsyncCollection", "kvstore.aio.AsyncKVTX", "kvstore.aio.AsyncScan",
           "kvstore.aio.AsyncCursor", "kvstore.Trace", "kvstore.Step", "kvstore.BlockRead"]
#: Public names outside ``kvstore.__all__`` that the reference documents.
EXTRA_NAMES = ["kvstore.simfs.SimFS", "kvstore.simfs.CrashMode", "kvstore.simfs.SimulatedCrash",
               "kvstore.simfs.SimFile", "kvstore.fs.File", "kvstore.fs.FileLock", "kvstore.aio.AsyncKV",
               "kvstore.aio.AsyncKVTX", "kvstore.aio.AsyncScan", "kvstore.aio.AsyncCursor",
               "kvstore.aio.AsyncCollection"]
PUBLIC_NAMES = [f"kvstore.{name}" for name in kvstore.__all__ if not name.startswith("__")]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=config.parent, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation, built once for this module's tests."""
    out = tmp_path_factory.mktemp("site")
    result = _build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    """kvstore as griffe reads it from the source, as the reference does."""
    loaded = griffe.load("kvstore", search_paths=[str(ROOT)], resolve_aliases=True)
    assert isinstance(loaded, griffe.Module)
    return loaded


def _object(package: griffe.Module, path: str) -> griffe.Object:
    found = package[path.removeprefix("kvstore.")]
    target = found.final_target if isinstance(found, griffe.Alias) else found
    assert isinstance(target, griffe.Object)
    return target


def _public_members(cls: griffe.Object) -> Iterator[tuple[str, griffe.Object]]:
    """(name, object) of each public function, property and attribute of ``cls``, inherited ones included."""
    for name, member in sorted(cls.all_members.items()):
        if name.startswith("_"):
            continue
        target = member.final_target if isinstance(member, griffe.Alias) else member
        if isinstance(target, griffe.Function | griffe.Attribute):
            yield name, target


def _documented(obj: griffe.Object) -> bool:
    return obj.docstring is not None and bool(obj.docstring.value.strip())


# ---------------------------------------------------------------------- the build


def test_docs_build_strict_passes(site: Path) -> None:
    assert (site / "index.html").is_file()
    assert (site / "reference" / "kv" / "index.html").is_file()


def test_docs_build_fails_on_a_broken_reference(tmp_path: Path) -> None:
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(DOCS, tmp_path / "docs")
    (tmp_path / "kvstore").symlink_to(ROOT / "kvstore", target_is_directory=True)
    with (tmp_path / "docs" / "index.md").open("a") as page:
        page.write("\nSee [a call][kvstore.KV.no_such_call] and [a page](no-such-page.md).\n")
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "kvstore.KV.no_such_call" in output
    assert "no-such-page.md" in output


# ---------------------------------------------------------------------- docstrings


def test_every_public_name_has_a_docstring(package: griffe.Module) -> None:
    missing = [path for path in PUBLIC_NAMES + EXTRA_NAMES if not _documented(_object(package, path))]
    assert not missing, "public names without a docstring: " + ", ".join(missing)


@pytest.mark.parametrize("path", CLASSES, ids=[p.rsplit(".", 1)[1] for p in CLASSES])
def test_every_public_member_has_a_docstring(package: griffe.Module, path: str) -> None:
    cls = _object(package, path)
    members = list(_public_members(cls))
    assert members, f"{path} has no public members: is it the class the reference documents?"
    missing = [f"{path}.{name} ({member.kind.value}, defined in {member.path})"
               for name, member in members if not _documented(member)]
    assert not missing, "public members without a docstring:\n  " + "\n  ".join(missing)


def test_every_config_field_has_a_docstring_naming_its_default(package: griffe.Module) -> None:
    config = _object(package, "kvstore.Config")
    missing = []
    for field in attrs.fields(Config):
        member = config.members.get(field.name)
        docstring = None if member is None or member.docstring is None else member.docstring.value
        if not docstring or "default" not in docstring.lower():
            missing.append(field.name)
    assert not missing, "Config fields whose docstring does not give the default: " + ", ".join(missing)


# ---------------------------------------------------------------------- the reference


def _anchors(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "reference").rglob("index.html"):
        ids.update(re.findall(r'id="(kvstore\.[\w.]+)"', page.read_text()))
    return ids


def test_every_public_name_is_in_the_reference(site: Path) -> None:
    anchors = _anchors(site)
    missing = [path for path in PUBLIC_NAMES + EXTRA_NAMES if path not in anchors]
    assert not missing, "public names missing from docs/reference/: " + ", ".join(missing)


@pytest.mark.parametrize("path", CLASSES, ids=[p.rsplit(".", 1)[1] for p in CLASSES])
def test_every_public_member_is_in_the_reference(site: Path, package: griffe.Module, path: str) -> None:
    anchors = _anchors(site)
    missing = [f"{path}.{name}" for name, _ in _public_members(_object(package, path))
               if f"{path}.{name}" not in anchors]
    assert not missing, "public members missing from docs/reference/: " + ", ".join(missing)


# ---------------------------------------------------------------------- the pages


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_docs_page_examples_pass(page: Path) -> None:
    result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {page.name}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings if opt not in ("-h", "--help")}


def _bench_options() -> set[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.FORWARDED["bench"][1](["--help"])
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", out.getvalue())) - {"--help"}


def test_cli_page_has_a_section_for_every_command_and_every_option() -> None:
    text = (DOCS / "cli.md").read_text()
    commands = _subparsers(cli.build_parser())
    missing = [f"### {name}" for name in [*commands, *cli.FORWARDED] if f"\n### {name}\n" not in text]
    options = {name: _options(p) for name, p in commands.items()}
    for kind, p in _subparsers(commands["inspect"]).items():
        options[f"inspect {kind}"] = _options(p)
        if f"kvstore inspect {kind}" not in text:
            missing.append(f"kvstore inspect {kind}")
    options["bench"] = _bench_options()
    for name, opts in options.items():
        missing.extend(f"{name} {opt}" for opt in sorted(opts) if f"{opt}" not in text)
    assert not missing, "not in docs/cli.md: " + ", ".join(missing)


def test_cli_page_shows_the_current_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # the width the page was written at
    text = (DOCS / "cli.md").read_text()
    block = re.search(r"```text\n\$ kvstore --help\n(.*?)```", text, re.S)
    assert block is not None, "docs/cli.md must show `kvstore --help` in a text block"
    assert block.group(1) == cli.build_parser().format_help()


def _shown_default(value: object) -> str:
    """A default as docs/tuning.md writes it: `True`, "strict", 2.0, 4,096, 8 MiB."""
    if isinstance(value, bool):
        return f"`{value}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value >> 20} MiB"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def test_tuning_page_gives_every_config_field_with_its_default() -> None:
    text = (DOCS / "tuning.md").read_text()
    rows = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| \[`(\w+)`\]\([^)]*\) \|([^|]*)\|", text, re.M)}
    wrong = []
    for field in attrs.fields(Config):
        shown = _shown_default(field.default)
        if rows.get(field.name) != shown:
            wrong.append(f"{field.name}: the table shows {rows.get(field.name)!r}, the default is {shown!r}")
        if not re.search(rf"^## .*\b{field.name}\b", text, re.M):
            wrong.append(f"{field.name}: no section")
    assert not wrong, "docs/tuning.md: " + "; ".join(wrong)

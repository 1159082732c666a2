"""The pipeline runs one way (DESIGN.md, "The pipeline"): a module imports from
its own stage and the stages before it, never from a later one. Read from the
sources with `ast`, so every import counts: top-level, inside functions, under
TYPE_CHECKING, relative, `from memprofile import x`.

Stages, first to last:
  utilities  _version, units, errors, files, python_source, kept_modules, rank_files, storage: they import no stage
  capture/   framework events as recorded (RawCapture)
  model/     the Profile and its records, its codec and schema
  analysis/  what the events and profiles say: replay, peak, tables, lines, steps, rules, compare, merge
  render/    text, HTML, bokeh, bundles
  run        profiler, store, trial, importing, run_end: a profile made, kept, tried, imported
  jupyter/   the magics, the comm, the widget (they run the profiler and read the store)
  entry      the package's public API (__init__), __main__, cli, integrations (frameworks' callbacks)

The only imports against the direction are `EXCEPTIONS`: the display hooks on
`Profile`, so that a Profile shows itself in a notebook and saves its report.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import memprofile

PACKAGE = Path(memprofile.__file__).parent

UTILITIES = {"_version", "units", "errors", "files", "python_source", "kept_modules", "rank_files", "storage"}
RUN = {"profiler", "store", "trial", "importing", "run_end", "whatif", "cell_runner"}
ENTRY = {"__init__", "__main__", "cli", "integrations"}
STAGES = ["utilities", "capture", "model", "analysis", "render", "run", "jupyter", "entry"]

#: (module, function, imported module): the display hooks on Profile, which
#: import render/ and jupyter/ lazily when a Profile is shown or saved.
EXCEPTIONS = {
    ("memprofile.model.profile", "Profile.save_html", "memprofile.render.report"),
    ("memprofile.model.profile", "Profile.widget", "memprofile.jupyter.widget"),
    ("memprofile.model.profile", "Profile._repr_mimebundle_", "memprofile.jupyter.display"),
    ("memprofile.model.profile", "Profile.__repr__", "memprofile.render.text"),
    # and the what-if engine, which re-executes the cell where this kernel still has its names
    ("memprofile.model.profile", "Profile.predict", "memprofile.whatif.predict"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    """The stage of a module of the package; a top-level module nobody placed fails."""
    parts = module.split(".")
    if len(parts) == 1:
        return "entry"  # the package itself: its __init__
    if parts[1] in ("capture", "model", "analysis", "render", "jupyter"):
        return parts[1]
    for stage, names in (("utilities", UTILITIES), ("run", RUN), ("entry", ENTRY)):
        if parts[1] in names:
            return stage
    raise AssertionError(f"{module}: a top-level module of no stage; add it to UTILITIES, RUN or ENTRY in {__file__}")


def resolve(name: str) -> str:
    """A dotted name as the module it names: `memprofile.store` is a module,
    `memprofile.__version__` a name in the package's __init__."""
    parts = name.split(".")
    while len(parts) > 1:
        base = PACKAGE.parent.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            break
        parts.pop()
    return ".".join(parts)


class Imports(ast.NodeVisitor):
    """Every memprofile module a source file imports, with the function (qualified) that imports it."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.scope: list[str] = []
        self.found: list[tuple[str, int, str]] = []  # (function, line, imported module)

    def _scoped(self, node) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _add(self, node: ast.stmt, name: str) -> None:
        found = (".".join(self.scope), node.lineno, resolve(name))
        if (name == "memprofile" or name.startswith("memprofile.")) and found not in self.found:
            self.found.append(found)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        for alias in node.names:  # `from memprofile import store` imports the module memprofile.store
            self._add(node, f"{source}.{alias.name}")


def against_the_pipeline(module: str, tree: ast.Module, is_package: bool = False) -> list[tuple[str, str]]:
    """(where, what) for each import of `module` against the direction, the exceptions left out:
    where is 'module:line (function)', what is 'imported module: stage imports stage'."""
    visitor = Imports(module, is_package)
    visitor.visit(tree)
    here = stage_of(module)
    out = []
    for function, line, imported in visitor.found:
        there = stage_of(imported)
        if STAGES.index(there) > STAGES.index(here) and (module, function, imported) not in EXCEPTIONS:
            out.append((f"{module}:{line} ({function or 'module level'})", f"{imported}: {here} imports {there}"))
    return out


def package_imports() -> tuple[list[str], set[tuple[str, str, str]]]:
    """(the imports against the pipeline in the package, the exceptions it holds)."""
    against, imported = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module, is_package = module_name(path), path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        against += [f"{where} -> {what}" for where, what in against_the_pipeline(module, tree, is_package)]
        visitor = Imports(module, is_package)
        visitor.visit(tree)
        imported.update((module, function, name) for function, _, name in visitor.found)
    return against, EXCEPTIONS & imported


def test_every_import_runs_with_the_pipeline():
    # GIVEN every module of the package WHEN their imports are read
    against, exceptions = package_imports()
    # THEN none imports a later stage, but for the display hooks on Profile
    assert not against, "imports against the pipeline (DESIGN.md):\n" + "\n".join(against)
    # AND each exception is still there (one that went is taken off the list)
    assert exceptions == EXCEPTIONS, f"exceptions no longer met: {sorted(EXCEPTIONS - exceptions)}"


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("memprofile.units", "from memprofile.model.profile import Profile", "utilities imports model"),
        ("memprofile.capture.host", "def f():\n    from ..analysis import compare", "capture imports analysis"),
        (
            "memprofile.model.profile",
            "class Profile:\n    def to_html(self):\n        from memprofile.render import html",
            "model imports render",
        ),
        ("memprofile.analysis.compare", "from memprofile import store", "analysis imports run"),
        ("memprofile.render.text", "import memprofile.jupyter.widget", "render imports jupyter"),
        ("memprofile.store", "from memprofile import __version__", "run imports entry"),
    ],
)
def test_an_import_against_the_pipeline_is_found(module, source, expected):
    # GIVEN an import against the direction: at module level, in a function, relative, from the package
    # WHEN the module's imports are read THEN it is found
    assert [what.split(": ")[1] for _, what in against_the_pipeline(module, ast.parse(source))] == [expected]


def test_only_the_named_display_hooks_are_exceptions():
    # GIVEN a display hook's import, and the same import from another method of Profile
    hook = "class Profile:\n    def widget(self):\n        from memprofile.jupyter.widget import profile_widget"
    other = "class Profile:\n    def view(self):\n        from memprofile.jupyter.widget import profile_widget"
    # WHEN they are read THEN only the named hook passes
    assert against_the_pipeline("memprofile.model.profile", ast.parse(hook)) == []
    assert len(against_the_pipeline("memprofile.model.profile", ast.parse(other))) == 1

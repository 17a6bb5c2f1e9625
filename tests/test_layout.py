"""The repository layout the design fixes."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "pipelines", "serving")


def test_top_level_folders():
    for name in ("pipelines", "features", "models", "serving", "tests", "mlflow"):
        assert (REPO / name).is_dir(), name
    assert (REPO / "pyproject.toml").is_file() and (REPO / "README.md").is_file()


def test_mlflow_folder_does_not_shadow_the_package():
    assert not (REPO / "mlflow" / "__init__.py").exists()
    import mlflow

    assert Path(mlflow.__file__).parent != REPO / "mlflow"
    assert hasattr(mlflow, "start_run")


def test_stage_packages_import_under_one_name():
    for name in ("pipelines", "features", "models", "serving"):
        module = importlib.import_module(f"oihedge.{name}")
        assert Path(module.__file__).parent == REPO / name


def test_pyproject_installs_the_folders_under_oihedge_alone():
    """``pip install .`` puts ``oihedge`` (and its dist-info) into site-packages and
    nothing else: every folder is mapped under ``oihedge.``, and every sub-package (a
    folder holding an ``__init__.py``) is listed, so none is left out of the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {f"oihedge.{p}": p for p in PACKAGES}
    on_disk = {
        "oihedge." + ".".join(init.parent.relative_to(REPO).parts)
        for p in PACKAGES
        for init in (REPO / p).rglob("__init__.py")
    }
    assert sorted(config["packages"]) == sorted(on_disk)
    assert set(config["package-data"]) <= on_disk
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert all(target.startswith("oihedge.") for target in scripts.values())


def test_pipelines_uses_only_the_schema_of_features():
    """pipelines/ may import the panel contract (oihedge.features.schema and its
    screening, oihedge.features.screening) and nothing else from features/.

    The CLI (``pipelines/cli/``) is the exception: the CLI reaches every stage.
    """
    for path in (REPO / "pipelines").rglob("*.py"):
        if path.parent.name == "cli":
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("from oihedge.features", "import oihedge.features")):
                assert stripped.startswith(
                    (
                        "from oihedge.features.schema import",
                        "from oihedge.features.screening import",
                    )
                ), f"{path.name}: {line}"


# -- the import graph: one way, no cycles ----------------------------------------------


#: import cycles that remain until a module outside this check's reach changes, with why;
#: any other cycle, or one of these grown, fails :func:`test_no_import_cycle`
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _module_names() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the stage packages."""
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[f"oihedge.{name}"] = path
    return found


def imported_names(source: str) -> set[str]:
    """Every dotted name ``source`` imports, at module level or inside a function (an
    ``import`` in a function still runs, it only runs later); the names a ``from`` import
    takes are included (``from oihedge.models import registry`` -> ``oihedge.models.registry``). Imports
    under ``if TYPE_CHECKING:`` never run and are left out."""
    tree = ast.parse(source)
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name resolved to its longest module)."""
    modules = _module_names()

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for module, path in modules.items():
        found = {owner(n) for n in imported_names(path.read_text())}
        graph[module] = {m for m in found if m is not None and m != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of ``graph`` with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_cycle_check_sees_function_level_imports_and_skips_type_checking():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from oihedge.models import registry\n"
        "if TYPE_CHECKING:\n"
        "    from oihedge.serving.backtest.engine import PolicyRun\n"
        "def f():\n"
        "    import oihedge.pipelines.cli.common\n"
    )
    names = imported_names(source)
    assert {"oihedge.models.registry", "oihedge.pipelines.cli.common"} <= names
    assert "oihedge.serving.backtest.engine" not in names
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == {frozenset({"a", "b", "c"})}


def test_no_import_cycle():
    found = import_cycles(import_graph())
    assert found <= set(KNOWN_CYCLES), sorted(sorted(c) for c in found - set(KNOWN_CYCLES))


def test_models_and_features_import_neither_serving_nor_pipelines():
    for module, deps in import_graph().items():
        if module.split(".")[1] in ("features", "models"):
            bad = sorted(d for d in deps if d.split(".")[1] in ("serving", "pipelines"))
            assert not bad, f"{module} imports {bad}"


def test_nothing_below_the_cli_imports_it():
    for module, deps in import_graph().items():
        if module.startswith("oihedge.pipelines.cli"):
            continue
        bad = sorted(d for d in deps if d.startswith("oihedge.pipelines.cli"))
        assert not bad, f"{module} imports {bad}"


def room(module: str) -> str:
    """The room a module lives in, as a folder: its sub-package below a top-level folder
    (``oihedge.serving.live.loop`` -> ``serving/live``), or the module itself at a
    folder's top (``oihedge.serving.redact`` -> ``serving/redact``)."""
    return "/".join(module.split(".")[1:3])


#: serving's rooms and the serving rooms each may import: one direction, live ->
#: execution -> policy, backtest -> policy and execution; the feeds stand alone
#: (their floor is the store and the collectors in pipelines/); ``serving/redact``
#: (secrets out of logged text) serves the brokers and the live loop alike
SERVING_IMPORTS = {
    "serving/policy": set(),
    "serving/execution": {"serving/policy", "serving/redact"},
    "serving/feeds": set(),
    "serving/live": {"serving/execution", "serving/policy", "serving/feeds", "serving/redact"},
    "serving/backtest": {"serving/policy", "serving/execution"},
    "serving/dashboard": {"serving/live"},
    "serving/redact": set(),
}

#: what serving may take from pipelines/: the feeds read the store and drive the
#: collectors; the dashboard's market page reads the store (and the simulator's output
#: folder names); nothing else in serving opens pipelines/
SERVING_PIPELINES = {
    "serving/feeds": {"pipelines/store", "pipelines/ingest"},
    "serving/dashboard": {"pipelines/store", "pipelines/sim"},
}


def test_serving_rooms_import_one_way():
    graph = import_graph()
    rooms = {room(m) for m in graph if m.startswith("oihedge.serving.")}
    assert rooms <= set(SERVING_IMPORTS), sorted(rooms - set(SERVING_IMPORTS))
    for module, deps in graph.items():
        if not module.startswith("oihedge.serving."):
            continue
        here = room(module)
        for dep in deps:
            there = room(dep)
            if there == here or there == "serving":
                continue
            if there.startswith("serving/"):
                assert there in SERVING_IMPORTS[here], f"{module} imports {dep}"
            elif there.startswith("pipelines"):
                assert there in SERVING_PIPELINES.get(here, set()), f"{module} imports {dep}"


def test_the_rooms_are_told_apart():
    assert room("oihedge.serving.live.loop") == "serving/live"
    assert room("oihedge.serving.execution.brokers.paper") == "serving/execution"
    assert room("oihedge.serving.redact") == "serving/redact"
    assert room("oihedge.pipelines.ingest.collectors") == "pipelines/ingest"
    assert room("oihedge.serving") == "serving"


MAX_LINES = 450

#: modules over :data:`MAX_LINES` lines, with why they may be for now
LONG_MODULES: dict[str, str] = {}


def test_no_module_over_450_lines():
    """A module longer than this does more than one job: split it along the jobs."""
    long = {
        module: len(path.read_text().splitlines())
        for module, path in _module_names().items()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert set(long) <= set(LONG_MODULES), sorted(
        f"{m} ({n} lines)" for m, n in long.items() if m not in LONG_MODULES
    )
    assert set(LONG_MODULES) <= set(long), (
        f"no longer over {MAX_LINES} lines, take out of LONG_MODULES: "
        f"{sorted(set(LONG_MODULES) - set(long))}"
    )


def test_only_the_registry_builds_models_uris():
    """``models:/`` URIs (a registered version or alias) are built in models/registry.py
    alone; docstrings may mention them."""
    for module, path in _module_names().items():
        if module == "oihedge.models.registry":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "models:/" in node.value
                and id(node) not in docstrings
            ):
                raise AssertionError(f"{module} line {node.lineno} builds a models:/ URI")

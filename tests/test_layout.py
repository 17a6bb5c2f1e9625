"""The repository layout the design fixes."""

from __future__ import annotations

import importlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_top_level_folders():
    for name in ("pipelines", "features", "models", "serving", "tests", "mlflow"):
        assert (REPO / name).is_dir(), name
    assert (REPO / "pyproject.toml").is_file() and (REPO / "README.md").is_file()


def test_mlflow_folder_does_not_shadow_the_package():
    assert not (REPO / "mlflow" / "__init__.py").exists()
    import mlflow

    assert Path(mlflow.__file__).parent != REPO / "mlflow"
    assert hasattr(mlflow, "start_run")


def test_stage_packages_import():
    for name in ("pipelines", "features", "models", "serving"):
        module = importlib.import_module(name)
        assert Path(module.__file__).parent == REPO / name


def test_pipelines_uses_only_the_schema_of_features():
    """pipelines/ may import features.schema and nothing else from features/.

    The CLI modules (``cli*.py``) are the exception: the CLI reaches every stage.
    """
    for path in (REPO / "pipelines").glob("*.py"):
        if path.name.startswith("cli"):
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("from features", "import features")):
                assert stripped.startswith("from features.schema import"), f"{path.name}: {line}"

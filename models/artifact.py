"""The model artifact: one MLflow pyfunc holding booster, calibrator and feature spec.

Everything needed to reproduce a probability travels inside the model folder:

- ``booster.txt``: the LightGBM model (text format, exact floats);
- ``calibrator.json``: the fitted probability calibrator (:mod:`oihedge.models.calibrate`);
- ``model_card.json``: the ordered feature list, the feature spec (name, version, hash),
  the label horizon and parameters, the dataset fingerprint and the git commit.

The feature spec and card are also written to the MLflow model's ``metadata`` so the
registry can check them without loading the booster. The pyfunc's input signature is the
ordered feature list (doubles; NaN for a missing feature); its output is the calibrated
``p_cascade`` and the raw booster score ``p_raw``. Artifacts are read once, in
``load_context``. Loading needs the ``oihedge`` package (at the recorded commit) and the
pinned requirements.
"""

from __future__ import annotations

import json
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from oihedge.models.calibrate import ProbabilityCalibrator
from oihedge.models.single_row import SingleRowBooster
from oihedge.models.train import CascadeClassifier

_PINNED = ("lightgbm", "numpy", "pandas", "scikit-learn", "mlflow", "polars", "pyarrow")


def pinned_requirements() -> list[str]:
    """``name==version`` of the packages the pyfunc needs, as installed here."""
    return [f"{name}=={importlib_metadata.version(name)}" for name in _PINNED]


def signature_for(features: tuple[str, ...]) -> ModelSignature:
    """Input: the ordered features as doubles; output: p_cascade and p_raw."""
    inputs = Schema([ColSpec("double", name, required=False) for name in features])
    outputs = Schema([ColSpec("double", "p_cascade"), ColSpec("double", "p_raw")])
    return ModelSignature(inputs=inputs, outputs=outputs)


class CascadePyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper; the live loop calls :meth:`predict_vector` directly.

    One vector goes through LightGBM's single-row fast path
    (:class:`oihedge.models.single_row.SingleRowBooster`: the same trees and numbers as
    ``Booster.predict``, without its per-call setup), then the same calibrator.
    """

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        paths = context.artifacts
        self.booster = lgb.Booster(model_file=paths["booster"])
        self.calibrator = ProbabilityCalibrator.from_dict(
            json.loads(Path(paths["calibrator"]).read_text("utf-8"))
        )
        self.card: dict[str, Any] = json.loads(Path(paths["card"]).read_text("utf-8"))
        self.features: tuple[str, ...] = tuple(self.card["features"])
        self.rows = SingleRowBooster(self.booster)

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ValueError(f"model input lacks feature columns {missing}")
        return frame.loc[:, list(self.features)].to_numpy(dtype=np.float64, na_value=np.nan)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        raw = self.booster.predict(self._matrix(model_input))
        return pd.DataFrame({"p_cascade": self.calibrator.predict(raw), "p_raw": raw})

    def predict_vector(self, x: np.ndarray) -> tuple[float, float]:
        """(calibrated, raw) probability for one feature vector in the model's order."""
        raw = self.rows.predict(x)
        return float(self.calibrator.predict(np.array([raw]))[0]), raw

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """SHAP contributions (log-odds) of one vector; the last entry is the bias."""
        return self.rows.contributions(x)


def log_cascade_model(
    model: CascadeClassifier,
    card: dict[str, Any],
    *,
    input_example: pd.DataFrame | None = None,
) -> mlflow.models.model.ModelInfo:
    """Log ``model`` as a pyfunc named ``model`` in the active MLflow run.

    ``card`` must carry ``features`` (ordered), ``feature_spec``, ``horizon``,
    ``dataset`` and ``git_commit``; it is stored as an artifact and as model metadata.
    """
    for key in ("features", "feature_spec", "horizon", "dataset", "git_commit"):
        if key not in card:
            raise ValueError(f"model card lacks {key!r}")
    if tuple(card["features"]) != tuple(model.features_):
        raise ValueError("model card's features differ from the fitted model's features")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "booster.txt").write_text(model.booster_.model_to_string(), "utf-8")
        (folder / "calibrator.json").write_text(json.dumps(model.calibrator_.to_dict()), "utf-8")
        (folder / "model_card.json").write_text(json.dumps(card, indent=2, default=str), "utf-8")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=CascadePyfunc(),
            artifacts={
                "booster": str(folder / "booster.txt"),
                "calibrator": str(folder / "calibrator.json"),
                "card": str(folder / "model_card.json"),
            },
            signature=signature_for(tuple(model.features_)),
            input_example=input_example,
            pip_requirements=pinned_requirements(),
            metadata={"oihedge": json.loads(json.dumps(card, default=str))},
        )

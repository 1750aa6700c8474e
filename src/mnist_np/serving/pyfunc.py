"""The trained network as an MLflow pyfunc model, so `mlflow models predict/serve` can use it.

Input: a float32 tensor of shape (n, 784), one row per image (row-major 28x28); served as
{"inputs": [[...784 values...], ...]}. By default the pixels are already normalised exactly like
the normalize stage's output; with the parameter `raw_pixels=True` they are raw MNIST-style 0-255
values and the model applies the normalize stage's transform itself (from the stats.json it was
logged with). Output: a DataFrame with the predicted `digit` and the probabilities `p0` ... `p9`.

A tensor signature rather than 784 named columns: MLflow validates, stores and parses a signature
per column, which makes logging the model slow (docs/performance.md).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import scipy
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel

from ..data import splits
from ..model import reference, weights
from . import reading

MODEL_NAME = "model"  # runs:/<run id>/model


def probabilities_frame(P: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"digit": P.argmax(axis=1), **{f"p{d}": P[:, d] for d in range(P.shape[1])}})


class DigitModel(PythonModel):
    def load_context(self, context) -> None:
        self.params = weights.load(context.artifacts["weights"])
        self.stats = json.loads(Path(context.artifacts["stats"]).read_text())

    # np.ndarray: MLflow validates nothing from this hint (the tensor signature does that) and, unlike
    # a missing hint, does not warn about it.
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        x = np.asarray(model_input, dtype=np.float32).reshape(-1, reference.N_INPUTS)
        if (params or {}).get("raw_pixels", False):
            x = splits.transform(x, self.stats)
        return probabilities_frame(reference.predict_proba(self.params, x.astype(self.params["W1"].dtype)))


def log_model(weights_path: Path, stats_path: Path, example: np.ndarray) -> None:
    """Log the pyfunc model into the active run, with a signature and an input example."""
    example = np.ascontiguousarray(example, dtype=np.float32).reshape(-1, reference.N_INPUTS)
    preprocessing = splits.load_stats(Path(stats_path).parent)["preprocessing"]
    output = probabilities_frame(reference.predict_proba(weights.load(weights_path), example))
    with warnings.catch_warnings():
        # MLflow's advice on integer columns and on type hints does not apply: the signature is explicit.
        warnings.filterwarnings("ignore", message=".*(integer column|Add type hints).*", category=UserWarning)
        mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(Path(__file__).with_name("served_model.py")),
            artifacts={"weights": str(weights_path), "stats": str(stats_path)},
            signature=infer_signature(example, output, params={"raw_pixels": False}),
            input_example=example,
            # How a client turns an image into the input (mnist-predict follows it): see preprocess.py,
            # and the confidence below which its answer is "not readable" (reading.py).
            metadata={"preprocessing": preprocessing, "reject_below": reading.threshold_beside(weights_path)},
            # Ship the package with the model so it loads wherever MLflow runs it, and name the
            # requirements instead of letting MLflow infer them (slow, and it imports everything).
            code_paths=[str(Path(__file__).parent)],
            pip_requirements=[
                f"numpy=={np.__version__}",
                f"scipy=={scipy.__version__}",
                f"pandas=={pd.__version__}",
                f"mlflow=={mlflow.__version__}",
            ],
        )

"""The trained network as MLflow pyfunc models, so `mlflow models predict/serve` can use it.

`model`, the network: a float32 tensor of shape (n, 784), one row per image (row-major 28x28);
served as {"inputs": [[...784 values...], ...]}. By default the pixels are already normalised
exactly like the normalize stage's output; with the parameter `raw_pixels=True` they are raw
MNIST-style 0-255 values and the model applies the normalize stage's transform itself (from the
stats.json it was logged with). Output: a DataFrame with the predicted `digit` and the
probabilities `p0` ... `p9`.

`reader`, what `mnist-predict --json` does (page_reader.py): image files in a binary column `image`;
logged here by its code's path, so a training stage does not import the reading code.

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
import PIL
import scipy
from mlflow.models import ModelSignature, infer_signature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from ..data import splits
from ..model import reference, weights
from . import reading

MODEL_NAME = "model"  # runs:/<run id>/model
READER_NAME = "reader"  # runs:/<run id>/reader


def probabilities_frame(P: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"digit": P.argmax(axis=1), **{f"p{d}": P[:, d] for d in range(P.shape[1])}})


class DigitModel(PythonModel):
    def load_context(self, context) -> None:
        self.params = weights.load(context.artifacts["weights"])
        self.stats = json.loads(Path(context.artifacts["stats"]).read_text())
        self.judge_path = context.artifacts.get("judge")  # for mnist-predict --model <URI> (touching.py)

    # np.ndarray: MLflow validates nothing from this hint (the tensor signature does that) and, unlike
    # a missing hint, does not warn about it.
    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> pd.DataFrame:
        x = np.asarray(model_input, dtype=np.float32).reshape(-1, reference.N_INPUTS)
        if (params or {}).get("raw_pixels", False):
            x = splits.transform(x, self.stats)
        return probabilities_frame(reference.predict_proba(self.params, x.astype(self.params["W1"].dtype)))


def log_model(weights_path: Path, stats_path: Path, example: np.ndarray) -> None:
    """Log the pyfunc models into the active run: `model` (with an input example) and `reader`, each
    with its signature."""
    example = np.ascontiguousarray(example, dtype=np.float32).reshape(-1, reference.N_INPUTS)
    preprocessing = splits.load_stats(Path(stats_path).parent)["preprocessing"]
    output = probabilities_frame(reference.predict_proba(weights.load(weights_path), example))
    reject_below = reading.threshold_beside(weights_path)
    judge = Path(stats_path).with_name(splits.JUDGE_FILE)  # where the normalize stage made one (touching.py)
    common = {
        "artifacts": {
            "weights": str(weights_path),
            "stats": str(stats_path),
            **({"judge": str(judge)} if judge.is_file() else {}),
        },
        # How a client turns an image into the input (mnist-predict follows it): see preprocess.py,
        # and the confidence below which its answer is "not readable" (reading.py).
        "metadata": {"preprocessing": preprocessing, "reject_below": reject_below},
        # Ship the package with the model so it loads wherever MLflow runs it, and name the
        # requirements instead of letting MLflow infer them (slow, and it imports everything).
        "code_paths": [str(Path(__file__).parent)],
        "pip_requirements": [
            f"numpy=={np.__version__}",
            f"scipy=={scipy.__version__}",
            f"pandas=={pd.__version__}",
            f"pillow=={PIL.__version__}",
            f"mlflow=={mlflow.__version__}",
        ],
    }
    reader_signature = ModelSignature(
        inputs=Schema([ColSpec(DataType.binary, "image")]),
        params=ParamSchema([ParamSpec("reject_below", DataType.double, reject_below or 0.0)]),
    )
    with warnings.catch_warnings():
        # MLflow's advice on integer columns, type hints and input examples does not apply: the signatures
        # are explicit.
        warnings.filterwarnings(
            "ignore", message=".*(integer column|Add type hints|input example was not provided).*", category=UserWarning
        )
        mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(Path(__file__).with_name("served_model.py")),
            signature=infer_signature(example, output, params={"raw_pixels": False}),
            input_example=example,
            **common,
        )
        # No input example: MLflow would read it at every logging; docs/serving.md shows a request.
        mlflow.pyfunc.log_model(
            name=READER_NAME,
            python_model=str(Path(__file__).with_name("served_reader.py")),
            signature=reader_signature,
            **common,
        )

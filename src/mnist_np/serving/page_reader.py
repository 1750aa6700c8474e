"""The served `reader` model: what `mnist-predict --json` does, for image files sent to MLflow.

Input: image files (PNG, JPEG, any format Pillow reads) in a binary column `image` (base64 in JSON).
Each is found on its page, read as a digit or a number, or answered "not readable"; the output is one
result per image with mnist-predict's fields, "image" (its index) in place of "file". The parameter
`reject_below` is --reject-below (its default, in the signature: the threshold chosen when the
network was trained; 0: never). Logged by pyfunc.log_model from served_reader.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from mlflow.pyfunc import PythonModel

from ..model import weights
from . import predict, touching


class PageReader(PythonModel):
    def load_context(self, context) -> None:
        stats = json.loads(Path(context.artifacts["stats"]).read_text())
        self.predictor = predict.weights_predictor(weights.load(context.artifacts["weights"]), stats)
        self.preprocessing = stats.get("preprocessing", "digits")
        self.judge = touching.load_judge(context.artifacts.get("judge"))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[dict]:
        reject_below = (params or {}).get("reject_below") or None  # 0: never
        images = list(model_input["image"])
        return predict.read_images(images, self.predictor, self.preprocessing, reject_below, self.judge)

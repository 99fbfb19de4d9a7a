"""MLflow's entry point for the served model (models from code).

``mlflow.pyfunc.load_model("models:/hrm-trader@production")`` and ``mlflow models serve`` run this
file, which reads the version's ``weights.npz`` and ``spec.json`` through ``ServedModel``: no pickle
anywhere, and this installed package's code, not code stored with the model, does the deciding.
``hrm-trading predict`` and ``hrm-trading serve`` read the same two files without running this file.
Input: the named tensors ``strategic``, ``tactical``, ``cap`` and ``held`` (the signature); output:
[B, len(OUTPUT_COLUMNS)].
"""

from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from hrm_core.model.serving import INPUT_NAMES, ServedModel


class HRMTraderModel(PythonModel):
    def load_context(self, context):
        self.served = ServedModel.load(Path(context.artifacts["weights"]), Path(context.artifacts["spec"]))

    def predict(self, context, model_input, params=None):  # untyped: MLflow reads hints as a schema
        return self.served.decide(*(np.asarray(model_input[name]) for name in INPUT_NAMES))


mlflow.models.set_model(HRMTraderModel())

"""The MLflow pyfunc model of a searched AutoViT subnet, logged as MLflow "models from code".

Nothing is pickled: MLflow runs this file to get the model object, and `load_context` rebuilds the
network from the logged arch JSON and loads the logged state dict with ``weights_only=True``.

Artifacts: ``arch`` (``<name>.arch.json``), ``weights`` (``<name>.pth``), ``info`` (JSON with
``num_classes``, ``mean`` and ``std``). Input: float32 images ``[B, 3, H, W]`` at the arch's resolution,
already normalised with ``info``'s mean / std (as in training). Output: float32 logits ``[B, classes]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class AutoViTModel(PythonModel):
    def load_context(self, context: Any) -> None:
        import torch

        from autovit_ray.models import create_subnet, read_arch

        info = json.loads(Path(context.artifacts["info"]).read_text())
        arch = read_arch(Path(context.artifacts["arch"]))
        model = create_subnet(arch, int(info["num_classes"]))
        model.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True))
        self.model = model.eval()
        self.shape = (3, arch.resolution, arch.resolution)

    # No type hints here: MLflow reads predict's hints as an input schema, and the signature logged
    # with the model (inferred from a real batch) already says it: float32 [B, 3, H, W] -> logits.
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        import torch

        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"expected normalised images of shape [batch, {', '.join(map(str, self.shape))}], "
                             f"got {list(x.shape)}")
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()


mlflow.models.set_model(AutoViTModel())

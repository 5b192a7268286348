"""The MLflow pyfunc model of a searched AutoViT subnet, logged as MLflow "models from code".

Nothing is pickled: MLflow runs this file to get the model object, and `load_context` rebuilds the
network from the logged arch JSON in the logged search space and loads the logged state dict with
``weights_only=True``.

Artifacts: ``arch`` (``<name>.arch.json``), ``weights`` (``<name>.pth``), ``info`` (JSON with
``num_classes``, ``mean``, ``std`` and ``space_fingerprint``), ``space`` (``space.yaml``: the space the
model was searched in, checked against ``space_fingerprint``; its ``block_kind_modules`` must import
here; a model logged without it is rebuilt in the built-in space of its supernet's name). Input:
float32 images ``[B, 3, H, W]`` at the arch's resolution, already normalised with ``info``'s mean / std
(as in training). Output: float32 logits ``[B, classes]``.
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

        from autovit_ray.models import create_subnet, load_model_space, read_arch

        info = json.loads(Path(context.artifacts["info"]).read_text())
        arch = read_arch(Path(context.artifacts["arch"]))
        where = f"the MLflow model in {Path(context.artifacts['info']).parents[1]}"  # <model>/artifacts/info.json
        space = (load_model_space(context.artifacts["space"], info["space_fingerprint"], where)
                 if "space" in context.artifacts else None)  # logged before the space went with the model
        model = create_subnet(arch, int(info["num_classes"]), space)
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

"""The reward model as an MLflow model: the ``python_function`` flavour, torch weights as an artifact.

Why pyfunc and not the pytorch flavour: the pt2 export traces one forward signature, and the reward
model is used through several (expected outcomes of banners, catalogue scores); a ``PythonModel``
rebuilds the module from its weights and hyper-parameters (``weights.pt``, loaded with
``weights_only=True``, so loading runs no pickled tensors) and serves ``predict`` on a dict of arrays.

    import mlflow
    m = mlflow.pyfunc.load_model("models:/banner-reward-model/1")
    m.predict({"viewed": v, "history": h, "items": a})   # -> {"click": (B, K), "purchase": ..., ...}
    m.unwrap_python_model().model                          # the torch BannerRewardModel

Registered as ``banner-reward-model``. Loading needs ``recsys_rl`` importable (the model class).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from recsys_rl.records import HISTORY_LEN, PAD, ContextBatch
from recsys_rl.reward_model.model import BannerRewardModel

REGISTERED_NAME = "banner-reward-model"
OUTPUTS = ("click", "purchase", "multi", "units", "revenue")


def save_weights(model: BannerRewardModel, path) -> None:
    torch.save({"hparams": model.hparams(), "state_dict": model.state_dict()}, path)


def load_weights(path) -> BannerRewardModel:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = BannerRewardModel(**blob["hparams"])
    model.load_state_dict(blob["state_dict"])
    return model.eval().requires_grad_(False)


class RewardModelPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: (viewed (B,), history (B, H), items (B, K)) -> per-position expected outcomes."""

    def load_context(self, context) -> None:
        self.model = load_weights(context.artifacts["weights"])

    def predict(self, context, model_input, params=None) -> dict[str, np.ndarray]:
        ctx = ContextBatch(
            torch.as_tensor(np.asarray(model_input["viewed"]), dtype=torch.long),
            torch.as_tensor(np.asarray(model_input["history"]), dtype=torch.long),
        )
        with torch.no_grad():
            exp = self.model.expected(
                ctx, torch.as_tensor(np.asarray(model_input["items"]), dtype=torch.long)
            )
        return {k: getattr(exp, k).numpy() for k in OUTPUTS}


def _signature(k: int) -> ModelSignature:
    return ModelSignature(
        inputs=Schema(
            [
                TensorSpec(np.dtype(np.int64), (-1,), "viewed"),
                TensorSpec(np.dtype(np.int64), (-1, HISTORY_LEN), "history"),
                TensorSpec(np.dtype(np.int64), (-1, k), "items"),
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, k), name) for name in OUTPUTS]),
    )


def input_example(model: BannerRewardModel) -> dict[str, np.ndarray]:
    """Two contexts, each with a banner of the first K products."""
    k, n = model.n_positions, model.n_products
    history = np.full((2, HISTORY_LEN), PAD, dtype=np.int64)
    history[:, 0] = min(2, n - 1)
    items = np.stack([np.arange(k), np.arange(k)[::-1]]).astype(np.int64)
    return {"viewed": np.array([0, min(1, n - 1)], dtype=np.int64), "history": history, "items": items}


def log_reward_model(model: BannerRewardModel, registered_name: str | None = REGISTERED_NAME):
    """Log (and register) the model in the active run; returns (model_uri, version or None)."""
    from recsys_rl.mlflow_model import pip_requirements

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "weights.pt"
        save_weights(model, path)
        info = mlflow.pyfunc.log_model(
            name="reward_model",
            python_model=RewardModelPyfunc(),
            artifacts={"weights": str(path)},
            signature=_signature(model.n_positions),
            input_example=input_example(model),
            pip_requirements=pip_requirements(),
            registered_model_name=registered_name,
        )
    return info.model_uri, info.registered_model_version


def load_reward_model(uri: str, option: str = "--reward-model") -> BannerRewardModel:
    """The torch model behind a logged or registered reward model (models:/banner-reward-model/1, runs:/...).

    A saved weights file (``save_weights``) is accepted too. Errors become one ValueError naming ``option``.
    """
    if not uri.startswith(("models:/", "runs:/", "mlflow-artifacts:/", "file:")):
        path = Path(uri)
        if not path.is_file():
            raise ValueError(
                f"{option}: {uri}: not a model URI (models:/NAME/VERSION, runs:/ID/...) nor a file"
            )
        try:
            return load_weights(path)
        except Exception as e:  # torch.load / state-dict errors: all mean "not a reward-model file"
            raise ValueError(
                f"{option}: {uri}: not a reward-model weights file ({type(e).__name__})"
            ) from None
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except Exception as e:  # MlflowException, missing artifacts
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{option}: cannot load {uri} ({first})") from None
    inner = loaded.unwrap_python_model()
    if not isinstance(inner, RewardModelPyfunc):
        raise ValueError(f"{option}: {uri} is not a banner reward model (it is a {type(inner).__name__})")
    return inner.model


def check_catalogue(
    model: BannerRewardModel, n_products: int, what: str, option: str = "--reward-model"
) -> None:
    """Refuse a reward model of another catalogue: it would score the wrong products."""
    if model.n_products != n_products:
        raise ValueError(
            f"{option}: the reward model scores {model.n_products} products, but {what} has {n_products}; "
            "it was fitted on another catalogue"
        )

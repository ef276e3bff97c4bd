"""The reward model as an MLflow model: the ``python_function`` flavour, torch weights as an artifact.

Why pyfunc and not the pytorch flavour: the pt2 export traces one forward signature, and the reward
model is used through several (expected outcomes of banners, catalogue scores); a ``PythonModel``
rebuilds the module from its weights and hyper-parameters (``weights.pt``, loaded with
``weights_only=True``, so loading runs no pickled tensors). Logged as a model from code (MLflow's
convention: ``reward_model/pyfunc_code.py`` names the model, nothing is cloudpickled) with a typed
``predict`` over a DataFrame, one row per (context, banner), like the policy's pyfunc:

    import mlflow
    m = mlflow.pyfunc.load_model("models:/banner-reward-model/1")
    m.predict(pd.DataFrame({"viewed": [3], "history": [[7, 1]], "items": [[0, 1, 2, 3, 4]]}))
    # -> columns click, purchase, multi, units, revenue: a list of K expected values per row
    m.unwrap_python_model().model                          # the torch BannerRewardModel

Input columns: ``viewed`` (long), ``history`` (list of long, most recent first, at most 10, no
padding), ``items`` (list of K long, display order). Registered as ``banner-reward-model``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, Schema

import recsys_rl
from recsys_rl.records import ContextBatch
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
    """pyfunc wrapper: a DataFrame of (context, banner) rows -> per-position expected outcomes."""

    def load_context(self, context) -> None:
        self.model = load_weights(context.artifacts["weights"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from recsys_rl.mlflow_model import _bad, contexts_from_frame

        m = self.model
        viewed, history, _, _ = contexts_from_frame(model_input[["viewed", "history"]], m.n_products, 0)
        items = [np.asarray(a, dtype=np.int64).reshape(-1) for a in model_input["items"]]
        wrong = [i for i, a in enumerate(items) if len(a) != m.n_positions]
        if wrong:
            raise _bad(f"items[{wrong[0]}]: expected {m.n_positions} products, got {len(items[wrong[0]])}")
        banners = np.stack(items) if items else np.zeros((0, m.n_positions), dtype=np.int64)
        outside = (banners < 0) | (banners >= m.n_products)
        if outside.any():
            raise _bad(
                f"items: product id {int(banners[outside][0])} is outside the catalogue [0, {m.n_products})"
            )
        with torch.no_grad():
            exp = m.expected(ContextBatch(viewed, history), torch.as_tensor(banners))
        return pd.DataFrame({k: list(getattr(exp, k).numpy()) for k in OUTPUTS})


def _signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema(
            [ColSpec("long", "viewed"), ColSpec(Array("long"), "history"), ColSpec(Array("long"), "items")]
        ),
        outputs=Schema([ColSpec(Array("float"), name) for name in OUTPUTS]),
    )


def input_example(model: BannerRewardModel) -> pd.DataFrame:
    """Two contexts, each with a banner of the first K products (forwards, then backwards)."""
    k, n = model.n_positions, model.n_products
    return pd.DataFrame(
        {
            "viewed": [0, min(1, n - 1)],
            "history": [[min(2, n - 1)], [min(2, n - 1)]],
            "items": [list(range(k)), list(range(k))[::-1]],
        }
    )


def log_reward_model(model: BannerRewardModel, registered_name: str | None = REGISTERED_NAME):
    """Log (and register) the model in the active run; returns (model_uri, version or None)."""
    from recsys_rl.mlflow_model import pip_requirements

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "weights.pt"
        save_weights(model, path)
        info = mlflow.pyfunc.log_model(
            name="reward_model",
            python_model=str(Path(__file__).with_name("pyfunc_code.py")),
            artifacts={"weights": str(path)},
            code_paths=[str(Path(recsys_rl.__file__).parent)],
            signature=_signature(),
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

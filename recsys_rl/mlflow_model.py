"""The policy as a standard MLflow model: a python_function over a DataFrame of contexts.

What MLflow's own tools need (``mlflow models serve``, ``mlflow.pyfunc.load_model``, ``mlflow models
generate-dockerfile``, ``mlflow.models.evaluate``): a pyfunc with a signature, an input example and
pinned requirements. What the banner service needs: the torch weights, read directly without pandas.
Both live in one model directory:

    MLmodel                      python_function flavour (this module's ``BannerPolicyModel``, named
                                 by ``policy_pyfunc.py``: a model from code, nothing cloudpickled)
    artifacts/policy.pt          ``recsys_rl.policy.save_policy`` file (hparams + state_dict)
    code/recsys_rl/              this package, so the model loads where recsys-rl is not installed
    input_example.json, requirements.txt, python_env.yaml, ...

Input: one row per context, columns ``viewed`` (long), ``history`` (list of long, most recent first,
at most 10, no padding) and optional ``user_features`` (list of double, for models trained with them)
and ``user_categories`` (list of string: raw categorical values, encoded by the vocabulary saved with
the model). A model with user features also takes contexts without ``viewed``/``history`` (feature-only
contexts, e.g. a home page); -1 in ``viewed`` means no viewed product.
Output: one row per context, ``items`` (list of k long, display order), ``propensity`` and
``log_propensity`` (of that exact ordered banner under the policy that chose it). Params:
``k`` (1 to the model's banner size K, recorded as the model's ``banner_size`` metadata; 0, the
default, means K), ``mode`` = ``deterministic`` (the top k, propensity 1; the default, so predictions are reproducible)
or ``explore`` (a Plackett–Luce draw at ``temperature``, as the service explores), ``seed`` (>= 0
for a reproducible draw, -1 for fresh randomness).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

import recsys_rl
from recsys_rl import slate
from recsys_rl.policy import BannerPolicy, load_policy, save_policy
from recsys_rl.records import HISTORY_LEN, PAD

WEIGHTS_KEY = "policy"  # the artifact's key in the pyfunc flavour (its file is artifacts/policy.pt)
MODES = ("deterministic", "explore")


def pip_requirements() -> list[str]:
    """Exact pins of what loading the model imports (torch stays at the project's local CPU build)."""
    import cloudpickle
    import pyarrow

    return [
        "torch==2.13.0",
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"pyarrow=={pyarrow.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


def _bad(message: str) -> MlflowException:
    """A 400 from ``mlflow models serve`` (a plain exception would be a 500)."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def contexts_from_frame(
    df: pd.DataFrame, n_products: int, n_user_features: int, categorical_vocab: list | None = None
):
    """DataFrame of contexts -> (viewed (B,), history (B, H) PAD-padded, user_features (B, F) | None,
    user_categories (B, C) codes | None).

    Vectorised: the ragged histories are flattened once and scattered into the padded matrix.
    """
    feature_only = bool(n_user_features or categorical_vocab)
    for col in ("viewed", "history"):
        if col not in df.columns and not feature_only:
            raise _bad(f"{col}: missing column (expected viewed, history[, user_features])")
    viewed_col = df["viewed"] if "viewed" in df.columns else np.full(len(df), PAD)
    viewed = torch.as_tensor(np.array(viewed_col, dtype=np.int64))
    history_col = df["history"] if "history" in df.columns else [[]] * len(df)
    lists = [np.asarray(h, dtype=np.int64).reshape(-1) for h in history_col]
    lengths = np.array([len(h) for h in lists], dtype=np.int64)
    if len(lengths) and lengths.max() > HISTORY_LEN:
        row = int(lengths.argmax())
        raise _bad(f"history[{row}]: at most {HISTORY_LEN} purchases, got {int(lengths[row])}")
    history = np.full((len(df), HISTORY_LEN), PAD, dtype=np.int64)
    if lengths.sum():
        rows = np.repeat(np.arange(len(df)), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        history[rows, cols] = np.concatenate(lists)
    for name, ids in (
        ("viewed", viewed.numpy()[viewed.numpy() != PAD]),
        ("history", history[history != PAD]),
    ):
        bad = (ids < 0) | (ids >= n_products)
        if bad.any():
            raise _bad(f"{name}: product id {int(ids[bad][0])} is outside the catalogue [0, {n_products})")
    features = None
    if n_user_features:
        if "user_features" not in df.columns:
            raise _bad(f"user_features: this model needs {n_user_features} user features per context")
        rows_f = [np.asarray(f, dtype=np.float32).reshape(-1) for f in df["user_features"]]
        wrong = [i for i, f in enumerate(rows_f) if len(f) != n_user_features]
        if wrong:
            raise _bad(
                f"user_features[{wrong[0]}]: expected {n_user_features} values, got {len(rows_f[wrong[0]])}"
            )
        features = torch.as_tensor(np.stack(rows_f))
    codes = None
    if categorical_vocab:
        from recsys_rl.features import encode

        if "user_categories" not in df.columns:
            raise _bad(f"user_categories: this model needs {len(categorical_vocab)} categorical features")
        raw = [list(map(str, c)) for c in df["user_categories"]]
        wrong = [i for i, c in enumerate(raw) if len(c) != len(categorical_vocab)]
        if wrong:
            raise _bad(
                f"user_categories[{wrong[0]}]: expected {len(categorical_vocab)} values, got {len(raw[wrong[0]])}"
            )
        codes = torch.as_tensor(encode(np.array(raw, dtype=str).reshape(len(df), -1), categorical_vocab))
    return viewed, torch.as_tensor(history), features, codes


def choose_banners(
    policy: BannerPolicy,
    viewed,
    history,
    user_features,
    mode: str,
    temperature: float,
    seed: int,
    k: int | None = None,
    user_categories=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(items (B, k), log_propensity (B,) float64): the top k (log 1 = 0) or a PL draw with its exact
    log-prob; k defaults to the policy's ``banner_size``. Over the candidates when the policy uses them."""
    from recsys_rl.records import ContextBatch

    k = policy.banner_size if k is None else k
    ctx = ContextBatch(viewed, history, user_features, user_categories)
    with torch.inference_mode():
        if mode == "deterministic":
            return policy.greedy(ctx, k), torch.zeros(len(viewed), dtype=torch.float64)
        generator = torch.Generator().manual_seed(seed) if seed >= 0 else None
        if policy.uses_candidates:
            banners = policy.sample(ctx, k, temperature, generator)
            return banners.items, banners.log_prob.double()
        logits = policy.logits(ctx)
        items = slate.gumbel_topk(logits, k, generator, temperature)
        return items, slate.log_prob(logits.double(), items, temperature)


class BannerPolicyModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper of a ``BannerPolicy`` saved as the ``policy`` artifact (see the module docstring)."""

    def load_context(self, context) -> None:
        self.policy = load_policy(context.artifacts[WEIGHTS_KEY]).eval().requires_grad_(False)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        mode = params.get("mode", "deterministic")
        if mode not in MODES:
            raise _bad(f"params.mode: expected one of {', '.join(MODES)}, got {mode!r}")
        temperature = float(params.get("temperature", 1.0))
        if not temperature > 0:
            raise _bad(f"params.temperature: must be > 0, got {temperature}")
        p = self.policy
        k = int(params.get("k", 0)) or p.banner_size
        if not 1 <= k <= p.banner_size:
            raise _bad(f"params.k: must be in [1, {p.banner_size}] (this model's banner size), got {k}")
        viewed, history, features, codes = contexts_from_frame(
            model_input, p.n_products, p.n_user_features, p.categorical_vocab
        )
        items, logp = choose_banners(
            p, viewed, history, features, mode, temperature, int(params.get("seed", -1)), k, codes
        )
        logp = logp.numpy()
        return pd.DataFrame(
            {"items": list(items.numpy()), "propensity": np.exp(logp), "log_propensity": logp}
        )


def signature(n_user_features: int = 0, n_categories: int = 0) -> ModelSignature:
    """Input columns of the pyfunc; with user features, viewed and history become optional."""
    product_ids = not (n_user_features or n_categories)
    inputs = [
        ColSpec("long", "viewed", required=product_ids),
        ColSpec(Array("long"), "history", required=product_ids),
    ]
    inputs.append(ColSpec(Array("double"), "user_features", required=bool(n_user_features)))
    if n_categories:
        inputs.append(ColSpec(Array("string"), "user_categories"))
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema(
            [
                ColSpec(Array("long"), "items"),
                ColSpec("double", "propensity"),
                ColSpec("double", "log_propensity"),
            ]
        ),
        params=ParamSchema(
            [
                ParamSpec("mode", "string", "deterministic"),
                ParamSpec("temperature", "double", 1.0),
                ParamSpec("seed", "long", -1),
                ParamSpec("k", "long", 0),
            ]
        ),
    )


def input_example(policy: BannerPolicy) -> pd.DataFrame:
    """Two contexts: a product page with a short history, and one with none."""
    n = policy.n_products
    df = pd.DataFrame({"viewed": [0, min(1, n - 1)], "history": [[min(2, n - 1), min(3, n - 1)], []]})
    if policy.n_user_features:
        df["user_features"] = [[0.0] * policy.n_user_features] * 2
    if policy.categorical_vocab:
        df["user_categories"] = [[v[0] if v else "" for v in policy.categorical_vocab]] * 2
    return df


def log_model(policy: BannerPolicy, registered_name: str | None, workdir: str | Path):
    """Log ``policy`` as a pyfunc model named ``policy`` in the active run (registering it when a name is
    given); ``workdir`` holds the weights file until MLflow has copied it. Returns MLflow's ModelInfo."""
    weights = Path(workdir) / "policy.pt"
    save_policy(policy, weights)
    return mlflow.pyfunc.log_model(
        name="policy",
        python_model=str(Path(__file__).with_name("policy_pyfunc.py")),  # a model from code
        artifacts={WEIGHTS_KEY: str(weights)},
        code_paths=[str(Path(recsys_rl.__file__).parent)],
        signature=signature(policy.n_user_features, len(policy.categorical_vocab)),
        input_example=input_example(policy),
        pip_requirements=pip_requirements(),
        registered_model_name=registered_name,
        metadata={
            "banner_size": policy.banner_size,
            "n_user_features": policy.n_user_features,
            "categorical_features": len(policy.categorical_vocab),
        },
    )


def download_weights(artifact_uri: str, dst: str | Path, tracking_uri: str | None = None) -> Path | None:
    """Fetch only ``MLmodel`` and the weights file of a logged model (not its code or environment files):
    the fast path of the banner service. None when the model has no weights artifact (old pt2 format)."""
    base = artifact_uri.rstrip("/")
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{base}/MLmodel", dst_path=str(dst), tracking_uri=tracking_uri
        )
    )
    conf = Model.load(str(local)).flavors.get("python_function", {})
    rel = conf.get("artifacts", {}).get(WEIGHTS_KEY, {}).get("path")
    if rel is None:
        return None
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{base}/{rel}", dst_path=str(Path(dst) / "weights"), tracking_uri=tracking_uri
        )
    )


def load_banner_policy(model_uri: str, tracking_uri: str | None = None) -> BannerPolicy:
    """The ``BannerPolicy`` of a logged model (e.g. ``models:/banner-policy/3``), read from its weights."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="recsys-model-") as tmp:
        if model_uri.startswith("models:/"):
            from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

            model_uri = ModelsArtifactRepository.get_underlying_uri(model_uri)
        path = download_weights(model_uri, tmp, tracking_uri)
        if path is None:
            raise ValueError(
                f"model: {model_uri} has no {WEIGHTS_KEY!r} weights artifact (not a recsys-rl pyfunc)"
            )
        return load_policy(path)

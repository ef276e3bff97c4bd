"""Validated configuration: one pydantic model per concern, loaded from YAML.

Every field has a default and a one-line description, so the embedded defaults run with no file at
all. Unknown keys, wrong types and out-of-range values raise ``ConfigError`` whose message is one line
naming the file, the field and the problem.
"""

from __future__ import annotations

import itertools
import logging
import os
from decimal import Decimal
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from recsys_rl.records import BANNER_SIZE, HISTORY_LEN, MAX_BANNER_SIZE, POSITION_BIAS_CURVE

log = logging.getLogger("recsys_rl.config")

OLD_KL_BUDGET_PER_SLOT = 2.0
"""A ``train.kl_target`` above this many nats per displayed product is most likely a budget written per
banner before budgets were stated per slot (``kl_target: 3`` once meant 3 nats per banner, now 15 at K=5)."""


class ConfigError(ValueError):
    """A configuration problem, worded for a person: '<file>: <field>: <problem>'."""


def per_banner(per_slot: float, banner_size: int) -> float:
    """A per-displayed-product KL budget as the banner's: ``per_slot`` x K, in decimal as written.

    KL budgets are stated per slot so that K=1 and K=5 are constrained alike; the learner measures KL
    per banner (the sum over its K positions). The product is taken on the shortest decimal of
    ``per_slot`` (0.6 x 5 is exactly 3.0 here, 3.0000000000000004 in binary floating point), so a
    budget written per slot gives the very banner budget it stands for.
    """
    return float(Decimal(repr(float(per_slot))) * banner_size)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SimConfig(_Strict):
    """The e-commerce user simulator: catalogue, users and how they respond to banners."""

    n_products: int = Field(1000, ge=10, le=2_000_000, description="catalogue size")
    n_categories: int = Field(20, ge=1, description="product categories")
    latent_dim: int = Field(16, ge=2, le=256, description="dimension of product/user latent vectors")
    n_users: int = Field(20_000, ge=10, description="size of the simulated user population")
    category_spread: float = Field(0.5, ge=0, description="spread of products around their category centre")
    taste_spread: float = Field(
        0.5, ge=0, description="spread of a user's taste around their favourite category"
    )
    clickbait_share: float = Field(0.1, ge=0, le=1, description="share of products that are clickbait")
    clickbait_appeal_boost: float = Field(2.0, ge=0, description="appeal added to clickbait products")
    clickbait_quality_penalty: float = Field(3.0, ge=0, description="quality removed from clickbait products")
    appeal_std: float = Field(0.5, ge=0, description="spread of click appeal across products")
    quality_std: float = Field(0.5, ge=0, description="spread of purchase quality across products")
    price_log_mean: float = Field(3.0, description="mean log-price across categories")
    price_log_std_between: float = Field(0.7, ge=0, description="spread of categories' mean log-price")
    price_log_std_within: float = Field(0.4, ge=0, description="spread of log-price within a category")
    price_sensitivity_mean: float = Field(0.5, ge=0, description="mean user price sensitivity")
    basket_mean: float = Field(0.3, ge=0, description="mean user basket propensity (extra units rate)")
    affinity_click: float = Field(2.5, ge=0, description="weight of taste affinity on click logit")
    affinity_purchase: float = Field(1.5, ge=0, description="weight of taste affinity on purchase logit")
    click_bias: float = Field(-2.0, description="click logit intercept")
    purchase_bias: float = Field(-1.0, description="purchase-given-click logit intercept")
    consideration_size: int = Field(50, ge=HISTORY_LEN + 1, description="products a user buys/views from")
    context_temperature: float = Field(0.3, gt=0, description="softmax temperature of context draws")
    min_history: int = Field(3, ge=0, le=HISTORY_LEN, description="fewest past purchases in a context")
    user_feature_dim: int = Field(
        0, ge=0, le=256, description="numeric user features per context (noisy projection of taste; 0: none)"
    )
    user_feature_noise: float = Field(0.5, ge=0, description="noise std of the emitted user features")
    home_page_share: float = Field(
        0.0, ge=0, le=1, description="share of contexts with no viewed product (home-page banners)"
    )
    repeat_interest: float = Field(
        0.0,
        ge=0,
        description="repeat-interest world: logit boost (click, purchase and context draws) of each user's "
        "repeat_interest_items favourite products, so what they viewed is the best to show again; 0: off",
    )
    repeat_interest_items: int = Field(
        10, ge=1, description="products per user that repeat interest applies to (their top considered)"
    )
    click_model: Literal["pbm", "cascade"] = Field("pbm", description="position-based or cascade examination")
    banner_size: int = Field(
        BANNER_SIZE, ge=1, le=MAX_BANNER_SIZE, description="products per banner (K), 1 to 10"
    )
    position_bias: list[float] = Field(
        default_factory=lambda: list(POSITION_BIAS_CURVE[:BANNER_SIZE]),
        description="examination probability of each banner position (pbm), non-increasing; "
        "K values (the default curve cut to K when K is not 5)",
    )
    seed: int = Field(0, description="seed of the catalogue and user population")

    @field_validator("position_bias")
    @classmethod
    def _check_bias(cls, v: list[float], info: ValidationInfo) -> list[float]:
        k = info.data.get("banner_size", BANNER_SIZE)
        if len(v) != k and v == list(POSITION_BIAS_CURVE[: len(v)]):
            return list(POSITION_BIAS_CURVE[:k])  # the default curve (a preset writes it out), cut to K
        if len(v) != k:
            raise ValueError(f"needs {k} values, one per banner position (banner_size {k}), got {len(v)}")
        if any(not (0 < x <= 1) for x in v):
            raise ValueError("each value must be in (0, 1]")
        if any(a < b for a, b in itertools.pairwise(v)):
            raise ValueError("must be non-increasing from the first position")
        return v

    @model_validator(mode="after")
    def _check_sizes(self) -> SimConfig:
        k = self.banner_size
        if len(self.position_bias) != k:  # only the unvalidated default can get here: cut it to K
            self.__dict__["position_bias"] = list(POSITION_BIAS_CURVE[:k])
        if self.n_products < k:
            raise ValueError(f"n_products ({self.n_products}) is smaller than banner_size ({k})")
        if self.consideration_size > self.n_products:
            raise ValueError(
                f"consideration_size ({self.consideration_size}) exceeds n_products ({self.n_products})"
            )
        if self.repeat_interest_items > self.consideration_size:
            raise ValueError(
                f"repeat_interest_items ({self.repeat_interest_items}) exceeds consideration_size "
                f"({self.consideration_size})"
            )
        if self.n_categories > self.n_products:
            raise ValueError(f"n_categories ({self.n_categories}) exceeds n_products ({self.n_products})")
        return self


class RewardScheme(_Strict):
    """Outcome -> scalar reward, summed over banner positions. Schemes are data, not code.

    reward = sum_k click*c_k + purchase*1[u_k>=1] + multi_purchase*1[u_k>=2] + units*u_k + revenue*r_k
    """

    name: str = Field(..., min_length=1, description="scheme name, shown in MLflow")
    click: float = Field(0.0, description="reward per click")
    purchase: float = Field(0.0, description="reward per purchased product")
    multi_purchase: float = Field(0.0, description="bonus per product bought in more than one unit")
    units: float = Field(0.0, description="reward per unit bought")
    revenue: float = Field(0.0, description="reward per currency unit of revenue")

    @model_validator(mode="after")
    def _not_all_zero(self) -> RewardScheme:
        if not any([self.click, self.purchase, self.multi_purchase, self.units, self.revenue]):
            raise ValueError("all weights are zero: the scheme rewards nothing")
        return self


class SourcesConfig(_Strict):
    """Extra candidate sources beside the policy's top-M (large catalogues; see docs/concepts/candidates.md).

    Each is built from the logs the reference learns from and saved with the policy; each width is
    the candidates per context it adds at most (0: off), on top of ``policy.candidates``."""

    cooccurrence: int = Field(
        64, ge=0, le=4096, description="co-occurrence neighbours of the context's products per context"
    )
    neighbours: int = Field(16, ge=0, le=1024, description="co-occurrence neighbours kept per product")
    category: int = Field(
        32,
        ge=0,
        le=4096,
        description="best products of the context's categories per context (needs an item table)",
    )
    category_products: int = Field(32, ge=0, le=4096, description="best products kept per category")
    popular: int = Field(16, ge=0, le=4096, description="most engaged products, the same for every context")


class PolicyConfig(_Strict):
    """The banner policy network (also the baseline's architecture)."""

    embed_dim: int = Field(32, ge=2, le=1024, description="product embedding / query dimension")
    hidden_dim: int = Field(128, ge=2, le=8192, description="context encoder hidden width")
    temperature: float = Field(1.0, gt=0, description="sampling temperature for exploration")
    candidates: int = Field(
        512, ge=0, le=65536, description="top-M candidates per context (0: full catalogue)"
    )
    full_catalogue_max: int = Field(
        20000, ge=0, description="catalogues up to this size use the full-catalogue path (the reference)"
    )
    retrieval: Literal["auto", "exact", "ivf"] = Field(
        "auto", description="candidate search: exact blocked top-M, faiss IVF, or auto (IVF above 200k)"
    )
    nprobe: int = Field(
        64,
        ge=1,
        le=65536,
        description="IVF lists scanned per query (of <= 1024): recall against speed; saved with the policy, "
        "so serving retrieves as the learner did (1M products: 64 gave recall@512 0.97 at half the cost of 128)",
    )
    context_bonus: bool = Field(
        True,
        description="large catalogues: context products join the candidates with one learned logit offset",
    )
    context_features: bool = Field(
        False,
        description="every catalogue size: learned logit offsets for a candidate being in the context, "
        "the viewed product, its count and recency in the history (context products join the candidates)",
    )
    sources: SourcesConfig = Field(
        default_factory=SourcesConfig,
        description="large catalogues: extra candidate sources (co-occurrence, category, popular) in the union",
    )


class BaselineConfig(_Strict):
    """Supervised training of the reference recommender on logged data."""

    logged_impressions: int = Field(100_000, ge=100, description="impressions the behaviour policy logs")
    epochs: int = Field(3, ge=1, description="passes over the logged data")
    batch_size: int = Field(512, ge=1, description="examples per gradient step")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate")
    purchase_weight: float = Field(3.0, ge=0, description="loss weight of purchased vs clicked targets")
    history_weight: float = Field(1.0, ge=0, description="loss weight of next-purchase-in-history targets")
    sampled_negatives: int = Field(
        2048, ge=0, description="sampled-softmax negatives per batch when N > this (0: full softmax)"
    )
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="latest share of the logs that no training step sees (logs path)"
    )
    patience: int = Field(
        2,
        ge=0,
        description="logs path: epochs without a better held-out value before stopping, the best epoch "
        "kept (0: train all epochs)",
    )
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty on the dense parameters (Adam)")
    history_weights: list[float] = Field(
        default_factory=list,
        description="logs path: next-purchase weights to try, the best held-out reference kept "
        "(empty: history_weight only)",
    )
    learn_context_weights: bool = Field(
        False,
        description="with policy.context_features: the reference fits the context weights too (off: they "
        "stay 0 in the reference and the fine-tune learns them from rewards)",
    )
    context_weight: float = Field(
        0.0, ge=0, description="loss weight of the viewed product as a target of its own context (re-showing)"
    )
    context_weights: list[float] = Field(
        default_factory=list,
        description="logs path: re-showing weights to try with each next-purchase weight, the best "
        "held-out reference kept (empty: context_weight only)",
    )


class TrainConfig(_Strict):
    """KL-constrained policy-gradient fine-tuning."""

    algorithm: Literal["ppo", "reinforce"] = Field("ppo", description="clipped PG with critic, or REINFORCE")
    total_impressions: int = Field(1_000_000, ge=1, description="impression budget of the run")
    contexts_per_batch: int = Field(1024, ge=1, description="contexts sampled per update batch")
    banners_per_context: int = Field(4, ge=1, description="banners per context (leave-one-out baseline)")
    epochs: int = Field(2, ge=1, description="optimisation passes over each batch")
    minibatch_size: int = Field(1024, ge=1, description="banners per gradient step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    item_lr: float | None = Field(
        1e-2,
        gt=0,
        description="Adam learning rate of the sparse item tables (large catalogues only; null: lr)",
    )
    lr_anneal: bool = Field(True, description="decay the learning rate linearly to 0 over the run")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    clip_eps: float = Field(0.2, gt=0, lt=1, description="PPO ratio clip")
    kl_beta: float = Field(0.1, ge=0, description="initial KL penalty coefficient")
    kl_target: float = Field(
        0.6,
        gt=0,
        description="KL(pi || ref) budget in nats per displayed product: a banner of K may spend "
        "K * kl_target (3 nats at K=5), so K=1 and K=5 are constrained alike",
    )
    kl_adaptive: bool = Field(True, description="adapt beta to keep KL at or under kl_target")
    kl_margin: float = Field(
        0.1, ge=0, lt=1, description="adaptive beta aims at (1 - kl_margin) * K * kl_target per banner"
    )
    kl_horizon: int = Field(10, ge=1, description="adaptive beta horizon in updates")
    kl_hard_limit: float = Field(
        1.0,
        gt=0,
        description="KL per displayed product above which a model is never kept or registered "
        "(K * kl_hard_limit per banner: 5 nats at K=5)",
    )
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus weight")
    value_coef: float = Field(0.5, ge=0, description="critic loss weight")
    replay_batches: int = Field(
        0, ge=0, description="earlier batches trained on again with each update (ratio vs logged propensity)"
    )
    eval_every: int = Field(20, ge=1, description="updates between evaluations")
    eval_users: int = Field(4096, ge=1, description="contexts in each exact evaluation")
    weight_clip: float = Field(
        20.0, gt=0, description="train --logs: largest item-level importance weight pi / mu (clipped above)"
    )

    @field_validator("kl_target")
    @classmethod
    def _warn_old_budget(cls, v: float) -> float:
        if v > OLD_KL_BUDGET_PER_SLOT:
            log.warning(
                "train.kl_target: %g nats per displayed product (%g per banner of 5) looks like a budget "
                "written per banner; budgets are per displayed product now (default 0.6)",
                v,
                per_banner(v, BANNER_SIZE),
            )
        return v


class PreferenceConfig(_Strict):
    """Preference optimisation from logs (train --logs --objective dpo|ipo|kto|sdpo): no reward model."""

    objective: Literal["dpo", "ipo", "kto", "sdpo"] = Field(
        "sdpo",
        description="dpo / ipo: pairs of banners of one viewed product; kto: unpaired banners; "
        "sdpo: the chosen product against the shown-and-ignored ones of its banner",
    )
    beta: float = Field(
        0.1, gt=0, description="inverse temperature of the implicit reward (larger: closer to the reference)"
    )
    weighting: Literal["none", "importance"] = Field(
        "none", description="importance: weight examples by pi_ref / mu from the logged propensities"
    )
    weight_clip: float = Field(10.0, gt=0, description="largest importance weight (before self-normalising)")
    margin: float = Field(
        0.0, ge=0, description="dpo: margin per unit of grade difference between the banners"
    )
    examination: list[float] | None = Field(
        None,
        description="sdpo: probability a user examines each slot (position bias); null: 1 everywhere, "
        "or the reward model's fitted curve with `train --objective sdpo --reward-model URI`",
    )
    pair_rounds: int = Field(
        4, ge=1, description="dpo / ipo: shuffles within each viewed product that make pairs"
    )
    steps: int = Field(2000, ge=1, description="gradient steps")
    minibatch_size: int = Field(512, ge=1, description="preference examples per step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")


class WarmStartConfig(_Strict):
    """Warm start from the logs that trained the reference: a reward model fitted on them scores
    virtual banners on the logged contexts and the same KL-constrained learner moves the policy before
    any live impression is spent (``recsys_rl.finetune.warm_start``). Off by default: it costs a reward-model
    fit and a fine-tune (about a minute on the small catalogue)."""

    enabled: bool = Field(False, description="fine-tune against a reward model fitted on the logs first")
    virtual_impressions: int = Field(
        102_400, ge=1, description="banners sampled on logged contexts and scored by the reward model"
    )
    contexts_per_batch: int = Field(256, ge=1, description="logged contexts per warm-start update")
    lr: float = Field(3e-3, gt=0, description="Adam learning rate of the warm start")
    kl_beta: float = Field(
        1.0, ge=0, description="initial KL penalty of the warm start (adaptive to kl_target)"
    )
    kl_target: float = Field(
        0.4,
        gt=0,
        description="KL budget of the warm start, nats per displayed product (2 per banner at K=5; "
        "live training goes on to train.kl_target)",
    )
    check_every: int = Field(
        5,
        ge=1,
        description="updates between exact KL checks against train.kl_hard_limit (rolled back past it)",
    )


class DynaConfig(_Strict):
    """Dyna-style model-based updates during live fine-tuning (``recsys_rl.finetune.dyna``): the warm start's
    reward model is refitted on the live impressions seen so far and scores virtual banners the policy
    samples for those contexts; the same KL-constrained learner steps on them between real updates.
    Needs ``warm_start.enabled`` (its reward model). Off by default."""

    enabled: bool = Field(
        False, description="virtual updates against a reward model refitted on live impressions"
    )
    updates_per_real: int = Field(1, ge=0, description="virtual updates after each real update")
    contexts_per_update: int = Field(256, ge=1, description="live contexts per virtual update")
    refit_every: int = Field(1, ge=0, description="real updates between reward-model refits (0: never refit)")
    refit_steps: int = Field(50, ge=1, description="reward-model gradient steps per refit")
    refit_batch: int = Field(1024, ge=1, description="impressions per reward-model gradient step")
    live_share: float = Field(
        0.5, ge=0, le=1, description="share of each refit minibatch drawn from live impressions"
    )
    refit_lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the refit")
    within_budget: bool = Field(
        True,
        description="roll back virtual steps that leave KL past (1 - kl_margin) * K * kl_target "
        "(always: K * kl_hard_limit)",
    )
    stop_after: int = Field(
        0, ge=0, description="live impressions after which refits and virtual updates stop (0: never)"
    )


class TrackingConfig(_Strict):
    """Where runs and models go. The embedded default needs no server."""

    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI")
    experiment: str = Field("recsys-rl", min_length=1, description="MLflow experiment name")
    registered_model: str = Field("banner-policy", min_length=1, description="registry name of the policy")
    log_model: bool = Field(True, description="log and register the fine-tuned policy")


class OnlineConfig(_Strict):
    """Learning from the live event stream (``recsys-rl train-online``)."""

    consumer: str = Field(
        "online-trainer", min_length=1, description="consumer name; its offset is committed"
    )
    attribution_window_s: float = Field(
        30.0, ge=0, description="seconds feedback may arrive after an impression"
    )
    batch_size: int = Field(1024, ge=1, description="most impressions per update")
    min_batch: int = Field(256, ge=1, description="fewest ready impressions worth an update")
    register_every: int = Field(10, ge=1, description="updates between guard-railed registrations")
    value_tolerance: float = Field(0.02, ge=0, description="relative value drop that blocks a registration")
    min_value_gain: float = Field(
        0.0, ge=0, description="> 0: register only a version whose value beats the current by this share"
    )
    reward_model: str | None = Field(
        None, description="models:/banner-reward-model/N: also check its value of a candidate (off if unset)"
    )
    reward_model_tolerance: float = Field(
        0.02, ge=0, description="relative drop of the reward model's value that blocks a registration"
    )
    poll_s: float = Field(1.0, gt=0, description="sleep when too few impressions are ready")
    max_exposure_gini_rise: float | None = Field(
        None,
        ge=0,
        description="refuse a version whose exposure Gini on recent contexts exceeds the current version's "
        "by more than this (unset: unchecked)",
    )
    max_tail_share_drop: float | None = Field(
        None,
        ge=0,
        description="refuse a version whose long-tail share of exposure falls below the current version's "
        "by more than this (unset: unchecked)",
    )
    checkpoint_dir: str = Field("online-checkpoint", min_length=1, description="trainer state + offset")
    alias: str = Field("champion", min_length=1, description="registry alias that serving follows")
    retry_s: float = Field(
        1.0, gt=0, description="first wait before retrying an unavailable event store or MLflow (doubles)"
    )
    retry_max_s: float = Field(30.0, gt=0, description="longest wait between those retries")


class LoopConfig(_Strict):
    """The closed feedback loop (``recsys-rl loop``): serve, log, retrain the reference, fine-tune, again.

    Each mitigation is a setting, off by default, so the plain loop is what production does unguarded."""

    rounds: int = Field(10, ge=1, description="rounds after round 0 (each: serve, log, retrain, fine-tune)")
    impressions_per_round: int = Field(
        20_000, ge=100, description="banners the current policy serves (and logs) per round"
    )
    finetune_impressions: int = Field(
        40_000, ge=1, description="fine-tuning budget per round against the round's reference"
    )
    retrain_epochs: int = Field(
        1, ge=1, description="passes of the reference's retraining over each round's new logs"
    )
    debias: bool = Field(
        False,
        description="retrain the reference with clipped, self-normalised inverse-exposure propensity "
        "weights on logged clicks",
    )
    weight_clip: float = Field(
        10.0, gt=1, description="with debias: propensity weights clipped to [1/clip, clip] before normalising"
    )
    anchor: Literal["latest", "round0"] = Field(
        "latest", description="the KL holds the policy to the latest retrained reference, or to round 0's"
    )
    exposure_cap: float = Field(
        0.0,
        ge=0,
        description="exposure term: products exposed more than cap x the mean exposure (last round's "
        "served exposure) cost exposure_weight per unit of excess in the reward (0: off)",
    )
    exposure_weight: float = Field(0.5, ge=0, description="with exposure_cap: reward per unit of excess")
    exploration_floor: float = Field(
        0.0, ge=0, lt=1, description="share of served banners drawn uniformly from the catalogue"
    )
    eval_users: int = Field(2048, ge=16, description="contexts in each round's exact evaluation and audit")

    @model_validator(mode="after")
    def _cap_above_mean(self) -> LoopConfig:
        if 0 < self.exposure_cap <= 1:
            raise ValueError(
                f"exposure_cap: must exceed 1 (the mean exposure) or be 0, got {self.exposure_cap}"
            )
        return self


class RayConfig(_Strict):
    """Ray settings for the ``--ray`` paths (optional extra ``[ray]``): the ones that bite on small machines."""

    object_store_mb: int = Field(
        256, ge=80, description="object store of a Ray started here, MiB (Ray's default takes 30% of RAM)"
    )
    include_dashboard: bool = Field(
        False, description="start Ray's dashboard with a Ray started here (its processes cost ~0.5 GB)"
    )
    usage_stats: bool = Field(False, description="let Ray send usage statistics (RAY_USAGE_STATS_ENABLED)")
    token_auth: bool = Field(
        True,
        description="a Ray started here requires its token (Ray's default since 2.59, kept in "
        "~/.ray/auth_token); false sets RAY_AUTH_MODE=disabled. Joining a cluster that has token "
        "authentication needs its token (RAY_AUTH_TOKEN or that file)",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of a Ray started here (None: Ray counts the machine's)"
    )
    cpus_per_trial: float = Field(1.0, gt=0, description="CPUs each sweep trial or simulation shard holds")
    max_failures: int = Field(
        2, ge=0, description="retries of a trial whose worker died; it resumes from its last checkpoint"
    )
    storage_path: str = Field(
        "recsys-rl-ray",
        min_length=1,
        description="where Tune keeps trial checkpoints and sweep state: a directory every node can "
        "reach (shared file system or s3://...) on a multi-node cluster",
    )
    evaluations: int = Field(
        4,
        ge=1,
        description="evaluations per trial reported to Tune (ASHA decides at these), each a checkpoint",
    )


class SearchConfig(_Strict):
    """A Tune search over run settings (``recsys-rl sweep --ray --search FILE``), beside the grid.

    ``space`` maps a dotted run-config key to one distribution, e.g. ``train.lr: {loguniform: [1e-4,
    1e-2]}``, ``train.kl_target: {choice: [0.1, 0.2]}``, ``train.contexts_per_batch: {randint: [128,
    1024]}`` (upper bound excluded), ``train.clip_eps: {uniform: [0.1, 0.3]}``.
    """

    scheduler: Literal["fifo", "asha"] = Field(
        "asha", description="asha stops trials that trail at an evaluation; fifo runs every trial to the end"
    )
    num_samples: int = Field(1, ge=1, description="random draws from the space per grid point")
    metric: str = Field("oracle_gap_closed", min_length=1, description="evaluation metric Tune compares")
    mode: Literal["max", "min"] = Field("max", description="whether larger or smaller metric is better")
    grace_period: int = Field(
        1, ge=1, description="ASHA: evaluations every trial gets before it can be stopped"
    )
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: 1/this of the trials go on at each rung")
    space: dict[str, dict[Literal["uniform", "loguniform", "randint", "choice"], list]] = Field(
        default_factory=dict, description="dotted run-config key -> {distribution: arguments}"
    )

    @field_validator("space")
    @classmethod
    def _one_distribution_each(cls, space: dict) -> dict:
        for key, dist in space.items():
            if len(dist) != 1:
                raise ValueError(f"{key}: give exactly one of uniform, loguniform, randint, choice")
            (kind, args), *_ = dist.items()
            if kind == "choice" and not args:
                raise ValueError(f"{key}: choice needs at least one value")
            if kind != "choice" and (len(args) != 2 or not args[0] < args[1]):
                raise ValueError(f"{key}: {kind} needs [low, high] with low < high, got {args}")
            if kind == "loguniform" and args[0] <= 0:
                raise ValueError(f"{key}: loguniform needs a positive low bound, got {args[0]}")
        return space


class RunConfig(_Strict):
    """A whole training job: simulator, reward, networks, training and tracking."""

    seed: int = Field(0, description="seed of everything stochastic in the run")
    torch_threads: int = Field(
        1, ge=1, le=256, description="torch intra-op threads (1 is fastest for these sizes)"
    )
    reward: str | RewardScheme = Field("graded", description="scheme name under configs/rewards, or inline")
    sim: SimConfig = Field(default_factory=SimConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)
    dyna: DynaConfig = Field(default_factory=DynaConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    online: OnlineConfig = Field(default_factory=OnlineConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)

    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _dyna_needs_warm_start(self) -> RunConfig:
        if self.dyna.enabled and not self.warm_start.enabled:
            raise ValueError("dyna.enabled: needs warm_start.enabled (the warm start fits its reward model)")
        return self


M = TypeVar("M", bound=BaseModel)


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        msg = f"{msg} (got {first['input']!r})"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return " ".join(f"{source}: {loc}: {msg}{more}".splitlines())  # always one line, whatever the key holds


def validate(model: type[M], data: object, source: str = "<config>") -> M:
    """Validate a mapping into ``model``; raise a one-line ConfigError on failure."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping of keys, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(source, e)) from None


def load_yaml(path: str | os.PathLike) -> object:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: file not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(parse)"
        raise ConfigError(f"{p}: {where}: invalid YAML ({getattr(e, 'problem', e)})") from None


def load(model: type[M], path: str | os.PathLike) -> M:
    """Load and validate a YAML file into ``model``."""
    return validate(model, load_yaml(path), str(path))


def configs_dir() -> Path:
    """The directory holding presets: $RECSYS_RL_CONFIGS, ./configs, or the repository's configs/."""
    env = os.environ.get("RECSYS_RL_CONFIGS")
    if env:
        return Path(env)
    here = Path.cwd() / "configs"
    if (here / "rewards").is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "configs"


def load_reward(name_or_path: str | RewardScheme) -> RewardScheme:
    """A reward scheme by name (configs/rewards/<name>.yaml), by YAML path, or passed through."""
    if isinstance(name_or_path, RewardScheme):
        return name_or_path
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = configs_dir() / "rewards" / f"{name_or_path}.yaml"
        if not p.is_file():
            known = sorted(x.stem for x in (configs_dir() / "rewards").glob("*.yaml"))
            raise ConfigError(f"reward: unknown scheme {name_or_path!r} (known: {', '.join(known)})")
    return load(RewardScheme, p)


def _resolve_sim(data: dict) -> dict:
    """``sim: small`` (a preset under configs/sim/) or ``sim: path.yaml`` -> the preset's mapping."""
    sim = data.get("sim")
    if not isinstance(sim, str):
        return data
    sp = Path(sim) if sim.endswith((".yaml", ".yml")) else configs_dir() / "sim" / f"{sim}.yaml"
    return {**data, "sim": validate(SimConfig, load_yaml(sp), str(sp)).model_dump()}


def load_run(path: str | os.PathLike | None = None, overrides: dict | None = None) -> RunConfig:
    """A RunConfig from YAML (or the embedded defaults), with dotted-key overrides applied on top."""
    data = load_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): expected a mapping of keys, got {type(data).__name__}")
    return _run_with_overrides(_resolve_sim(data), overrides, source)


def with_overrides(cfg: RunConfig, overrides: dict) -> RunConfig:
    """``cfg`` with dotted-key overrides applied, validated again (a sweep trial's own config)."""
    return _run_with_overrides(cfg.model_dump(), overrides, "<overrides>")


def _run_with_overrides(data: dict, overrides: dict | None, source: str) -> RunConfig:
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {key}: cannot override inside a non-mapping")
        node[parts[-1]] = value
    cfg = validate(RunConfig, _resolve_sim(data), source)
    if isinstance(cfg.reward, str):
        load_reward(cfg.reward)  # fail early on an unknown scheme name
    return cfg


def flatten(cfg: BaseModel, prefix: str = "") -> dict[str, object]:
    """Dotted-key view of a config, e.g. {'train.lr': 0.001}, for MLflow params."""
    out: dict[str, object] = {}
    for k, v in cfg.model_dump().items():
        _flatten_into(out, f"{prefix}{k}", v)
    return out


def _flatten_into(out: dict, key: str, v: object) -> None:
    if isinstance(v, dict):
        for k2, v2 in v.items():
            _flatten_into(out, f"{key}.{k2}", v2)
    else:
        out[key] = v


def builtin_rewards() -> dict[str, RewardScheme]:
    """Every scheme under configs/rewards/, by name: what evaluation reports for any run."""
    out = {}
    for p in sorted((configs_dir() / "rewards").glob("*.yaml")):
        s = load(RewardScheme, p)
        out[s.name] = s
    return out

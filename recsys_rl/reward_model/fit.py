"""Fitting the reward model on logged impressions, with a seeded held-out split and early stopping.

The likelihood is the model's own generative story (see ``model.py``), one term per observed event:
every shown (impression, position) contributes Bernoulli(exam[k] * sigmoid(rel)) for its click, every
click Bernoulli(sigmoid(buy)) for its purchase, every purchase Poisson(lam) for its extra units. Terms
are summed per impression, so the three heads are fitted jointly and the examination curve is learnt
beside relevance. The best validation epoch is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from recsys_rl.progress import progress_bar
from recsys_rl.records import LoggedBatch, OutcomeBatch
from recsys_rl.reward_model.config import RewardModelConfig
from recsys_rl.reward_model.model import BannerRewardModel

MIN_IMPRESSIONS = 50


class RewardModelDataError(ValueError):
    """Logs a reward model cannot be fitted on, worded as 'logs: <field>: <problem>'."""


@dataclass
class FitResult:
    model: BannerRewardModel
    train: LoggedBatch
    validation: LoggedBatch
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0


def check_logs(logs: LoggedBatch, n_products: int) -> None:
    """Refuse logs that cannot identify the model, naming the field and the problem."""
    n = len(logs)
    if n < MIN_IMPRESSIONS:
        raise RewardModelDataError(
            f"logs: impressions: {n}, need at least {MIN_IMPRESSIONS} to fit and validate"
        )
    ids = torch.cat([logs.banners.items.reshape(-1), logs.contexts.viewed, logs.contexts.history.reshape(-1)])
    ids = ids[ids >= 0]
    if len(ids) and int(ids.max()) >= n_products:
        raise RewardModelDataError(
            f"logs: product ids: found id {int(ids.max())}, but the catalogue has {n_products} products"
        )
    o = logs.outcomes
    for name, t in (("clicks", o.clicks), ("units", o.units), ("revenue", o.revenue)):
        if not bool(torch.isfinite(t).all()):
            raise RewardModelDataError(f"logs: {name}: holds NaN or infinite values")
        if bool((t < 0).any()):
            raise RewardModelDataError(f"logs: {name}: holds negative values")
    clicks = int(o.clicks.sum())
    if clicks == 0 or clicks == o.clicks.numel():
        what = "no click" if clicks == 0 else "a click at every position"
        raise RewardModelDataError(
            f"logs: clicks: {what} in {n} impressions; click probabilities are not identified"
        )
    if bool(((o.units > 0) & (o.clicks == 0)).any()):
        raise RewardModelDataError("logs: units: a purchase at a position that was not clicked")


def logged_prices(outcomes: OutcomeBatch, items: torch.Tensor, n_products: int) -> torch.Tensor:
    """(N,) unit price per product = logged revenue / units; products never bought get the median price."""
    units = torch.zeros(n_products).index_add_(0, items.reshape(-1), outcomes.units.reshape(-1))
    revenue = torch.zeros(n_products).index_add_(0, items.reshape(-1), outcomes.revenue.reshape(-1))
    seen = units > 0
    prices = torch.where(seen, revenue / units.clamp_min(1e-9), torch.zeros(()))
    if bool(seen.any()):
        prices[~seen] = prices[seen].median()
    return prices


def nll_terms(model: BannerRewardModel, batch: LoggedBatch) -> dict[str, torch.Tensor]:
    """Summed negative log-likelihood of each outcome over a batch (scalars): click, purchase, extra."""
    rel, buy, ext = model.head_logits(batch.contexts, batch.banners.items)  # (B, K) each
    o = batch.outcomes
    exam = model.exam_at(batch.banners.items, batch.banners.positions)  # slot rows: at their positions
    log_p = torch.log(exam) + F.logsigmoid(rel)
    log_q = torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))
    click = -(o.clicks * log_p + (1 - o.clicks) * log_q).sum()
    clicked = o.clicks > 0
    purchase = F.binary_cross_entropy_with_logits(buy[clicked], o.purchases[clicked], reduction="sum")
    bought = o.units > 0
    lam = ext[bought].clamp(max=4.0)
    extra = F.poisson_nll_loss(lam, o.units[bought] - 1, log_input=True, full=False, reduction="sum")
    return {"click": click, "purchase": purchase, "extra": extra}


def split(logs: LoggedBatch, share: float, seed: int) -> tuple[LoggedBatch, LoggedBatch]:
    """(train, validation) by a seeded permutation of impressions."""
    order = torch.randperm(len(logs), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(share * len(logs))))
    return logs[order[n_val:]], logs[order[:n_val]]


@torch.no_grad()
def validation_nll(model: BannerRewardModel, batch: LoggedBatch, chunk: int = 8192) -> dict[str, float]:
    """Mean per-impression negative log-likelihood of each outcome (and their sum) on ``batch``."""
    model.eval()
    sums = {"click": 0.0, "purchase": 0.0, "extra": 0.0}
    for s in range(0, len(batch), chunk):
        for k, v in nll_terms(model, batch[s : s + chunk]).items():
            sums[k] += float(v)
    out = {f"val_nll_{k}": v / len(batch) for k, v in sums.items()}
    out["val_nll"] = sum(sums.values()) / len(batch)
    return out


def fit_reward_model(
    logs: LoggedBatch,
    n_products: int,
    cfg: RewardModelConfig | None = None,
    progress: bool = True,
    n_positions: int | None = None,
    categorical_vocab: list[list[str]] | None = None,
) -> FitResult:
    """Fit a ``BannerRewardModel`` on ``logs``; the validation share is held out from every gradient.

    n_positions: K (default: the logged banners'; give it for slot rows, one product per row, whose
    ``banners.positions`` say where each was shown); user features are used when the contexts have
    them; categorical_vocab: the vocabulary of the contexts' categorical codes (saved with the model)."""
    cfg = cfg or RewardModelConfig()
    check_logs(logs, n_products)
    torch.manual_seed(cfg.seed)
    train, val = split(logs, cfg.validation_share, cfg.seed)
    uf = logs.contexts.user_features
    model = BannerRewardModel(
        n_products,
        cfg.embed_dim,
        cfg.hidden_dim,
        n_positions or logs.banners.items.shape[1],
        0 if uf is None else uf.shape[1],
        categorical_vocab,
    )
    model.prices.copy_(logged_prices(train.outcomes, train.banners.items, n_products))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    steps = -(-len(train) // cfg.batch_size)
    best, best_state, best_epoch, history = float("inf"), None, 0, []
    with progress_bar("reward model", cfg.epochs * steps, progress) as advance:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = torch.randperm(len(train), generator=g)
            for s in range(0, len(train), cfg.batch_size):
                mb = train[order[s : s + cfg.batch_size]]
                loss = sum(nll_terms(model, mb).values()) / len(mb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(1)
            row = {"epoch": float(epoch), **validation_nll(model, val)}
            history.append(row)
            advance(0, epoch=epoch, val_nll=row["val_nll"])
            if row["val_nll"] < best - 1e-6:
                best, best_epoch = row["val_nll"], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= cfg.patience:
                break
    model.load_state_dict(best_state)
    return FitResult(model.eval(), train, val, history, best_epoch)

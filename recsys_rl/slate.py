"""Plackett–Luce distributions over ordered banners, from per-product logits.

A banner a_1..a_K is drawn without replacement: P(a) = prod_k softmax(s over products not yet placed)[a_k].
Sampling uses Gumbel-top-k (exact for Plackett–Luce). Shapes: logits (B, N), items (B, K).
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def gumbel_topk(
    logits: torch.Tensor, k: int, generator: torch.Generator | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Sample (B, k) ordered banners from PL(logits / temperature) by perturb-and-sort."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return (logits / temperature + gumbel).topk(k, dim=-1).indices


def greedy(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) the k highest-scoring products in order: the PL mode."""
    return logits.topk(k, dim=-1).indices


def placed_mask(items: torch.Tensor, n: int) -> torch.Tensor:
    """(B, K, N) bool: True for the products already placed before each position."""
    b, k = items.shape
    onehot = torch.zeros(b, k, n, dtype=torch.int8, device=items.device)
    onehot.scatter_(2, items.unsqueeze(-1), 1)  # (B, K, N): the item at each position
    return (onehot.cumsum(1, dtype=torch.int8) - onehot).bool()


def position_logits(logits: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B, K, N) logits at each position with the products already placed masked to -inf."""
    return logits.unsqueeze(1).masked_fill(placed_mask(items, logits.shape[-1]), NEG_INF)


def position_log_probs(logits: torch.Tensor, items: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, K) log-prob of each placed item given the ones before it."""
    s = logits / temperature
    chosen = s.gather(1, items)  # (B, K)
    # logsumexp over the remaining set = log(sum_all - sum_placed_before), done stably via position_logits
    lse = torch.logsumexp(position_logits(s, items), dim=-1)  # (B, K)
    return chosen - lse


def log_prob(
    logits: torch.Tensor, items: torch.Tensor, temperature: float = 1.0, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """(B,) exact log-probability of each ordered banner, in O(B*N) (see ``banner_terms``).

    ``rows`` (B,): the row of ``logits`` (C, N) each banner was drawn from (default: banner b uses row
    b), so the banners of one context share its normaliser; the same numbers as repeating the rows.
    """
    s = (logits / temperature).double()
    m = s.detach().amax(-1, keepdim=True)
    e = (s - m).exp()
    z = e.sum(-1, keepdim=True)
    if rows is None:
        s_i, e_i = s.gather(1, items), e.gather(1, items)
    else:
        at = rows.unsqueeze(1), items
        s_i, e_i, m, z = s[at], e[at], m[rows], z[rows]
    zk = (z - _before(e_i)).clamp_min(1e-300)  # (B, K) mass left at each position
    lp = (s_i - zk.log() - m).sum(-1)
    fragile = (zk / z).amin(-1) < 1e-9
    if fragile.any():
        idx = fragile.nonzero().squeeze(-1)
        src = idx if rows is None else rows[idx]
        lp = lp.index_put((idx,), position_log_probs(s[src], items[idx]).sum(-1))
    return lp.to(logits.dtype)


def per_position_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B, K) exact KL(p_k || q_k) between the two next-item softmaxes at each position of ``items``.

    Summed over positions and averaged over banners drawn from p, this is an unbiased estimate of the
    whole-banner KL(P || Q) (chain rule of KL), with far lower variance than log P(a) - log Q(a).
    """
    lp = torch.log_softmax(position_logits(logits_p, items), dim=-1)
    lq = torch.log_softmax(position_logits(logits_q, items), dim=-1)
    p = lp.exp()
    diff = torch.where(p > 0, lp - lq, torch.zeros_like(lp))
    return (p * diff).sum(-1)


def per_position_entropy(logits: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B, K) entropy of the next-item softmax at each position of ``items``."""
    lp = torch.log_softmax(position_logits(logits, items), dim=-1)
    p = lp.exp()
    return -(p * torch.where(p > 0, lp, torch.zeros_like(lp))).sum(-1)


def _before(x: torch.Tensor) -> torch.Tensor:
    """(B, K) sum over the positions strictly before each position."""
    return x.cumsum(1) - x


def banner_terms(
    logits: torch.Tensor, ref_logits: torch.Tensor, items: torch.Tensor, rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-prob (B,), KL to ref (B,), entropy (B,)) of banners, in O(B*N) instead of O(B*K*N).

    logits, ref_logits: (C, N) per context; items: (B, K); rows: (B,) context row of each banner
    (default: banner b uses row b), so several banners of one context share one softmax.

    Closed form: with e_j = exp(s_j) and Z_k = Z - sum of e over items placed before position k,
      log p_k(a_k) = s_{a_k} - log Z_k,
      KL_k = (sum_{j not placed} e_j (s_j - r_j)) / Z_k - log Z_k + log Z^ref_k,
      H_k  = log Z_k - (sum_{j not placed} e_j s_j) / Z_k,
    each full-catalogue sum computed once per context and corrected by the K placed items. Equal to
    ``log_prob``, ``per_position_kl(...).sum(-1)``, ``per_position_entropy(...).sum(-1)``. float64
    inside; banners whose placed items hold all but < 1e-9 of the mass (where subtracting it would
    lose digits) are recomputed with the masked softmax instead.
    """
    s, r = logits.double(), ref_logits.double()
    ms, mr = s.detach().amax(-1, keepdim=True), r.amax(-1, keepdim=True)
    e, er = (s - ms).exp(), (r - mr).exp()  # (C, N), shifted for stability
    d = s - r
    z, zr = e.sum(-1, keepdim=True), er.sum(-1, keepdim=True)  # (C, 1)
    t, u = (e * d).sum(-1, keepdim=True), (e * s).sum(-1, keepdim=True)
    if rows is not None:  # pick the (B, K) banner entries straight from the (C, N) rows
        at = rows.unsqueeze(1), items
        s_i, e_i, er_i, d_i = s[at], e[at], er[at], d[at]
        ms, mr, z, zr, t, u = ms[rows], mr[rows], z[rows], zr[rows], t[rows], u[rows]
    else:
        s_i, e_i, er_i, d_i = s.gather(1, items), e.gather(1, items), er.gather(1, items), d.gather(1, items)
    zk = (z - _before(e_i)).clamp_min(1e-300)  # (B, K)
    log_zk = zk.log() + ms
    log_zrk = (zr - _before(er_i)).clamp_min(1e-300).log() + mr
    logp = (s_i - log_zk).sum(-1)
    kl = ((t - _before(e_i * d_i)) / zk - log_zk + log_zrk).sum(-1)
    entropy = (log_zk - (u - _before(e_i * s_i)) / zk).sum(-1)
    fragile = (zk / z).amin(-1) < 1e-9  # (B,)
    if fragile.any():
        idx = fragile.nonzero().squeeze(-1)
        src = idx if rows is None else rows[idx]
        lp64, lq64, it = logits[src].double(), ref_logits[src].double(), items[idx]
        logp = logp.index_put((idx,), position_log_probs(lp64, it).sum(-1))
        kl = kl.index_put((idx,), per_position_kl(lp64, lq64, it).sum(-1))
        entropy = entropy.index_put((idx,), per_position_entropy(lp64, it).sum(-1))
    dtype = logits.dtype
    return logp.to(dtype), kl.to(dtype), entropy.to(dtype)


# --- The policy over its candidates -----------------------------------------------------------------
#
# At large N a policy is the Plackett–Luce distribution over its per-context candidate set C(x) (its
# top-M products, ``recsys_rl.candidates``): logits (B, M) over candidate ids (B, M), products outside
# C(x) have probability zero. Every function above works unchanged on (B, M) candidate logits once the
# banner's global ids are mapped to candidate positions; these helpers do the mapping.
#
# The reference restricted for the KL: pi_ref renormalised over the *policy's* candidates C(x), i.e.
# per position k, KL(p_k || q_k|C) with both next-item softmaxes taken over C(x) minus the items placed.
# Why: pi has no mass outside C(x), so the full-catalogue KL is exactly this restricted KL plus
# sum_k -log Q_ref,k(C(x)), the reference's missing mass; that term needs the reference's logsumexp
# over all N products per context (as costly as exact retrieval itself at 10^6) and does not depend on
# the order within C(x). The restricted KL is therefore a lower bound of the full KL, 0 exactly when
# pi = pi_ref (the fine-tune starts there with the same candidates), and its gradient w.r.t. the
# policy's logits over C(x) equals the full KL's gradient (the missing-mass term is constant in them).


def candidate_positions(cand_ids: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(B, K) position of each banner item in its row of candidate ids (B, M); -1 where absent."""
    hit = cand_ids.unsqueeze(1) == items.unsqueeze(2)  # (B, K, M), bool: K*M per row is small
    pos = hit.int().argmax(-1)
    return torch.where(hit.any(-1), pos, torch.full_like(pos, -1))


def with_banner(cand_ids: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate ids extended by the banner's items: (ids (B, M+K), valid (B, M+K) bool).

    A banner item already among the candidates keeps its slot and its copy at the end is invalid
    (its logit must be masked with ``PAD_LOGIT``). Used where a banner was served by another version
    whose candidates may differ (the live stream), so its log-prob stays finite and defined.
    """
    missing = candidate_positions(cand_ids, items) < 0  # (B, K)
    same = items.unsqueeze(2) == items.unsqueeze(1)  # (B, K, K): one item shown in several banners
    missing &= ~torch.tril(same, diagonal=-1).any(2)  # keep only its first copy
    ids = torch.cat([cand_ids, items], 1)
    valid = torch.cat([torch.ones_like(cand_ids, dtype=torch.bool), missing], 1)
    return ids, valid


PAD_LOGIT = -1e30
"""Logit of an invalid candidate slot: exp() is exactly 0 in float64, and unlike -inf it keeps
s - r = 0 (not nan) where both the policy and the reference are masked."""


def restricted_terms(
    cand_logits: torch.Tensor,
    ref_cand_logits: torch.Tensor,
    cand_ids: torch.Tensor,
    items: torch.Tensor,
    rows: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-prob (B,), KL (B,), entropy (B,)) of banners ``items`` (B, K) (global ids) under the PL over
    candidates: logits (C, M) of candidate ids (C, M), the reference's logits at the same ids (C, M);
    ``rows`` (B,) maps banners to context rows as in ``banner_terms``. A banner item that is not a
    candidate of its row gives log-prob -inf (the policy could not have served it). ``positions``
    (B, K): ``candidate_positions`` already computed (the learner reuses them across epochs)."""
    if positions is None:
        ids = cand_ids if rows is None else cand_ids[rows]
        positions = candidate_positions(ids, items)
    pos = positions
    absent = (pos < 0).any(1)
    logp, kl, ent = banner_terms(cand_logits, ref_cand_logits, pos.clamp_min(0), rows)
    if absent.any():
        logp = logp.masked_fill(absent, NEG_INF)
    return logp, kl, ent


def restricted_sample(
    cand_logits: torch.Tensor,
    cand_ids: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(items (B, k) global ids, log-prob (B,)) of PL(cand_logits / T) over candidates (B, M): Gumbel
    noise over the M candidates only."""
    pos = gumbel_topk(cand_logits, k, generator, temperature)
    return cand_ids.gather(1, pos), log_prob(cand_logits, pos, temperature)


def restricted_sample_groups(
    cand_logits: torch.Tensor,
    cand_ids: torch.Tensor,
    k: int,
    group: int,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``group`` banners per context from PL(cand_logits / T) over candidates (C, M): (items (C*group, k)
    global ids, log-prob (C*group,), positions (C*group, k) in their context's candidate row).

    The same draws and numbers as ``restricted_sample`` on the rows repeated ``group`` times (one
    (C*group, M) block of uniforms from ``generator``), without materialising the repeated logits; the
    positions are what ``candidate_positions`` would find, handed on so the learner need not search.
    """
    c, m = cand_logits.shape
    u = torch.rand((c * group, m), generator=generator, dtype=cand_logits.dtype, device=cand_logits.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
    noisy = (cand_logits / temperature).unsqueeze(1) + gumbel.view(c, group, m)  # (C, group, M)
    pos = noisy.view(c * group, m).topk(k, dim=-1).indices  # (C*group, k)
    rows = torch.arange(c, device=cand_logits.device).repeat_interleave(group)
    items = cand_ids[rows.unsqueeze(1), pos]
    return items, log_prob(cand_logits, pos, temperature, rows), pos

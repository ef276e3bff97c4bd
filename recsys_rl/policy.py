"""The banner policy network; the same class is the frozen baseline (reference) recommender.

context -> query (B, D) -> logits (B, N) = query @ E^T + bias: one matmul scores the whole catalogue.
A banner is a Plackett–Luce draw of K products (``banner_size``, 5 by default) from those logits (see ``recsys_rl.slate``).

Large catalogues: with ``candidates`` M > 0 and N > M the policy *is* the Plackett–Luce distribution
over its per-context top-M candidates (``recsys_rl.candidates``): ``sample``, ``greedy`` and the
learner's log-prob/KL/entropy all use (B, M) candidate logits, never (B, N). With N <= M (or M = 0)
the full-catalogue path is used, which is the reference implementation (identical distributions:
the top-N of N products is the whole catalogue).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from recsys_rl import slate
from recsys_rl.candidates import RetrievalConfig, Retriever
from recsys_rl.candidates.context import context_products
from recsys_rl.candidates.sources import SOURCE_NAMES, CandidateSources
from recsys_rl.candidates.union import membership, union
from recsys_rl.records import BANNER_SIZE, MAX_BANNER_SIZE, BannerBatch, ContextBatch
from recsys_rl.sparse_optim import gathered_scores, sparse_rows, sparse_scores

CONTEXT_BONUS_SCALE = 10.0
"""A context feature's logit offset is w * this: it must move by a few nats within the few thousand Adam
steps (lr 1e-3) of a fine-tune; measured at 100k products, the in-context weight reached 2.7 nats in 400."""

CONTEXT_FEATURES = ("in_context", "viewed", "history_count", "history_recency")
"""What the policy knows of a candidate's place in the context, one learned weight each (see
``context_features``): in the context at all (the old single context bonus), is the viewed product, how
often it is in the history, and how recent its latest purchase is (1 most recent, down to 1/H)."""


class BannerPolicy(nn.Module):
    """Context encoder + product embeddings + a value head (the critic, unused by the reference).

    Inputs are raw product ids; PAD (-1) in the history is mapped to a padding row that embeds to zero.
    """

    def __init__(
        self,
        n_products: int,
        embed_dim: int = 32,
        hidden_dim: int = 128,
        n_user_features: int = 0,
        candidates: int = 512,
        retrieval: str = "auto",
        nprobe: int = 64,
        full_catalogue_max: int = 20_000,
        banner_size: int = BANNER_SIZE,
        categorical_vocab: list[list[str]] | None = None,
        context_bonus: bool = False,
        context_features: bool = False,
        sources: dict | None = None,
    ):
        """``context_bonus`` (candidate path only): the context's own products join its candidates and
        get one learned logit offset, for being in the context. ``context_features`` (every catalogue
        size): each candidate's logit gets w . f(x, j) * CONTEXT_BONUS_SCALE for the ``CONTEXT_FEATURES``
        f (the in-context offset is the first of them); w starts at 0, so a fresh policy scores as
        without it. See ``context_offsets``. ``sources`` (candidate path only): the ``CandidateSources``
        spec of the extra candidate sources (co-occurrence, category, popular; their tables are loaded
        or attached with ``attach_sources``), each with one learned logit weight for listing a candidate."""
        super().__init__()
        if not 1 <= banner_size <= min(MAX_BANNER_SIZE, n_products):
            raise ValueError(
                f"banner_size: must be in [1, {min(MAX_BANNER_SIZE, n_products)}] for {n_products} products, "
                f"got {banner_size}"
            )
        self.n_products, self.banner_size = n_products, banner_size
        self.n_candidates, self.retrieval, self.full_catalogue_max = candidates, retrieval, full_catalogue_max
        self.nprobe = nprobe
        self._retriever: Retriever | None = None
        self.n_user_features = n_user_features
        self.item_in = nn.Embedding(n_products + 1, embed_dim, padding_idx=n_products)
        self.encoder = nn.Sequential(
            nn.Linear(2 * embed_dim + n_user_features, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
        )
        self.to_query = nn.Linear(hidden_dim, embed_dim)
        self.item_out = nn.Parameter(torch.randn(n_products, embed_dim) * embed_dim**-0.5)
        self.item_bias = nn.Parameter(torch.zeros(n_products))
        self.value_head = nn.Linear(hidden_dim, 1)
        # categorical user features: one embedding table per column (row 0 = unknown value), summed
        # into one (B, D) part of the encoder input; the vocabulary is saved with the weights
        self.categorical_vocab = [list(map(str, v)) for v in categorical_vocab or []]
        if self.categorical_vocab:
            from recsys_rl.features import cardinalities

            self.category_embeddings = nn.ModuleList(
                nn.Embedding(c, embed_dim) for c in cardinalities(self.categorical_vocab)
            )
            first = self.encoder[0]
            self.encoder[0] = nn.Linear(first.in_features + embed_dim, hidden_dim)
        # at large N only the touched rows of the two item tables get gradients (SparseAdam in the
        # learner), so an update costs O(rows touched), not O(N D)
        self.item_in.sparse = self.uses_candidates
        self.has_context_bonus = bool(context_bonus) and self.uses_candidates
        self.context_features = bool(context_features)
        self.n_context_features = len(CONTEXT_FEATURES) if context_features else int(self.has_context_bonus)
        if self.n_context_features:  # 0 at the start: the same scores as without it
            self.context_weights = nn.Parameter(torch.zeros(self.n_context_features))
        self.sources: CandidateSources | None = None
        if sources and self.uses_candidates:
            self.attach_sources(CandidateSources(n_products, **sources))
        if self.uses_candidates:
            # Large catalogues: output embeddings start at zero. Most products never appear in the
            # logs the baseline learns from; with a random init they keep random scores that push
            # them into every context's top-M (and make the candidate index search a random cloud).
            # At zero an untrained product scores its bias until data moves it.
            with torch.no_grad():
                self.item_out.zero_()

    def _hidden(
        self,
        viewed: torch.Tensor,
        history: torch.Tensor,
        user_features: torch.Tensor | None,
        user_categories: torch.Tensor | None = None,
    ):
        """(B, hidden) context encoding. viewed (B,) and history (B, H) may be PAD (no viewed product,
        no purchases): PAD embeds to zero. user_features (B, F); user_categories (B, C) codes."""
        mask = history >= 0  # (B, H)
        hist = self.item_in(torch.where(mask, history, self.n_products))  # (B, H, D), pads are zero
        count = mask.sum(1, keepdim=True).clamp_min(1)
        pooled = hist.sum(1) / count  # (B, D) mean of past purchases
        parts = [self.item_in(torch.where(viewed >= 0, viewed, self.n_products)), pooled]
        if self.n_user_features:
            if user_features is None:
                raise ValueError(f"user_features: this policy needs {self.n_user_features} per context")
            parts.append(user_features)
        if self.categorical_vocab:
            if user_categories is None:
                raise ValueError(
                    f"user_categories: this policy needs {len(self.categorical_vocab)} categorical features"
                )
            parts.append(sum(emb(user_categories[:, c]) for c, emb in enumerate(self.category_embeddings)))
        return self.encoder(torch.cat(parts, dim=-1))  # (B, hidden)

    def forward(self, viewed: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B,) viewed ids, (B, H) history ids -> (B, N) logits. The signature MLflow logs and serving calls."""
        h = self._hidden(viewed, history, None)
        return self._with_context(
            ContextBatch(viewed, history), self.to_query(h) @ self.item_out.T + self.item_bias
        )

    def logits(self, ctx: ContextBatch) -> torch.Tensor:
        """(B, N) logits for a batch of contexts."""
        h = self._hidden(*_parts(ctx))
        return self._with_context(ctx, self.to_query(h) @ self.item_out.T + self.item_bias)

    def logits_and_value(self, ctx: ContextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) logits and (B,) critic value, sharing one encoder pass."""
        h = self._hidden(*_parts(ctx))
        logits = self._with_context(ctx, self.to_query(h) @ self.item_out.T + self.item_bias)
        return logits, self.value_head(h).squeeze(-1)

    def query(self, ctx: ContextBatch) -> torch.Tensor:
        """(B, D) context representation (used as features by the linear bandit baseline)."""
        return self.to_query(self._hidden(*_parts(ctx)))

    # --- candidates -------------------------------------------------------------------------------

    @property
    def uses_candidates(self) -> bool:
        """True when the policy is defined over top-M candidates (N > max(M, full_catalogue_max), M > 0)."""
        return 0 < self.n_candidates < self.n_products and self.n_products > self.full_catalogue_max

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The item tables whose gradients are sparse rows (empty on the full path)."""
        return [self.item_in.weight, self.item_out] if self.uses_candidates else []

    @property
    def retriever(self) -> Retriever:
        """The candidate step of this version, built from the item table on first use."""
        if self._retriever is None:
            self.refresh_candidates()
        return self._retriever

    def refresh_candidates(self) -> None:
        """Rebuild the candidate index from the current item table: call when a version is created or
        loaded (exact search always reads the live table; an IVF index is a snapshot)."""
        cfg = RetrievalConfig(m=self.n_candidates, kind=self.retrieval, nprobe=self.nprobe)
        if self._retriever is None:
            self._retriever = Retriever(self.item_out, self.item_bias, cfg)
        else:
            self._retriever.refresh(self.item_out, self.item_bias)

    def item_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """(*ids.shape, D) output embeddings of ids; sparse row gradients at large N (built coalesced)."""
        if self.uses_candidates and self.item_out.requires_grad and torch.is_grad_enabled():
            return sparse_rows(self.item_out, ids)
        return F.embedding(ids, self.item_out)

    def score(self, query: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(B, M) logits of products ids (B, M) for queries (B, D): gathers M rows, never N."""
        if self.uses_candidates and self.item_out.requires_grad and torch.is_grad_enabled():
            return sparse_scores(query, self.item_out, ids) + self.item_bias[ids]
        params = (query, self.item_out, self.item_bias)
        if not torch.is_grad_enabled() or not any(t.requires_grad for t in params):  # blocked, no autograd
            return gathered_scores(query, self.item_out.detach(), ids) + self.item_bias.detach()[ids]
        e = self.item_rows(ids)  # (B, M, D)
        return torch.bmm(e, query.unsqueeze(2)).squeeze(2) + self.item_bias[ids]

    # The context bonus. At 10^5 products the reference is not personalised (its greedy banners at
    # 100k use 36 products for 2,048 users) and a fine-tune that must learn each product's row from
    # bandit feedback stayed so (gap closed 0.24-0.26 whatever M, item_lr, epochs or KL budget). The
    # context's own products (the viewed one, the past purchases) are what the user is known to like:
    # with ``context_bonus`` they join the candidates, C(x) = top-M(x) U context(x), and every one of
    # them gets the same learned logit offset w * CONTEXT_BONUS_SCALE, a single parameter shared by all
    # products, so the fine-tune learns from every impression whether showing them pays. Measured at
    # 100k: a fixed w = 5 on the reference's greedy banners closes 0.397 of the gap, a learned one
    # reached 0.352 at 409,600 impressions (0.200 without it).

    def attach_sources(self, sources: CandidateSources) -> None:
        """Use these extra candidate sources (a new version's tables) with a weight per source, 0 at
        the start (the same scores as without them) unless the policy already has weights."""
        self.sources = sources
        if not hasattr(self, "source_weights"):
            self.source_weights = nn.Parameter(torch.zeros(len(SOURCE_NAMES)))

    def extra_width(self, ctx: ContextBatch) -> int:
        """Candidates per context beyond the policy's top-M: the context's 1 + H products and the sources'."""
        extra = 1 + ctx.history.shape[1] if self.joins_context else 0
        return extra + (self.sources.width if self.sources is not None else 0)

    def source_offsets(self, ctx: ContextBatch, ids: torch.Tensor, lists: list | None = None) -> torch.Tensor:
        """(B, M) logit offset w_s * CONTEXT_BONUS_SCALE summed over the sources that list each id (B, M)."""
        if self.sources is None:
            return torch.zeros(ids.shape)
        f = membership(ids, self.sources.lists(ctx) if lists is None else lists)  # (B, M, S)
        return f @ self.source_weights * CONTEXT_BONUS_SCALE

    def candidate_offsets(self, ctx: ContextBatch, ids: torch.Tensor) -> torch.Tensor:
        """(B, M) every feature offset of candidate ids: the context's and the sources'."""
        return self.context_offsets(ctx, ids) + self.source_offsets(ctx, ids)

    @property
    def joins_context(self) -> bool:
        """True when the context's own products join the candidates (candidate path, context weights)."""
        return self.uses_candidates and self.n_context_features > 0

    def context_products(self, ctx: ContextBatch) -> torch.Tensor:
        """(B, 1 + H) the viewed product and the history, PAD (-1) where absent."""
        return context_products(ctx)

    def context_offsets(self, ctx: ContextBatch, ids: torch.Tensor) -> torch.Tensor:
        """(B, M) logit offset of candidate ids (B, M): w . f(x, j) * CONTEXT_BONUS_SCALE over the
        context features of each id (0 outside the context, and always 0 without context weights)."""
        if not self.n_context_features:
            return torch.zeros(ids.shape)
        own = self.context_products(ctx)  # (B, 1+H)
        f = torch.zeros(*ids.shape, self.n_context_features)  # (B, M, F)
        for j, weight in enumerate(_slot_features(own.shape[1], self.n_context_features)):
            f += (ids == own[:, j : j + 1]).unsqueeze(-1) * weight  # one (B, M) pass per context slot
        f[..., 0] = f[..., 0].clamp_max(1.0)  # in_context is an indicator, recency a maximum
        if self.n_context_features > 1:
            f[..., 3] = _recency(ids, own)
        return f @ self.context_weights * CONTEXT_BONUS_SCALE

    def _with_context(self, ctx: ContextBatch, logits: torch.Tensor) -> torch.Tensor:
        """(B, N) logits plus the context features' offsets (scattered onto the context's products)."""
        if not self.context_features:
            return logits
        own = self.context_products(ctx)  # (B, 1+H), PAD -1 goes to a spare column N
        safe = torch.where(own >= 0, own, self.n_products)
        w = self.context_weights * CONTEXT_BONUS_SCALE  # (F,)
        slots = own.shape[1]
        recency = torch.zeros(slots)
        recency[1:] = 1.0 - torch.arange(slots - 1, dtype=torch.float32) / (slots - 1)
        wide = logits.new_zeros(len(own), self.n_products + 1)
        inside = wide.scatter(1, safe, 1.0)  # indicator, not a count
        viewed = wide.scatter(1, safe[:, :1], 1.0)
        count = wide.scatter_add(1, safe[:, 1:], torch.ones_like(safe[:, 1:], dtype=wide.dtype))
        latest = wide.scatter_reduce(1, safe, recency.expand(len(own), -1), reduce="amax")
        offsets = inside * w[0] + viewed * w[1] + count * w[2] + latest * w[3]
        return logits + offsets[:, : self.n_products]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Policies saved with the single context bonus (a scalar ``context_bonus``) load as its special
        case, the in-context weight; policies saved before context weights existed start them at 0."""
        old = state_dict.pop(prefix + "context_bonus", None)
        if old is not None:
            state_dict[prefix + "context_weights"] = old.reshape(1)
        if self.n_context_features and prefix + "context_weights" not in state_dict:
            state_dict[prefix + "context_weights"] = torch.zeros(self.n_context_features)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def __setstate__(self, state):
        """Unpickling (an MLflow pytorch model) a policy from before context weights: the same upgrade."""
        super().__setstate__(state)
        if "context_features" in self.__dict__:
            return
        old = self._parameters.pop("context_bonus", None)
        self.context_features = False
        self.n_context_features = 0 if old is None else 1
        if old is not None:
            self.context_weights = nn.Parameter(old.detach().reshape(1), requires_grad=old.requires_grad)

    @torch.no_grad()
    def _search(self, ctx: ContextBatch, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """((B, M') candidate ids, (B, M') their scores q . e + b or None): the top-M, or the union
        (``candidates.union``) of the context's products (with the context bonus or features), the
        stored sources' lists and the top-M', M' = M + their widths. Scores only from exact search
        without extra sources, which reads the live table; otherwise the caller scores the ids."""
        if not self.extra_width(ctx):
            if self.retriever.kind != "exact":
                return self.retriever.search(q), None
            logits, ids = self.retriever.search_scored(q)
            return ids, logits
        width = min(self.retriever.m + self.extra_width(ctx), self.n_products)
        parts = [self.context_products(ctx)] if self.joins_context else []
        if self.sources is not None:
            parts += self.sources.lists(ctx)
        parts.append(self.retriever.search(q, width))  # (B, width) distinct
        return union(parts, width), None

    @torch.no_grad()
    def candidates(self, ctx: ContextBatch) -> torch.Tensor:
        """(B, M) candidate ids per context, best first (all N products when not ``uses_candidates``;
        the context's products first, then the top, with ``joins_context``)."""
        if not self.uses_candidates:
            return torch.arange(self.n_products).expand(len(ctx), -1)
        return self._search(ctx, self.query(ctx))[0]

    @torch.no_grad()
    def candidates_and_logits(self, ctx: ContextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, M) candidate ids, (B, M) their logits) with one encoder pass (no gradient): exact
        retrieval's own scores where it can give them (equal to ``score`` up to float summation order,
        ~1e-7), else ``score`` of the ids, plus the context offsets."""
        q = self.query(ctx)
        ids, logits = self._search(ctx, q)
        if logits is None:
            logits = self.score(q, ids) + self.candidate_offsets(ctx, ids)
        return ids, logits

    def candidate_logits(self, ctx: ContextBatch, ids: torch.Tensor) -> torch.Tensor:
        """(B, M) logits of candidate ids (B, M) (differentiable)."""
        return self.score(self.query(ctx), ids) + self.candidate_offsets(ctx, ids)

    def candidate_logits_and_value(
        self, ctx: ContextBatch, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M) candidate logits and (B,) critic value, sharing one encoder pass."""
        h = self._hidden(*_parts(ctx))
        logits = self.score(self.to_query(h), ids) + self.candidate_offsets(ctx, ids)
        return logits, self.value_head(h).squeeze(-1)

    def value(self, ctx: ContextBatch) -> torch.Tensor:
        """(B,) critic value alone (no catalogue scores)."""
        return self.value_head(self._hidden(*_parts(ctx))).squeeze(-1)

    @torch.no_grad()
    def banner_log_prob(
        self, ctx: ContextBatch, items: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """(B,) exact log-probability of banners items (B, K) under this policy as it serves: over its
        candidates when ``uses_candidates`` (-inf for a banner it could not have served)."""
        if not self.uses_candidates:
            return slate.log_prob(self.logits(ctx), items, temperature)
        ids, logits = self.candidates_and_logits(ctx)
        pos = slate.candidate_positions(ids, items)
        lp = slate.log_prob(logits, pos.clamp_min(0), temperature)
        return lp.masked_fill((pos < 0).any(1), slate.NEG_INF)

    @torch.no_grad()
    def sample(
        self,
        ctx: ContextBatch,
        k: int | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> BannerBatch:
        """Draw one banner of k (default: ``banner_size``) products per context with its exact
        log-propensity under PL(logits / temperature) (over the candidates when ``uses_candidates``)."""
        k = self.banner_size if k is None else k
        if self.uses_candidates:
            ids, logits = self.candidates_and_logits(ctx)
            items, lp = slate.restricted_sample(logits, ids, k, generator, temperature)
            return BannerBatch(items, lp)
        logits = self.logits(ctx)
        items = slate.gumbel_topk(logits, k, generator, temperature)
        return BannerBatch(items, slate.log_prob(logits, items, temperature))

    @torch.no_grad()
    def greedy(self, ctx: ContextBatch, k: int | None = None) -> torch.Tensor:
        """(B, k) the top-k banner (default k: ``banner_size``): what evaluation and deterministic serving show."""
        k = self.banner_size if k is None else k
        if self.uses_candidates:
            ids, logits = self.candidates_and_logits(ctx)
            return ids.gather(1, slate.greedy(logits, k))
        return slate.greedy(self.logits(ctx), k)

    def frozen_copy(self) -> BannerPolicy:
        """A detached, gradient-free copy: the reference policy for the KL penalty."""
        retriever, self._retriever = self._retriever, None  # a copy builds its own index
        ref = copy.deepcopy(self)
        self._retriever = retriever
        ref.requires_grad_(False)
        return ref.eval()

    def hparams(self) -> dict:
        return {
            "n_products": self.n_products,
            "embed_dim": self.item_out.shape[1],
            "hidden_dim": self.to_query.in_features,
            "n_user_features": self.n_user_features,
            "candidates": self.n_candidates,
            "retrieval": self.retrieval,
            "nprobe": self.nprobe,
            "full_catalogue_max": self.full_catalogue_max,
            "banner_size": self.banner_size,
            "categorical_vocab": self.categorical_vocab,
            "context_bonus": self.has_context_bonus,
            "context_features": self.context_features,
            "sources": None if self.sources is None else dict(self.sources.spec),
        }


def _slot_features(slots: int, n_features: int) -> list[torch.Tensor]:
    """(F,) feature increments of a match at each context slot (0: viewed, 1..: history, most recent
    first): in_context 1 everywhere, viewed 1 at slot 0, history_count 1 at the others (recency apart)."""
    out = []
    for j in range(slots):
        f = torch.zeros(n_features)
        f[0] = 1.0
        if n_features > 1:
            f[1 if j == 0 else 2] = 1.0
        out.append(f)
    return out


def _recency(ids: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """(B, M) recency of ids in the history part of own (B, 1+H): 1 - p/H for the most recent position
    p it was bought at, 0 if never."""
    slots = own.shape[1]
    out = torch.zeros(ids.shape)
    for j in range(slots - 1, 0, -1):  # oldest first, so the most recent match wins
        out = torch.where(ids == own[:, j : j + 1], 1.0 - (j - 1) / (slots - 1), out)
    return out


def _parts(ctx: ContextBatch) -> tuple:
    return ctx.viewed, ctx.history, ctx.user_features, ctx.user_categories


def save_policy(policy: BannerPolicy, path) -> None:
    """Save weights and the constructor arguments needed to rebuild the network."""
    torch.save({"hparams": policy.hparams(), "state_dict": policy.state_dict()}, path)


def load_policy(path) -> BannerPolicy:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    policy = BannerPolicy(**blob["hparams"])  # files from before banner_size was saved hold K = 5
    policy.load_state_dict(blob["state_dict"])
    return policy


def trainable_copy(reference: BannerPolicy) -> BannerPolicy:
    """The policy starts as an exact copy of the frozen reference (so KL starts at 0)."""
    policy = BannerPolicy(**reference.hparams())
    policy.load_state_dict(reference.state_dict())
    return policy.train()

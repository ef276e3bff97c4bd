"""The policy's own source: per context, the top-M products by its score q . e_j + b_j.

At 10^5-10^6 products nothing on a hot path may hold a (B, N) score matrix, let alone (B, K, N).
The policy therefore retrieves M candidates per context (M ~ 256-1024) and is *defined* as the
Plackett–Luce distribution over them (see ``recsys_rl.restricted``). Two ways to find them:

- ``exact_topk``: a blocked matrix product + running top-M. Blocks of ``ROW_BLOCK`` contexts times
  ``COL_BLOCK`` products keep the working set at ~64 MB whatever N is, and a grouped first pass
  replaces the top-M over each block by two small ones (``_block_topk``). Exact; ~0.7 s for 1024
  contexts at N = 100k on 1 thread of this loaded machine (1.3 s with one top-M over the block).
- ``IVFIndex``: faiss ``IndexIVFFlat``. The bias is folded in as an extra dimension (item [e_j, b_j],
  query [q, 1]), so the inner product is the policy's logit exactly; the policy's index maps that
  maximum-inner-product search to L2 (see ``IVFIndex``), which raised recall@512 at 1M from 0.88 to
  0.97 at similar cost. IVF was chosen because the index is rebuilt whenever a policy version
  changes: measured here at 1M (synthetic vectors), nprobe 16 gave recall 0.9999 at 0.24 s per 1024
  queries and the index builds in 1.9 s. HNSW (inner product, M = 32, efSearch 512-1024) was measured
  on the 1M world's reference and rejected: recall@512 0.44-0.47 and a 25 s build.

``Retriever`` picks one of the two for a catalogue size and is what the policy holds; ``recall_at_m``
measures an index against exact search.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

ROW_BLOCK = 128
COL_BLOCK = 1 << 17
EXACT_MAX_PRODUCTS = 200_000
"""Above this catalogue size ``Retriever(kind="auto")`` uses the IVF index instead of brute force."""


@torch.no_grad()
def exact_topk(
    queries: torch.Tensor,
    items: torch.Tensor,
    bias: torch.Tensor | None,
    m: int,
    workspace: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``m`` of queries (B, D) @ items (N, D)^T + bias (N,): (scores (B, m), ids (B, m) long).

    Rows sorted by descending score (the order among equal scores is unspecified, as with
    ``torch.topk``). Never materialises more than ROW_BLOCK x COL_BLOCK scores; each block's top-m is
    found by ``_block_topk``. ``workspace``: a dict the caller keeps between calls, holding the score
    buffers (a fresh 50 MB buffer per call costs page faults; one caller at a time per dict).
    """
    b, n = queries.shape[0], items.shape[0]
    m = min(m, n)
    out_s = torch.empty(b, m, dtype=queries.dtype)
    out_i = torch.empty(b, m, dtype=torch.long)
    bufs: dict = {} if workspace is None else workspace  # score buffers, reused across row blocks
    for r0 in range(0, b, ROW_BLOCK):
        q = queries[r0 : r0 + ROW_BLOCK]
        best_s = best_i = None
        for c0 in range(0, n, COL_BLOCK):
            cols = items[c0 : c0 + COL_BLOCK]
            top_s, ids = _block_topk(q, cols, None if bias is None else bias[c0 : c0 + COL_BLOCK], m, bufs)
            ids += c0
            if best_s is None:
                best_s, best_i = top_s, ids
            else:
                cat_s, cat_i = torch.cat([best_s, top_s], 1), torch.cat([best_i, ids], 1)
                keep = cat_s.topk(m, dim=1)
                best_s, best_i = keep.values, cat_i.gather(1, keep.indices)
        out_s[r0 : r0 + ROW_BLOCK], out_i[r0 : r0 + ROW_BLOCK] = best_s, best_i
    return out_s, out_i


GROUP = 16
"""Products per group in ``_block_topk``'s first pass."""


def _block_topk(
    q: torch.Tensor, items: torch.Tensor, bias: torch.Tensor | None, m: int, bufs: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (R, m'), ids (R, m') long, m' = min(m, n)) top of q (R, D) @ items (n, D)^T + bias, sorted.

    The scores go into a reused buffer (``bufs``: a fresh 50 MB tensor per block costs page faults
    that took longer than the matrix product). When the block is large against m, a threshold found
    on group maxima replaces one top-k over n (``torch.topk`` of 512 out of 10^5 was 60% of a
    fine-tuning update at 100k): split the n columns into G = ceil(n / GROUP) groups (group c =
    columns c, c + G, c + 2G, ..., padded with -inf), take each group's max and keep the m groups with
    the largest maxima; t = the smallest of those m maxima. At least m scores are >= t (one per kept
    group), so the top-m are all >= t, and every score >= t lies in a kept group (a group with a score
    >= t has a max >= t; groups tied at t may be exchanged, as equal scores in any top-k). So the
    top-m are the top-m of the kept groups' scores that are >= t: about m of the m x GROUP (532 on
    average for m = 512 at 100k), ranked by one small top-k. Measured at n = 10^5, m = 512, 1024
    queries, 1 thread (loaded machine): one top-k over n 1.30 s; a top-m of the kept groups' 16 m
    scores 0.66 s, then 0.42 s beside this version's 0.38 s in the same run; the same scores bit for bit.
    """
    r, n = q.shape[0], items.shape[0]
    groups = -(-n // GROUP)
    grouped = groups >= 4 * m
    width = GROUP * groups if grouped else n
    key = (ROW_BLOCK, width, q.dtype)
    if key not in bufs or bufs[key].shape[0] < r:  # the pad columns stay -inf
        bufs[key] = torch.full((max(r, ROW_BLOCK), width), float("-inf"), dtype=q.dtype)
    buf = bufs[key]
    s = buf[:r, :n]
    torch.matmul(q, items.T, out=s)
    if bias is not None:
        s += bias
    k = min(m, n)
    if not grouped:
        top = s.topk(k, dim=1)
        return top.values, top.indices
    g = buf[:r].view(r, GROUP, groups)  # (R, GROUP, G)
    best = g.amax(1).topk(k, dim=1, sorted=False)  # (R, m) the m groups with the largest maxima
    t = best.values.amin(1, keepdim=True)  # (R, 1)
    cand = g.gather(2, best.indices.unsqueeze(1).expand(-1, GROUP, -1)).view(r, GROUP * k)  # slot j*m+i
    rows, slots = (cand >= t).nonzero(as_tuple=True)  # row-major: each row's hits are consecutive
    counts = torch.bincount(rows, minlength=r)  # (R,) >= m unless scores are nan
    if counts.min() < k:  # nan scores: compare false; rank all the kept groups' scores instead
        top = cand.topk(k, dim=1)
        col = best.indices.repeat(1, GROUP) + torch.arange(GROUP).repeat_interleave(k) * groups
        return top.values, col.gather(1, top.indices)
    pos = torch.arange(len(rows)) - (counts.cumsum(0) - counts)[rows]  # place within the row
    width = int(counts.max())
    pad_s = torch.full((r, width), float("-inf"), dtype=q.dtype)
    pad_c = torch.zeros((r, width), dtype=torch.long)
    pad_s[rows, pos] = cand[rows, slots]
    pad_c[rows, pos] = best.indices[rows, slots % k] + (slots // k) * groups  # column of slot j*m+i
    top = pad_s.topk(k, dim=1)
    return top.values, pad_c.gather(1, top.indices)


def augmented(items: torch.Tensor, bias: torch.Tensor | None) -> np.ndarray:
    """(N, D+1) float32 item table [e_j, b_j] so that [q, 1] . [e_j, b_j] = q . e_j + b_j."""
    b = torch.zeros(items.shape[0]) if bias is None else bias
    return torch.cat([items.detach().float(), b.detach().float().unsqueeze(1)], 1).contiguous().numpy()


class IVFIndex:
    """faiss IVF-Flat index over the (bias-augmented) item table, searched for the largest inner product.

    nlist ~ sqrt(N) lists (at most 1024); ``nprobe`` lists scanned per query trade recall for speed. The coarse
    quantizer is trained once (seeded k-means on a sample); ``rebuild`` re-adds a new item table to
    the same lists, which is what a new policy version costs (~1 s at 1M).

    ``l2_transform``: index x' = [x, sqrt(R^2 - |x|^2)] (R = the largest |x|) with L2 lists and search
    [q, 0]: |q' - x'|^2 = |q|^2 + R^2 - 2 q.x, so the nearest in L2 is the largest inner product
    (Bachrach et al. 2014), and the k-means lists are made on a metric where the items' norms (which
    the bias dimension makes very unequal) do not pull every query to the same few lists. Measured on
    the 1M world's reference (188k trained products, top-512, 2 threads, loaded machine): nprobe 128
    of 1024 lists gives recall 0.971 in 0.44 s per 1024 queries against 0.84 in 0.55 s with
    inner-product lists (0.88 at nprobe 64 of 433 lists, the earlier setting).
    """

    def __init__(
        self,
        items: torch.Tensor,
        bias: torch.Tensor | None,
        nlist: int | None = None,
        nprobe: int = 64,
        seed: int = 0,
        l2_transform: bool = False,
        max_nlist: int = 1024,
    ):
        import faiss

        self.l2_transform = l2_transform
        x = self._vectors(items, bias)
        n, d = x.shape
        root = max_nlist if l2_transform else int(math.sqrt(n))  # 1024 lists measured best at 1M
        self.nlist = nlist or max(1, min(n // 39, root, max_nlist))
        if l2_transform:
            quantizer = faiss.IndexFlatL2(d)
            self.index = faiss.IndexIVFFlat(quantizer, d, self.nlist, faiss.METRIC_L2)
        else:
            quantizer = faiss.IndexFlatIP(d)
            self.index = faiss.IndexIVFFlat(quantizer, d, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        rng = np.random.default_rng(seed)
        sample = x if n <= 64 * self.nlist else x[rng.choice(n, 64 * self.nlist, replace=False)]
        self.index.train(sample)
        self.index.add(x)
        self.index.nprobe = min(nprobe, self.nlist)
        self.n = n

    def _vectors(self, items: torch.Tensor, bias: torch.Tensor | None) -> np.ndarray:
        x = augmented(items, bias)
        if self.l2_transform:
            norms = (x.astype(np.float64) ** 2).sum(1)
            self.r2 = float(norms.max())
            x = np.concatenate([x, np.sqrt(self.r2 - norms)[:, None]], 1).astype(np.float32)
        return np.ascontiguousarray(x)

    def rebuild(self, items: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Replace the stored vectors with a new item table (same quantizer)."""
        self.index.reset()
        x = self._vectors(items, bias)
        self.index.add(x)
        self.n = x.shape[0]

    def search(self, queries: torch.Tensor, m: int) -> torch.Tensor:
        """(B, m) long ids by descending inner product with [q, 1]. Slots the index could not fill
        (fewer than m vectors in the probed lists) are padded with -1."""
        return self.search_scores(queries, m)[1]

    def search_scores(self, queries: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, m) float32 inner products q . e_j + b_j, (B, m) long ids), best first; unfilled slots
        are -inf with id -1.

        The scores are read off faiss's distances, not recomputed: with the L2 transform,
        |q' - x'|^2 = |q'|^2 + R^2 - 2 q.x, so q.x = (|q'|^2 + R^2 - d) / 2 (float32 rounding of
        ~1e-5 at R^2 ~ 10^2: enough to rank; the policy scores its candidates exactly afterwards).
        Recomputing them by gathering the M rows and a batched product cost ~10% of a search at 1M.
        """
        q = queries.detach().float()
        parts = [q, torch.ones(len(q), 1)]
        if self.l2_transform:
            parts.append(torch.zeros(len(q), 1))
        dist, ids = self.index.search(torch.cat(parts, 1).contiguous().numpy(), min(m, self.n))
        dist, ids = torch.from_numpy(dist), torch.from_numpy(ids).long()
        if self.l2_transform:
            q_norm = (q * q).sum(1, keepdim=True) + 1.0
            dist = (q_norm + self.r2 - dist) * 0.5
        return dist.masked_fill_(ids < 0, float("-inf")), ids


@dataclass
class RetrievalConfig:
    """How the policy finds its candidates. ``m``: candidates per context; ``kind``: exact, ivf or
    auto (exact up to EXACT_MAX_PRODUCTS products); ``nprobe``: IVF lists scanned per query."""

    m: int = 1024
    kind: str = "auto"
    nprobe: int = 64
    nlist: int | None = None


class Retriever:
    """The candidate step of a policy version: top-M ids per query, exact or from an IVF index.

    Built from the item table (``items`` (N, D), ``bias`` (N,)) and rebuilt by ``refresh`` whenever
    the policy's item table changes (a new or loaded version). Ids from the index that it could not
    fill are replaced by the exact top so that every row holds M distinct valid products.
    """

    def __init__(self, items: torch.Tensor, bias: torch.Tensor | None, cfg: RetrievalConfig | None = None):
        self.cfg = cfg or RetrievalConfig()
        n = items.shape[0]
        self.kind = self.cfg.kind
        if self.kind == "auto":
            self.kind = "exact" if n <= EXACT_MAX_PRODUCTS else "ivf"
        if self.kind not in ("exact", "ivf"):
            raise ValueError(f"policy.retrieval: unknown value {self.kind!r} (expected exact, ivf or auto)")
        self.index: IVFIndex | None = None
        self._workspace: dict = {}  # exact search's score buffers, one search at a time (``_lock``)
        self._lock = threading.Lock()
        self.refresh(items, bias)

    def refresh(self, items: torch.Tensor, bias: torch.Tensor | None) -> None:
        # exact search reads the live table (detach shares storage: always the current weights);
        # the IVF index is a snapshot, so it keeps the table it was built from
        own = (lambda t: t.detach()) if self.kind == "exact" else (lambda t: t.detach().clone())
        self.items = own(items)
        self.bias = None if bias is None else own(bias)
        if self.kind == "ivf":
            self._build_ivf()

    def _build_ivf(self) -> None:
        """Index the products whose embedding is not zero; keep the rest's top-M by bias apart.

        A product with e_j = 0 (never trained: a large policy's output table starts at zero) scores
        exactly its bias for every query, so its best M are one query-independent list. Putting the
        hundreds of thousands of identical zero vectors into the index would waste its lists on them
        (measured: recall 0.74 at 1M with nprobe 64, and 0.95+ once they are kept apart).
        """
        n = self.items.shape[0]
        bias = torch.zeros(n) if self.bias is None else self.bias
        active = self.items.abs().amax(1) > 0
        self.active_ids = active.nonzero().squeeze(1)
        idle = (~active).nonzero().squeeze(1)
        top = bias[idle].topk(min(self.m, len(idle)))
        self.idle_ids, self.idle_scores = idle[top.indices], top.values
        self.index = None
        if len(self.active_ids) > 0:
            self.index = IVFIndex(
                self.items[self.active_ids],
                bias[self.active_ids],
                self.cfg.nlist,
                self.cfg.nprobe,
                l2_transform=True,
            )

    @property
    def m(self) -> int:
        return min(self.cfg.m, self.items.shape[0])

    @torch.no_grad()
    def search(self, queries: torch.Tensor, m: int | None = None) -> torch.Tensor:
        """(B, M) long candidate ids for queries (B, D), best first."""
        return self.search_scored(queries, m)[1]

    @torch.no_grad()
    def search_scored(self, queries: torch.Tensor, m: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, M) logits q . e_j + b_j, (B, M) long ids) of the candidates of queries (B, D), best first.

        The logits are the ones the search ranked by. Exact search reads the live item table, so its
        logits equal ``BannerPolicy.score`` of the same ids up to float summation order (~1e-7) and a
        caller needs no second gather of M rows per query. The IVF index is a snapshot of the table
        when it was built (a version), and its scores are read off faiss's distances (~1e-5): they
        rank candidates; a policy whose weights moved since must score the ids itself.
        """
        m = self.m if m is None else min(m, self.items.shape[0])
        if self.kind == "exact":
            if not self._lock.acquire(blocking=False):  # another thread searches: its own buffers
                return exact_topk(queries, self.items, self.bias, m)
            try:
                return exact_topk(queries, self.items, self.bias, m, self._workspace)
            finally:
                self._lock.release()
        b = len(queries)
        parts_i, parts_s = [self.idle_ids[:m].expand(b, -1)], [self.idle_scores[:m].expand(b, -1)]
        if self.index is not None:
            s, local = self.index.search_scores(queries, m)  # rows of the active table, -1 unfilled
            parts_i.append(self.active_ids[local.clamp_min(0)])
            parts_s.append(s)
        ids, s = torch.cat(parts_i, 1), torch.cat(parts_s, 1)
        best = s.topk(m, dim=1)
        out, out_s = ids.gather(1, best.indices), best.values
        bad = torch.isinf(best.values).any(1)
        if bad.any():  # too few products in the probed lists: exact for those rows
            rows = bad.nonzero().squeeze(1)
            out_s[rows], out[rows] = exact_topk(queries[rows], self.items, self.bias, m)
        return out_s, out


def recall_at_m(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean share of the exact top-M ids (B, M) that ``found`` (B, M') also holds."""
    hit = (
        (found.unsqueeze(2) == exact.unsqueeze(1)).any(1)
        if found.shape[1] * exact.shape[1] <= 1 << 16
        else None
    )
    if hit is None:  # large M: sort-based membership, O(B M log M)
        s = found.sort(1).values
        pos = torch.searchsorted(s, exact).clamp_max(s.shape[1] - 1)
        hit = s.gather(1, pos) == exact
    return hit.float().mean().item()


def recall_with_ties(found_scores: torch.Tensor, exact_scores: torch.Tensor, tol: float = 1e-6) -> float:
    """Tie-aware recall@M: the share of found products (B, M) scoring at least the exact M-th score.

    Equal to ``recall_at_m`` when scores are distinct; where many products tie at the M-th score
    (untrained products at 0) any of them is as good a candidate, which exact-id recall would not count.
    """
    threshold = exact_scores[:, -1:] - tol
    return (found_scores >= threshold).float().mean().item()

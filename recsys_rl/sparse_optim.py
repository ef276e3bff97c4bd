"""Adam for a policy whose item tables get sparse row gradients (large catalogues).

At 10^5-10^6 products a dense Adam step touches all N x D item parameters (three moment updates and a
sqrt each) although an update only moves the few thousand rows its candidates and contexts used. The
item tables (``BannerPolicy.sparse_parameters``) therefore take ``torch.optim.SparseAdam`` (lazy Adam:
moments of a row advance only when the row has a gradient) and the rest plain Adam. On the full path
there are no sparse parameters and this is exactly ``torch.optim.Adam``.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn


class _SparseRows(torch.autograd.Function):
    """weight[ids] whose gradient is built already coalesced (see ``sparse_rows``)."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        order = flat.sort(stable=True)  # stable: each row's gradients are summed in occurrence order
        rows, counts = torch.unique_consecutive(order.values, return_counts=True)
        ctx.save_for_backward(order.indices, rows, counts)
        ctx.weight_shape, ctx.ids_shape = weight.shape, ids.shape
        return weight.index_select(0, flat).view(*ids.shape, weight.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        perm, rows, counts = ctx.saved_tensors
        d = ctx.weight_shape[1]
        sorted_grad = grad.reshape(-1, d).index_select(0, perm)
        slot = torch.repeat_interleave(torch.arange(len(rows)), counts)  # sorted position -> its row
        values = torch.zeros(len(rows), d, dtype=grad.dtype).index_add_(0, slot, sorted_grad)
        g = torch.sparse_coo_tensor(
            rows.unsqueeze(0), values, ctx.weight_shape, is_coalesced=True, check_invariants=False
        )
        return g, None


def sparse_rows(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(*ids.shape, D) rows of weight (N, D), with a sparse row gradient that is coalesced as built.

    The same values and gradient as ``F.embedding(ids, weight, sparse=True)`` followed by
    ``.coalesce()`` (duplicates summed in occurrence order here; coalesce's order is its own, so a
    row used three or more times may differ in the last bit), but the
    gradient is summed by a stable sort of the ids instead of COO coalescing, which for the learner's
    (256, 512) candidate ids at 100k products took 60 ms a step against ~30 ms (1 thread). (Autograd's
    accumulation into ``.grad`` drops the coalesced flag; ``clip_grad_norm``'s coalesce of the unique
    rows then costs ~7 ms.)
    """
    return _SparseRows.apply(weight, ids)


class _SparseScores(torch.autograd.Function):
    """(B, M) dot products of query rows with their candidates' weight rows (see ``sparse_scores``)."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        b, m = ids.shape
        flat = ids.reshape(-1)
        order = flat.sort(stable=True)
        rows, counts = torch.unique_consecutive(order.values, return_counts=True)
        ctx.save_for_backward(query, weight, ids, order.indices, rows, counts)
        return gathered_scores(query, weight, ids)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        query, weight, ids, perm, rows, counts = ctx.saved_tensors
        b, m = ids.shape
        grad = grad.contiguous()
        grad_q = grad_w = None
        if ctx.needs_input_grad[0]:  # sum_m g[b, m] W[ids[b, m]]: one weighted bag per query
            grad_q = F.embedding_bag(ids, weight, per_sample_weights=grad, mode="sum")
        if ctx.needs_input_grad[1]:  # row j: sum over its uses (b, m) of g[b, m] q[b], as (U x B) @ (B x D)
            crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            with warnings.catch_warnings():  # "CSR support is in beta": this product is all it is used for
                warnings.simplefilter("ignore", UserWarning)
                uses = torch.sparse_csr_tensor(
                    crow, perm // m, grad.view(-1)[perm], (len(rows), b), check_invariants=False
                )
            grad_w = torch.sparse_coo_tensor(
                rows.unsqueeze(0), uses @ query, weight.shape, is_coalesced=True, check_invariants=False
            )
        return grad_q, grad_w, None


GATHER_ROWS = 64
"""Queries per block in ``gathered_scores``: 64 x 512 gathered 32-dim rows (4 MB) stay in cache."""


def gathered_scores(query: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, M) dot products query (B, D) . weight[ids] (ids (B, M)), no gradient bookkeeping.

    Bit-identical to ``torch.bmm(weight[ids], query.unsqueeze(2)).squeeze(2)`` (each query's product
    is its own matrix in the batch), computed ``GATHER_ROWS`` queries at a time so that the gathered
    rows are read back from cache: measured for (1024, 512) ids of 32-dim rows at 100k products, one
    thread, 84 ms -> 29 ms (the unblocked gather writes 64 MB out to memory first).
    """
    b, m = ids.shape
    out = torch.empty(b, m, dtype=query.dtype)
    for r0 in range(0, b, GATHER_ROWS):
        block = ids[r0 : r0 + GATHER_ROWS]
        e = weight.index_select(0, block.reshape(-1)).view(len(block), m, weight.shape[1])
        torch.bmm(e, query[r0 : r0 + GATHER_ROWS].unsqueeze(2), out=out[r0 : r0 + GATHER_ROWS].unsqueeze(2))
    return out


def sparse_scores(query: torch.Tensor, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, M) scores query (B, D) . weight[ids] (ids (B, M)), with a sparse row gradient for weight.

    Forward bit-identical to ``torch.bmm(weight[ids], query.unsqueeze(2))``. The backward never
    materialises the (B, M, D) gradient of the gathered rows: the query's gradient is one weighted
    ``embedding_bag`` and each used row's gradient a sparse (rows x queries) @ (queries x D) product.
    Equal to the autograd of the bmm up to float summation order (relative ~1e-7). Measured with the
    learner's (256, 512) candidates of 32-dim rows at 100k products: 52 ms -> 35 ms a step (1 thread).
    """
    return _SparseScores.apply(query, weight, ids)


class MixedAdam:
    """Adam on the dense parameters, SparseAdam on the sparse ones, behind one optimiser interface
        (``param_groups``, ``zero_grad``, ``step``, ``state_dict``, ``load_state_dict``).

        ``sparse_lr`` (default ``lr``): the learning rate of the sparse item tables. Each group keeps its
        starting rate as ``base_lr`` so that a schedule can scale all groups alike (``Learner.set_progress``).
    ``weight_decay``: L2 penalty of the dense Adam only (SparseAdam has none).
    """

    def __init__(
        self,
        module: nn.Module,
        sparse: list[nn.Parameter],
        lr: float,
        sparse_lr: float | None = None,
        weight_decay: float = 0.0,
    ):
        ids = {id(p) for p in sparse}
        dense = [p for p in module.parameters() if id(p) not in ids]
        self.dense = torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay)
        self.sparse = torch.optim.SparseAdam(sparse, lr=sparse_lr or lr) if sparse else None
        self.params = dense + list(sparse)
        for g in self.param_groups:
            g["base_lr"] = g["lr"]

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.dense] + ([self.sparse] if self.sparse else [])

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        if self.sparse is None:  # the plain Adam layout, as checkpoints always had on the full path
            return self.dense.state_dict()
        return {"dense": self.dense.state_dict(), "sparse": self.sparse.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.sparse is None:
            self.dense.load_state_dict(state)
        else:
            self.dense.load_state_dict(state["dense"])
            self.sparse.load_state_dict(state["sparse"])


@torch.no_grad()
def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """``clip_grad_norm_`` that also accepts sparse gradients (their coalesced values count once)."""
    grads = [p.grad for p in params if p.grad is not None]
    for i, g in enumerate(grads):
        if g.is_sparse:
            grads[i] = g.coalesce()
    norms = [torch.linalg.vector_norm(g.values() if g.is_sparse else g) for g in grads]
    if not norms:
        return 0.0
    total = torch.linalg.vector_norm(torch.stack(norms))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p, g in zip([p for p in params if p.grad is not None], grads, strict=True):
        if g.is_sparse:
            p.grad = g * scale
        else:
            g.mul_(scale)
    return float(total)


def clip_gradients(module: nn.Module, opt: MixedAdam, sparse: list[nn.Parameter], max_norm: float) -> None:
    """Clip before ``opt.step()``: the sparse-aware clip when the module has sparse item tables, torch's
    own ``clip_grad_norm_`` otherwise (so full-catalogue runs keep their exact seeded numbers)."""
    if sparse:
        clip_grad_norm(opt.params, max_norm)
    else:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)

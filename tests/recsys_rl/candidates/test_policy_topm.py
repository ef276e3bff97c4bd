import pytest
import torch

from recsys_rl import candidates
from recsys_rl.candidates import IVFIndex, RetrievalConfig, Retriever, exact_topk, recall_at_m


def _table(n, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, generator=g), torch.randn(37, d, generator=g)


def test_exact_topk_matches_brute_force_across_blocks(monkeypatch):
    monkeypatch.setattr(candidates, "ROW_BLOCK", 8)
    monkeypatch.setattr(candidates, "COL_BLOCK", 100)  # many column blocks, last one ragged
    items, bias, q = _table(1234)
    scores, ids = exact_topk(q, items, bias, 50)
    full = q @ items.T + bias
    want = full.topk(50, dim=1)
    assert torch.equal(ids, want.indices)
    assert torch.allclose(scores, want.values)


def test_exact_topk_grouped_first_pass_matches_brute_force(monkeypatch):
    # a block large against m takes the grouped path (group maxima, then the best groups' scores)
    monkeypatch.setattr(candidates, "COL_BLOCK", 3000)  # two blocks, the last one ragged
    items, bias, q = _table(5000)
    scores, ids = exact_topk(q, items, bias, 40)
    want = (q @ items.T + bias).topk(40, dim=1)
    assert torch.equal(ids, want.indices)
    assert torch.allclose(scores, want.values)


def test_exact_topk_caps_m_at_catalogue_size():
    items, bias, q = _table(20)
    _, ids = exact_topk(q, items, bias, 50)
    assert ids.shape == (37, 20)
    assert (ids.sort(1).values == torch.arange(20)).all()


def test_ivf_neighbours_match_exact_search_on_small_catalogue():
    items, bias, q = _table(4000, d=16)
    exact = exact_topk(q, items, bias, 64)[1]
    index = IVFIndex(items, bias, nlist=16, nprobe=16)  # every list probed: exhaustive
    assert torch.equal(index.search(q, 64).sort(1).values, exact.sort(1).values)
    index.index.nprobe = 8
    assert recall_at_m(index.search(q, 64), exact) >= 0.8


def test_ivf_rebuild_follows_a_new_item_table():
    items, bias, q = _table(3000, d=16)
    index = IVFIndex(items, bias, nlist=8, nprobe=8)
    new_bias = bias.clone()
    new_bias[:10] += 100.0  # ten products become everyone's best
    index.rebuild(items, new_bias)
    assert (index.search(q, 10).sort(1).values == torch.arange(10)).all()


def test_retriever_rows_hold_distinct_valid_ids_best_first():
    items, bias, q = _table(3000, d=16)
    r = Retriever(items, bias, RetrievalConfig(m=100, kind="ivf", nprobe=4, nlist=16))
    ids = r.search(q)
    assert ids.shape == (37, 100) and ids.min() >= 0 and ids.max() < 3000
    assert (ids.sort(1).values.diff(1) != 0).all()
    s = (q.unsqueeze(1) * items[ids]).sum(-1) + bias[ids]
    assert (s.diff(1) <= 1e-5).all()


def test_retriever_rejects_unknown_kind():
    items, bias, _ = _table(10)
    with pytest.raises(ValueError, match="policy.retrieval"):
        Retriever(items, bias, RetrievalConfig(kind="hnsw"))


def test_recall_at_m_counts_shared_ids():
    found = torch.tensor([[1, 2, 3, 4]])
    exact = torch.tensor([[4, 3, 9, 8]])
    assert recall_at_m(found, exact) == 0.5
    big = torch.arange(600).unsqueeze(0)
    assert recall_at_m(big, big.flip(1)[:, :300]) == 1.0


def test_recall_with_ties_counts_equally_good_products():
    exact = torch.tensor([[3.0, 2.0, 0.0, 0.0]])
    assert candidates.recall_with_ties(torch.tensor([[3.0, 2.0, 0.0, 0.0]]), exact) == 1.0
    assert candidates.recall_with_ties(torch.tensor([[3.0, 0.0, 0.0, -1.0]]), exact) == 0.75


def test_ivf_retriever_keeps_untrained_products_apart_and_exact():
    items, bias, q = _table(4000, d=16)
    items[::2] = 0.0  # half the catalogue never trained: they score their bias
    bias[::2] *= 3.0  # and some of them beat trained products
    r = Retriever(items, bias, RetrievalConfig(m=80, kind="ivf", nprobe=16, nlist=16))
    assert len(r.active_ids) == 2000 and r.index.n == 2000
    exact = exact_topk(q, items, bias, 80)[1]
    assert torch.equal(r.search(q).sort(1).values, exact.sort(1).values)  # all lists probed: exact


@pytest.mark.parametrize("l2", [False, True])
def test_ivf_l2_transform_finds_the_largest_inner_products(l2):
    # unequal norms (a clustered table, products scaled by up to 4x): where the transform matters
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(20, 16, generator=g)
    items = centres[torch.randint(0, 20, (4000,), generator=g)] + 0.3 * torch.randn(4000, 16, generator=g)
    items *= torch.rand(4000, 1, generator=g) * 3 + 1
    bias, q = torch.randn(4000, generator=g), torch.randn(64, 16, generator=g)
    exact = exact_topk(q, items, bias, 64)[1]
    index = IVFIndex(items, bias, nlist=32, nprobe=32, l2_transform=l2)  # exhaustive: exact order
    assert torch.equal(index.search(q, 64), exact)
    index.index.nprobe = 8
    assert recall_at_m(index.search(q, 64), exact) >= 0.6


def test_ivf_l2_transform_rebuild_follows_a_new_item_table():
    items, bias, q = _table(3000, d=16)
    index = IVFIndex(items, bias, nlist=8, nprobe=8, l2_transform=True)
    new_bias = bias.clone()
    new_bias[:10] += 100.0  # larger norms than any vector the index was built on
    index.rebuild(items, new_bias)
    assert (index.search(q, 10).sort(1).values == torch.arange(10)).all()


@pytest.mark.parametrize("l2", [False, True])
def test_ivf_search_scores_are_the_inner_products_of_the_ids_it_finds(l2):
    # read off faiss's distances (no re-scoring): they must be q . e_j + b_j of the returned ids
    g = torch.Generator().manual_seed(5)
    items = torch.randn(3000, 16, generator=g) * (torch.rand(3000, 1, generator=g) * 3 + 1)
    bias, q = torch.randn(3000, generator=g) * 2, torch.randn(40, 16, generator=g)
    index = IVFIndex(items, bias, nlist=16, nprobe=4, l2_transform=l2)
    scores, ids = index.search_scores(q, 50)
    assert (ids >= 0).all()
    want = torch.bmm(items[ids], q.unsqueeze(2)).squeeze(2) + bias[ids]
    assert torch.allclose(scores, want, atol=1e-4)
    assert (scores[:, :-1] >= scores[:, 1:] - 1e-4).all()  # best first
    # more asked for than the probed lists hold: -inf and id -1 in the unfilled slots
    index.index.nprobe = 1
    scores, ids = index.search_scores(q[:2], 2999)
    assert ((ids < 0) == torch.isinf(scores)).all() and (ids < 0).any()


def test_exact_topk_threshold_pass_keeps_ties_and_reuses_its_workspace(monkeypatch):
    monkeypatch.setattr(candidates, "ROW_BLOCK", 16)
    items, bias, q = _table(6000)
    items[::3] = 0.0  # every third product scores its bias alone, and a tenth of those tie
    bias[::30] = 6.0
    ws: dict = {}
    for rows in (37, 5, 37):  # buffers kept between calls of different sizes
        scores, ids = exact_topk(q[:rows], items, bias, 40, ws)
        want = (q[:rows] @ items.T + bias).topk(40, dim=1)
        assert torch.equal(scores, want.values)  # ties may swap ids, never scores
        assert torch.equal((q[:rows] @ items.T + bias).gather(1, ids), scores)
        assert (ids.sort(1).values.diff(1) != 0).all()
    assert len(ws) == 1


def test_search_scored_gives_the_logits_of_the_ids_it_found():
    items, bias, q = _table(3000, d=16)
    for kind in ("exact", "ivf"):
        r = Retriever(items, bias, RetrievalConfig(m=50, kind=kind, nprobe=4, nlist=16))
        scores, ids = r.search_scored(q)
        assert torch.equal(ids, r.search(q))
        tol = 1e-6 if kind == "exact" else 1e-4  # IVF: read off faiss's distances
        assert torch.allclose(scores, (q.unsqueeze(1) * items[ids]).sum(-1) + bias[ids], atol=tol)

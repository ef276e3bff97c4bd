"""The union of the sources: a fixed-size, de-duplicated, deterministic candidate set."""

import torch

from recsys_rl.candidates.union import membership, union


def brute_union(parts: list[torch.Tensor], width: int) -> list[list[int]]:
    rows = []
    for r in range(parts[0].shape[0]):
        seen: list[int] = []
        for p in parts:
            for x in p[r].tolist():
                if x >= 0 and x not in seen:
                    seen.append(x)
        rows.append(seen[:width])
    return rows


def test_union_keeps_each_products_first_place_drops_pads_and_is_filled_by_the_last_part():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randint(-1, 30, (64, w), generator=g) for w in (5, 9, 3)]
    top = torch.stack([torch.randperm(30, generator=g)[:20] for _ in range(64)])
    got = union([*parts, top], 20)
    assert got.tolist() == brute_union([*parts, top], 20)
    assert got.shape == (64, 20) and (got >= 0).all()
    assert torch.equal(got, union([*parts, top], 20))  # the same context gives the same set


def test_membership_marks_every_source_that_lists_a_candidate():
    ids = torch.tensor([[3, 4, -1, 7]])
    lists = [torch.tensor([[4, 4, -1]]), torch.tensor([[7, 3, 9, 1]]), torch.empty(1, 0, dtype=torch.long)]
    got = membership(ids, lists)
    assert got[0].tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]]

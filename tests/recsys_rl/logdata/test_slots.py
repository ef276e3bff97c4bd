"""Slot-level logs (one row per displayed item): regrouped by key into the same banners, or kept as
position-wise rows that IIPS/DM/DR use and whole-banner IPS/SNIPS refuse; bad rows are named."""

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_rl.config import SimConfig, load_reward
from recsys_rl.logdata.importer import import_logs
from recsys_rl.logdata.mapping import ColumnMapping
from recsys_rl.logdata.parquet import LogFormatError, read_logs
from recsys_rl.ope.marginals import exact_marginals
from recsys_rl.ope.pipeline import evaluate_policy
from recsys_rl.policy import BannerPolicy
from simulator import Simulator
from simulator.behaviour import PopularityBehaviour
from simulator.logged import generate_logs

N, K = 12, 3
SLOT = {
    "layout": "slot",
    "viewed": "viewed",
    "history": "history",
    "items": "item_id",
    "position": "position",
    "position_propensities": "slot_prop",
    "clicks": "click",
    "units": "units",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    sim = Simulator(
        SimConfig(n_products=N, n_categories=3, n_users=200, consideration_size=11, banner_size=K)
    )
    logged = read_logs(generate_logs(sim, 1500, tmp_path_factory.mktemp("ev"), seed=0, progress=False))
    behaviour = PopularityBehaviour(sim.popularity, k=K)
    marg = exact_marginals(behaviour.log_p.numpy()[None, :], K)[0]  # (K, N): context-free logger
    mu = marg[np.arange(K)[None, :], logged.banners.items.numpy()]  # (n, K) each slot's propensity
    return logged, mu


def slot_frame(logged, mu) -> pd.DataFrame:
    """One row per displayed item, in impression order: key, context, item, position, slot propensity."""
    n = len(logged)
    hist = [" ".join(map(str, h[h >= 0].tolist())) for h in logged.contexts.history.numpy()]
    return pd.DataFrame(
        {
            "impression": np.repeat([f"imp-{i}" for i in range(n)], K),
            "viewed": np.repeat(logged.contexts.viewed.numpy(), K),
            "history": np.repeat(hist, K),
            "item_id": logged.banners.items.numpy().reshape(-1),
            "position": np.tile(np.arange(K), n),
            "slot_prop": mu.reshape(-1),
            "banner_prop": np.repeat(np.exp(logged.banners.log_prob.double().numpy()), K),
            "click": logged.outcomes.clicks.numpy().reshape(-1).astype(int),
            "units": logged.outcomes.units.numpy().reshape(-1),
        }
    )


def target_policy():
    torch.manual_seed(3)
    return BannerPolicy(N, 8, 16, banner_size=K).eval()


def test_keyed_slot_rows_regroup_into_the_logged_banners_in_any_row_order(world, tmp_path):
    logged, mu = world
    df = slot_frame(logged, mu).sample(frac=1.0, random_state=0)  # rows of a banner scattered
    df.to_csv(tmp_path / "slots.csv", index=False)
    m = ColumnMapping(**SLOT, impression_id="impression", propensity="banner_prop")
    imp = import_logs(tmp_path / "slots.csv", N, m)
    order = np.argsort([int(x.split("-")[1]) for x in pd.unique(df["impression"])])
    b = imp.batch[torch.from_numpy(order)]
    assert not imp.slot_rows and imp.banner_size == K and imp.has_banner_propensity
    assert torch.equal(b.banners.items, logged.banners.items)
    assert torch.equal(b.contexts.viewed, logged.contexts.viewed)
    assert torch.equal(b.contexts.history, logged.contexts.history)
    assert torch.equal(b.outcomes.clicks, logged.outcomes.clicks)
    np.testing.assert_allclose(imp.behaviour_marginals[order], mu)
    assert torch.allclose(b.banners.log_prob, logged.banners.log_prob, atol=1e-5)


def test_unkeyed_slot_rows_give_the_banner_iips_and_refuse_whole_banner_weights(world, tmp_path):
    logged, mu = world
    slot_frame(logged, mu).to_csv(tmp_path / "slots.csv", index=False)
    rows = import_logs(tmp_path / "slots.csv", N, ColumnMapping(**SLOT))
    keyed = import_logs(tmp_path / "slots.csv", N, ColumnMapping(**SLOT, impression_id="impression"))
    assert rows.slot_rows and rows.batch.banners.items.shape == (len(logged) * K, 1) and rows.banner_size == K
    assert not rows.has_banner_propensity
    scheme = load_reward("graded")
    policy = target_policy()
    est_rows = evaluate_policy(
        rows.batch,
        policy.logits,
        scheme,
        ["iips", "dm", "dr"],
        behaviour_marginals=rows.behaviour_marginals,
        positions=rows.positions,
        banner_size=rows.banner_size,
    ).estimates
    est_banners = evaluate_policy(
        keyed.batch, policy.logits, scheme, ["iips", "dr"], behaviour_marginals=keyed.behaviour_marginals
    ).estimates
    # the catalogue is small enough for exact target marginals: slot rows and banners give the same IIPS
    assert est_rows["iips"].value == pytest.approx(est_banners["iips"].value, rel=1e-9)
    assert abs(est_rows["dr"].value - est_banners["dr"].value) < 3 * est_banners["dr"].std_err
    assert np.isfinite(est_rows["dm"].value)
    for name in ("ips", "snips"):
        with pytest.raises(ValueError, match="weight whole banners.*no impression key"):
            evaluate_policy(
                rows.batch,
                policy.logits,
                scheme,
                [name],
                behaviour_marginals=rows.behaviour_marginals,
                positions=rows.positions,
                banner_size=K,
            )


def test_slot_rows_of_the_logging_policy_estimate_its_own_value(world, tmp_path):
    """Target = the logger: IIPS weights are 1 and the estimate is the on-policy mean per banner."""
    logged, mu = world
    slot_frame(logged, mu).to_csv(tmp_path / "slots.csv", index=False)
    rows = import_logs(tmp_path / "slots.csv", N, ColumnMapping(**SLOT))
    behaviour = PopularityBehaviour(
        Simulator(
            SimConfig(n_products=N, n_categories=3, n_users=200, consideration_size=11, banner_size=K)
        ).popularity,
        k=K,
    )
    logger = lambda ctx: behaviour.log_p.float().expand(len(ctx), -1)  # noqa: E731
    est = evaluate_policy(
        rows.batch,
        logger,
        load_reward("ctr"),
        ["iips"],
        behaviour_marginals=rows.behaviour_marginals,
        positions=rows.positions,
        banner_size=K,
    ).estimates["iips"]
    on_policy = logged.outcomes.clicks.sum(1).double().mean().item()
    assert est.value == pytest.approx(on_policy, rel=1e-6)


@pytest.mark.parametrize(
    "change, fields, message",
    [
        (
            lambda d: d.assign(position=d["position"].where(d.index != 7, 5)),
            {"banner_size": K},
            r"position: row 7 \(line 9\): position 5 is outside \[0, 3\)",
        ),
        (
            lambda d: d.assign(slot_prop=d["slot_prop"].where(d.index != 4, 0.0)),
            {},
            r"slot_prop: row 4 \(line 6\): propensity 0.0 is not in \(0, 1\]",
        ),
        (
            lambda d: d.assign(click=d["click"].where(d.index != 2, 3)),
            {},
            r"click: row 2 \(line 4\): click must be 0 or 1",
        ),
        (
            lambda d: d.drop(index=5).reset_index(drop=True),
            {"impression_id": "impression"},
            r"impression: row 3 \(line 5\): impression 'imp-1' has 2 rows, a banner has 3",
        ),
        (
            lambda d: d.assign(position=d["position"].where(d.index != 4, 0)),
            {"impression_id": "impression"},
            r"position: row 4 \(line 6\): impression 'imp-1' has two rows at position 0",
        ),
        (
            lambda d: d.assign(viewed=d["viewed"].where(d.index != 5, (d["viewed"] + 1) % N)),
            {"impression_id": "impression"},
            r"viewed: row 5 \(line 7\): impression 'imp-1': differs from the banner's first row 3",
        ),
        (lambda d: d.drop(columns=["slot_prop"]), {}, r"slot_prop: missing column"),
    ],
)
def test_bad_slot_rows_are_named_by_file_row_and_column(world, tmp_path, change, fields, message):
    logged, mu = world
    change(slot_frame(logged[:20], mu[:20])).to_csv(tmp_path / "slots.csv", index=False)
    with pytest.raises(LogFormatError, match=message) as e:
        import_logs(tmp_path / "slots.csv", N, ColumnMapping(**{**SLOT, **fields}))
    assert str(e.value).startswith(str(tmp_path / "slots.csv"))


def test_slot_mapping_is_checked_naming_the_field():
    with pytest.raises(ValueError, match="position: layout slot needs"):
        ColumnMapping(**{**SLOT, "position": None})
    with pytest.raises(ValueError, match="items: layout slot: name one column"):
        ColumnMapping(**{**SLOT, "items": ["a", "b"]})
    with pytest.raises(ValueError, match="needs impression_id to regroup"):
        ColumnMapping(**SLOT, propensity="p")
    with pytest.raises(ValueError, match="only for layout: slot"):
        ColumnMapping(viewed="v", items=["a"], propensity="p", clicks=["c"], position="pos")

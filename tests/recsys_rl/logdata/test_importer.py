"""Log import: event-schema and mapped layouts read back exactly; every bad row is named by row and column."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from recsys_rl.config import ConfigError, SimConfig, load_reward
from recsys_rl.logdata.importer import import_logs
from recsys_rl.logdata.mapping import ColumnMapping, load_mapping
from recsys_rl.logdata.parquet import LogFormatError, read_logs
from simulator import Simulator
from simulator.logged import generate_logs

N_PRODUCTS = 20
ITEMS = [f"item_{k}" for k in range(5)]
CLICKS = [f"click_{k}" for k in range(5)]
UNITS = [f"units_{k}" for k in range(5)]
REVENUE = [f"revenue_{k}" for k in range(5)]
PROPS = [f"prop_{k}" for k in range(5)]
FLAT = {
    "impression_id": "impression",
    "viewed": "viewed",
    "history": "history",
    "items": ITEMS,
    "propensity": "prop",
    "clicks": CLICKS,
    "units": UNITS,
    "revenue": REVENUE,
}


@pytest.fixture(scope="module")
def event_dir(tmp_path_factory):
    sim = Simulator(SimConfig(n_products=N_PRODUCTS, n_categories=3, n_users=100, consideration_size=12))
    return generate_logs(sim, 600, tmp_path_factory.mktemp("events"), seed=0, progress=False)


@pytest.fixture(scope="module")
def logged(event_dir):
    return read_logs(event_dir)


def flat_frame(logged, history_as_text: bool = True) -> pd.DataFrame:
    """One row per impression: viewed, history, item_k, click_k, units_k, revenue_k, prop."""
    h = logged.contexts.history.numpy()
    hist = [row[row >= 0].tolist() for row in h]
    df = pd.DataFrame(
        {"impression": [f"imp-{i}" for i in range(len(h))], "viewed": logged.contexts.viewed.numpy()}
    )
    df["history"] = [" ".join(map(str, x)) for x in hist] if history_as_text else hist
    for name, t in (
        (ITEMS, logged.banners.items),
        (CLICKS, logged.outcomes.clicks.int()),
        (UNITS, logged.outcomes.units),
        (REVENUE, logged.outcomes.revenue),
    ):
        for k, col in enumerate(name):
            df[col] = t[:, k].numpy()
    df["prop"] = np.exp(logged.banners.log_prob.double().numpy())
    return df


def write_mapping(path, **fields) -> str:
    path.write_text(yaml.safe_dump(fields))
    return str(path)


def assert_same(a, b, log_prob_atol=0.0):
    assert torch.equal(a.contexts.viewed, b.contexts.viewed)
    assert torch.equal(a.contexts.history, b.contexts.history)
    assert torch.equal(a.banners.items, b.banners.items)
    assert torch.allclose(a.banners.log_prob, b.banners.log_prob, atol=log_prob_atol, rtol=0)
    assert torch.equal(a.outcomes.clicks, b.outcomes.clicks)
    assert torch.equal(a.outcomes.units, b.outcomes.units)
    assert torch.allclose(a.outcomes.revenue, b.outcomes.revenue)


def test_event_schema_directory_reads_exactly_like_read_logs(event_dir, logged):
    imported = import_logs(event_dir, N_PRODUCTS)
    assert_same(imported.batch, logged)
    assert imported.has_banner_propensity and imported.behaviour_marginals is None
    assert imported.outcomes == {"clicks", "units", "revenue"}


def test_event_schema_as_csv_reads_like_the_parquet(event_dir, logged, tmp_path):
    imp = pq.read_table(event_dir / "impressions.parquet").to_pandas()
    imp["history"] = imp["history"].map(lambda h: " ".join(map(str, h)))
    imp["items"] = imp["items"].map(lambda h: "[" + ", ".join(map(str, h)) + "]")
    imp.to_csv(tmp_path / "impressions.csv", index=False)
    pq.read_table(event_dir / "feedback.parquet").to_pandas().to_csv(tmp_path / "feedback.csv", index=False)
    assert_same(import_logs(tmp_path, N_PRODUCTS).batch, logged, log_prob_atol=1e-6)


def test_flat_csv_with_a_mapping_round_trips(logged, tmp_path):
    flat_frame(logged).to_csv(tmp_path / "flat.csv", index=False)
    mapping = write_mapping(tmp_path / "map.yaml", **FLAT)
    imported = import_logs(tmp_path / "flat.csv", N_PRODUCTS, mapping)
    assert_same(imported.batch, logged, log_prob_atol=1e-6)
    assert imported.outcomes == {"clicks", "units", "revenue"}


def test_flat_parquet_with_list_columns_and_log_propensity_round_trips(logged, tmp_path):
    df = flat_frame(logged, history_as_text=False)
    df["logp"] = logged.banners.log_prob.double().numpy()
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "flat.parquet")
    fields = {**FLAT, "log_propensity": "logp", "propensity": None}
    imported = import_logs(tmp_path / "flat.parquet", N_PRODUCTS, ColumnMapping(**fields))
    assert_same(imported.batch, logged)


def test_per_position_propensities_replace_the_banner_propensity(logged, tmp_path):
    df = flat_frame(logged)
    marg = np.random.default_rng(0).uniform(0.01, 1.0, (len(df), 5))
    for k, col in enumerate(PROPS):
        df[col] = marg[:, k]
    df.to_csv(tmp_path / "flat.csv", index=False)
    fields = {**FLAT, "propensity": None, "position_propensities": PROPS}
    imported = import_logs(tmp_path / "flat.csv", N_PRODUCTS, ColumnMapping(**fields))
    assert not imported.has_banner_propensity and torch.isnan(imported.batch.banners.log_prob).all()
    np.testing.assert_allclose(imported.behaviour_marginals, marg)


def test_clicks_only_log_says_which_rewards_it_cannot_compute(logged, tmp_path):
    flat_frame(logged).drop(columns=UNITS + REVENUE).to_csv(tmp_path / "flat.csv", index=False)
    fields = {k: v for k, v in FLAT.items() if k not in ("units", "revenue")}
    imported = import_logs(tmp_path / "flat.csv", N_PRODUCTS, ColumnMapping(**fields))
    assert imported.outcomes == {"clicks"}
    assert imported.batch.outcomes.units.sum() == 0
    assert imported.unobserved(load_reward("ctr")) == []
    assert imported.unobserved(load_reward("graded")) == ["units"]
    assert imported.unobserved(load_reward("revenue")) == ["revenue"]


def _set(df, row, col, value):
    df[col] = df[col].astype(object)
    df.loc[row, col] = value
    return df


BAD_FLAT = [
    ("missing propensity", lambda df: _set(df, 7, "prop", None), "prop: row 7 (line 9): missing propensity"),
    (
        "zero propensity",
        lambda df: _set(df, 3, "prop", 0.0),
        "prop: row 3 (line 5): propensity 0.0 is not in (0, 1]",
    ),
    (
        "propensity above 1",
        lambda df: _set(df, 11, "prop", 1.5),
        "prop: row 11 (line 13): propensity 1.5 is not in",
    ),
    (
        "unknown product",
        lambda df: _set(df, 4, "item_3", N_PRODUCTS),
        "item_3: row 4 (line 6): product id 20 is outside [0, 20)",
    ),
    (
        "negative product",
        lambda df: _set(df, 9, "viewed", -3),
        "viewed: row 9 (line 11): product id -3 is outside",
    ),
    (
        "repeated product",
        lambda df: _set(df, 5, "item_2", df.loc[5, "item_0"]),
        "item_2: row 5 (line 7): product",
    ),
    (
        "history too long",
        lambda df: _set(df, 6, "history", " ".join(["1"] * 11)),
        "history: row 6 (line 8): 11 past purchases, at most 10",
    ),
    (
        "unknown history product",
        lambda df: _set(df, 2, "history", "1 2 99"),
        "history: row 2 (line 4): product id 99",
    ),
    (
        "text product id",
        lambda df: _set(df, 8, "item_1", "abc"),
        "item_1: row 8 (line 10): 'abc' is not a number",
    ),
    (
        "fractional product id",
        lambda df: _set(df, 8, "item_1", 2.5),
        "item_1: row 8 (line 10): 2.5 is not an integer id",
    ),
    (
        "click not 0/1",
        lambda df: _set(df, 12, "click_4", 2),
        "click_4: row 12 (line 14): click must be 0 or 1",
    ),
    (
        "duplicate impression id",
        lambda df: _set(df, 9, "impression", "imp-2"),
        "impression: row 9 (line 11): impression id 'imp-2' appears more than once",
    ),
    (
        "missing column",
        lambda df: df.drop(columns=["item_4"]),
        "item_4: missing column (mapping field items)",
    ),
]


@pytest.mark.parametrize("case, mutate, message", BAD_FLAT, ids=[c[0] for c in BAD_FLAT])
def test_bad_flat_rows_are_rejected_naming_row_and_column(logged, tmp_path, case, mutate, message):
    mutate(flat_frame(logged)).to_csv(tmp_path / "flat.csv", index=False)
    with pytest.raises(LogFormatError) as e:
        import_logs(tmp_path / "flat.csv", N_PRODUCTS, ColumnMapping(**FLAT))
    assert str(e.value).startswith(f"{tmp_path / 'flat.csv'}: ")
    assert message in str(e.value)


def test_out_of_range_position_propensity_names_its_column(logged, tmp_path):
    df = flat_frame(logged)
    for col in PROPS:
        df[col] = 0.5
    df.loc[10, "prop_2"] = -0.1
    df.to_csv(tmp_path / "flat.csv", index=False)
    with pytest.raises(
        LogFormatError, match=r"prop_2: row 10 \(line 12\): propensity -0.1 is not in \(0, 1\]"
    ):
        import_logs(
            tmp_path / "flat.csv", N_PRODUCTS, ColumnMapping(**{**FLAT, "position_propensities": PROPS})
        )


def _rewrite(path, name, fn):
    table = pq.read_table(path / name)
    pq.write_table(fn(table.to_pandas()).pipe(pa.Table.from_pandas, preserve_index=False), path / name)


def _copy_events(src, dst):
    for name in ("impressions.parquet", "feedback.parquet"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_event_schema_errors_name_the_file_row_and_column(event_dir, tmp_path):
    d = _copy_events(event_dir, tmp_path)
    _rewrite(d, "impressions.parquet", lambda df: _set(df, 4, "propensity", 2.0))
    with pytest.raises(
        LogFormatError, match=r"impressions.parquet: propensity: row 4: propensity 2.0 is not in"
    ):
        import_logs(d, N_PRODUCTS)


def test_event_schema_history_longer_than_ten_is_rejected(event_dir, tmp_path):
    d = _copy_events(event_dir, tmp_path)
    _rewrite(d, "impressions.parquet", lambda df: _set(df, 3, "history", list(range(12))))
    with pytest.raises(LogFormatError, match=r"history: row 3: 12 past purchases, at most 10"):
        import_logs(d, N_PRODUCTS)


def test_feedback_for_an_unknown_impression_names_the_feedback_row(event_dir, tmp_path):
    d = _copy_events(event_dir, tmp_path)
    _rewrite(d, "feedback.parquet", lambda df: _set(df, 2, "impression_id", "nope"))
    with pytest.raises(
        LogFormatError, match=r"feedback.parquet: impression_id: row 2: impression id 'nope' is not in"
    ):
        import_logs(d, N_PRODUCTS)


def test_feedback_at_the_wrong_product_is_rejected(event_dir, tmp_path):
    d = _copy_events(event_dir, tmp_path)
    _rewrite(d, "feedback.parquet", lambda df: _set(df, 0, "position", (df.loc[0, "position"] + 1) % 5))
    with pytest.raises(
        LogFormatError, match=r"feedback.parquet: product_id: row 0: product \d+ is not at position"
    ):
        import_logs(d, N_PRODUCTS)


def test_catalogue_size_bounds_the_product_ids(event_dir):
    with pytest.raises(LogFormatError, match=r"is outside \[0, 5\)"):
        import_logs(event_dir, 5)


def test_a_directory_without_logs_or_a_mapping_is_rejected(tmp_path):
    with pytest.raises(LogFormatError, match="no impressions.parquet"):
        import_logs(tmp_path, N_PRODUCTS)
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(LogFormatError, match="not a log directory"):
        import_logs(tmp_path / "x.csv", N_PRODUCTS)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({**FLAT, "items": ITEMS[:4]}, "clicks: needs 4 column names, one per banner position"),
        ({**FLAT, "items": [f"i{k}" for k in range(11)]}, "items: Value error, needs 1 to 10 column names"),
        ({**FLAT, "propensity": None}, "give propensity, log_propensity or position_propensities"),
        ({**FLAT, "clicks": None, "units": None, "revenue": None}, "give exactly one of clicks"),
        ({**FLAT, "colour": "x"}, "colour: unknown key"),
    ],
)
def test_bad_mapping_files_are_config_errors_naming_the_field(tmp_path, fields, message):
    path = write_mapping(tmp_path / "map.yaml", **fields)
    with pytest.raises(ConfigError) as e:
        import_logs(tmp_path, N_PRODUCTS, path)
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_the_example_mapping_in_configs_is_valid():
    m = load_mapping(Path(__file__).resolve().parents[3] / "configs" / "mappings" / "flat.yaml")
    assert m.items == ITEMS and m.clicks == CLICKS and m.propensity == "prop"


@pytest.mark.parametrize("k", [3, 8])
def test_banners_of_any_size_import_from_the_event_schema_and_a_flat_mapping(tmp_path, k):
    sim = Simulator(
        SimConfig(n_products=N_PRODUCTS, n_categories=3, n_users=100, consideration_size=12, banner_size=k)
    )
    event_dir = generate_logs(sim, 200, tmp_path / "events", seed=0, progress=False)
    logged = read_logs(event_dir)
    assert logged.banners.items.shape == (200, k)
    assert_same(import_logs(event_dir, N_PRODUCTS).batch, logged)
    cols = {name: [f"{name}_{j}" for j in range(k)] for name in ("item", "click", "units", "revenue")}
    df = pd.DataFrame(
        {
            "impression": [f"i{j}" for j in range(200)],
            "viewed": logged.contexts.viewed.numpy(),
            "history": [" ".join(map(str, h[h >= 0].tolist())) for h in logged.contexts.history.numpy()],
            "prop": np.exp(logged.banners.log_prob.double().numpy()),
        }
    )
    for name, t in (
        ("item", logged.banners.items),
        ("click", logged.outcomes.clicks.int()),
        ("units", logged.outcomes.units),
        ("revenue", logged.outcomes.revenue),
    ):
        for j, c in enumerate(cols[name]):
            df[c] = t[:, j].numpy()
    df.to_csv(tmp_path / "flat.csv", index=False)
    fields = {
        **FLAT,
        "items": cols["item"],
        "clicks": cols["click"],
        "units": cols["units"],
        "revenue": cols["revenue"],
    }
    imported = import_logs(tmp_path / "flat.csv", N_PRODUCTS, ColumnMapping(**fields))
    assert_same(imported.batch, logged, log_prob_atol=1e-6)
    # a row whose list column holds another number of products is named
    df["items"] = [" ".join(map(str, r)) for r in logged.banners.items.tolist()]
    df.loc[4, "items"] = " ".join(map(str, range(k - 1)))
    df.to_csv(tmp_path / "list.csv", index=False)
    with pytest.raises(LogFormatError, match=rf"items: row 4 \(line 6\): has {k - 1} entries, expected {k}"):
        import_logs(tmp_path / "list.csv", N_PRODUCTS, ColumnMapping(**{**fields, "items": "items"}))

"""Parquet logs: exact round trip, all-or-nothing writes, and errors that name the file and column."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recsys_rl.logdata.parquet import (
    FEEDBACK_FILE,
    IMPRESSIONS_FILE,
    LogFormatError,
    LogWriter,
    read_logs,
    write_logs,
)
from recsys_rl.records import PAD, BannerBatch, ContextBatch, OutcomeBatch


def _batch(n: int = 300, n_products: int = 40, seed: int = 0):
    """A hand-made batch: random distinct banners, PAD-tailed histories, sparse clicks and purchases."""
    g = torch.Generator().manual_seed(seed)
    items = torch.rand(n, n_products, generator=g).argsort(1)[:, :5]
    history = torch.randint(0, n_products, (n, 10), generator=g)
    lengths = torch.randint(0, 11, (n, 1), generator=g)
    history = history.masked_fill(torch.arange(10) >= lengths, PAD)
    contexts = ContextBatch(torch.randint(0, n_products, (n,), generator=g), history)
    banners = BannerBatch(items, -20 * torch.rand(n, generator=g))
    clicks = (torch.rand(n, 5, generator=g) < 0.3).float()
    units = clicks * (torch.rand(n, 5, generator=g) < 0.4) * torch.randint(1, 4, (n, 5), generator=g)
    prices = 1 + 50 * torch.rand(n_products, generator=g)
    outcomes = OutcomeBatch(clicks, units.float(), units.float() * prices[items])
    return contexts, banners, outcomes, prices


def _write(path, n=300, seed=0, **kw):
    contexts, banners, outcomes, prices = _batch(n, seed=seed)
    args = dict(
        contexts=contexts,
        banners=banners,
        outcomes=outcomes,
        prices=prices,
        user_ids=torch.arange(n) * 3,
        timestamps=1000.0 + torch.arange(n, dtype=torch.float64),
        policy_version="test-v1",
        id_prefix="t",
    )
    args.update(kw)
    write_logs(path, **args)
    return contexts, banners, outcomes


def test_write_then_read_gives_back_identical_tensors(tmp_path):
    contexts, banners, outcomes = _write(tmp_path)
    logged = read_logs(tmp_path)
    assert torch.equal(logged.contexts.viewed, contexts.viewed)
    assert torch.equal(logged.contexts.history, contexts.history)
    assert torch.equal(logged.banners.items, banners.items)
    assert torch.equal(logged.banners.log_prob, banners.log_prob)
    assert torch.equal(logged.outcomes.clicks, outcomes.clicks)
    assert torch.equal(logged.outcomes.units, outcomes.units)
    assert torch.equal(logged.outcomes.revenue, outcomes.revenue)


def test_written_rows_follow_the_event_schema(tmp_path):
    contexts, banners, outcomes = _write(tmp_path)
    imp = pq.read_table(tmp_path / IMPRESSIONS_FILE).to_pandas()
    fb = pq.read_table(tmp_path / FEEDBACK_FILE).to_pandas()
    assert imp["impression_id"].tolist()[:2] == ["t-0", "t-1"]
    assert imp["propensity"].to_numpy() == pytest.approx(banners.log_prob.double().exp().numpy())
    assert list(imp["history"].iloc[0]) == [h for h in contexts.history[0].tolist() if h != PAD]
    assert (fb["type"] == "click").sum() == outcomes.clicks.sum()
    assert (fb["type"] == "purchase").sum() == (outcomes.units > 0).sum()
    assert fb["event_id"].is_unique
    buys = fb[fb["type"] == "purchase"]
    assert (buys["units"] >= 1).all() and (buys["price"] > 0).all()
    assert (fb.loc[fb["type"] == "click", "units"] == 0).all()
    ts = imp.set_index("impression_id")["timestamp"]
    assert (fb["timestamp"].to_numpy() > ts[fb["impression_id"]].to_numpy()).all()


def test_streamed_batches_continue_ids_and_read_as_one(tmp_path):
    a, b = _batch(100, seed=1), _batch(50, seed=2)
    with LogWriter(tmp_path, policy_version="v", id_prefix="s") as w:
        for i, (c, bn, o, p) in enumerate([a, b]):
            w.write(
                contexts=c,
                banners=bn,
                outcomes=o,
                prices=p,
                user_ids=torch.zeros(len(bn), dtype=torch.long),
                timestamps=torch.full((len(bn),), float(i)),
            )
    logged = read_logs(tmp_path)
    assert len(logged) == 150
    assert torch.equal(logged.banners.items[100:], b[1].items)
    assert torch.equal(logged.outcomes.units[100:], b[2].units)
    assert pq.read_table(tmp_path / IMPRESSIONS_FILE).column("impression_id")[149].as_py() == "s-149"


def test_a_failed_write_leaves_the_previous_log_untouched(tmp_path):
    _write(tmp_path, n=20, seed=5)
    before = read_logs(tmp_path)
    c, bn, o, p = _batch(30)
    with pytest.raises(RuntimeError), LogWriter(tmp_path, policy_version="v", id_prefix="x") as w:
        w.write(
            contexts=c,
            banners=bn,
            outcomes=o,
            prices=p,
            user_ids=torch.zeros(30, dtype=torch.long),
            timestamps=torch.zeros(30),
        )
        raise RuntimeError("crash mid-way")
    assert sorted(x.name for x in tmp_path.iterdir()) == [FEEDBACK_FILE, IMPRESSIONS_FILE]
    assert torch.equal(read_logs(tmp_path).banners.items, before.banners.items)


def test_missing_file_is_named(tmp_path):
    _write(tmp_path)
    (tmp_path / FEEDBACK_FILE).unlink()
    with pytest.raises(LogFormatError, match=f"{FEEDBACK_FILE}: file not found"):
        read_logs(tmp_path)
    with pytest.raises(LogFormatError, match="not a log directory"):
        read_logs(tmp_path / "nowhere")


@pytest.mark.parametrize("file,column", [(IMPRESSIONS_FILE, "log_propensity"), (FEEDBACK_FILE, "position")])
def test_missing_column_names_file_and_column(tmp_path, file, column):
    _write(tmp_path)
    table = pq.read_table(tmp_path / file)
    pq.write_table(table.drop_columns([column]), tmp_path / file)
    with pytest.raises(LogFormatError, match=f"{file}: {column}: missing column"):
        read_logs(tmp_path)


def test_wrong_type_names_the_column(tmp_path):
    _write(tmp_path)
    table = pq.read_table(tmp_path / IMPRESSIONS_FILE)
    i = table.column_names.index("viewed")
    table = table.set_column(i, "viewed", pa.array(["x"] * table.num_rows))
    pq.write_table(table, tmp_path / IMPRESSIONS_FILE)
    with pytest.raises(LogFormatError, match=f"{IMPRESSIONS_FILE}: viewed: expected int64"):
        read_logs(tmp_path)


def test_history_longer_than_ten_is_rejected(tmp_path):
    _write(tmp_path)
    table = pq.read_table(tmp_path / IMPRESSIONS_FILE)
    i = table.column_names.index("history")
    table = table.set_column(i, "history", pa.array([list(range(11))] * table.num_rows, pa.list_(pa.int64())))
    pq.write_table(table, tmp_path / IMPRESSIONS_FILE)
    with pytest.raises(LogFormatError, match="history: a row has 11 entries"):
        read_logs(tmp_path)


def test_feedback_for_unknown_impression_is_rejected(tmp_path):
    _write(tmp_path)
    table = pq.read_table(tmp_path / FEEDBACK_FILE)
    ids = table.column("impression_id").to_pylist()
    ids[0] = "nope-1"
    table = table.set_column(table.column_names.index("impression_id"), "impression_id", pa.array(ids))
    pq.write_table(table, tmp_path / FEEDBACK_FILE)
    with pytest.raises(LogFormatError, match=f"{FEEDBACK_FILE}: impression_id: 'nope-1'"):
        read_logs(tmp_path)


def test_repeated_feedback_events_count_once(tmp_path):
    _, _, outcomes = _write(tmp_path)
    table = pq.read_table(tmp_path / FEEDBACK_FILE)
    pq.write_table(pa.concat_tables([table, table]), tmp_path / FEEDBACK_FILE)
    assert torch.equal(read_logs(tmp_path).outcomes.units, outcomes.units)


def test_history_with_pad_in_the_middle_is_refused_on_write(tmp_path):
    contexts, banners, outcomes, prices = _batch(5)
    contexts.history[0] = torch.tensor([1, PAD, 2, PAD, PAD, PAD, PAD, PAD, PAD, PAD])
    with pytest.raises(ValueError, match="history"):
        write_logs(
            tmp_path,
            contexts=contexts,
            banners=banners,
            outcomes=outcomes,
            prices=prices,
            user_ids=torch.zeros(5, dtype=torch.long),
            timestamps=torch.zeros(5),
            policy_version="v",
            id_prefix="p",
        )
    assert list(tmp_path.iterdir()) == []


def test_a_directory_without_a_log_or_shards_is_named(tmp_path):
    (tmp_path / "shard-notes.txt").write_text("not a shard")
    with pytest.raises(LogFormatError, match=r"not a log directory .* shard-\* directories"):
        read_logs(tmp_path)


def test_a_bad_shard_is_reported_with_the_log(tmp_path):
    (tmp_path / "shard-00000").mkdir()
    pq.write_table(pa.table({"x": [1]}), tmp_path / "shard-00000" / "impressions.parquet")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "shard-00000" / "feedback.parquet")
    with pytest.raises(LogFormatError, match="impression_id: missing column"):
        read_logs(tmp_path)

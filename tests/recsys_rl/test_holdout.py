"""The held-out split of the logs path: no training step sees its rows, and the figures on it are honest."""

import dataclasses

import numpy as np
import pytest
import torch

from recsys_rl.config import load_reward
from recsys_rl.finetune.logs import offline_finetune
from recsys_rl.holdout import (
    Split,
    greedy_value,
    heldout_value,
    logger_value,
    runaway_warning,
    split_logs,
    time_split,
)
from recsys_rl.jobs.offline import BestCheck
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.ope.estimate import Estimate
from recsys_rl.records import LoggedBatch, OutcomeBatch
from recsys_rl.reference import fit_reference
from recsys_rl.rewards import position_rewards, reward
from tests.recsys_rl.helpers import BASELINE, POLICY, small_logs_dir, small_train

SCHEME = load_reward("graded")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    return read_logs(small_logs_dir(str(tmp_path_factory.mktemp("holdout"))))


def _scramble(logs: LoggedBatch, rows: torch.Tensor) -> LoggedBatch:
    """The same logs with every outcome of ``rows`` replaced: clicks flipped, purchases dropped."""
    out = logs.outcomes
    clicks = out.clicks.clone()
    clicks[rows] = 1 - clicks[rows]
    units, revenue = out.units.clone(), out.revenue.clone()
    units[rows], revenue[rows] = 0, 0
    return LoggedBatch(logs.contexts, logs.banners, OutcomeBatch(clicks, units, revenue))


def test_time_split_holds_out_the_latest_rows_by_timestamp():
    t = torch.tensor([5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 0.0])
    split = time_split(10, 0.3, t)
    assert sorted(split.holdout_rows.tolist()) == [2, 4, 6]  # timestamps 9, 7, 8
    assert sorted(split.train_rows.tolist() + split.holdout_rows.tolist()) == list(range(10))
    assert t[split.train_rows].max() < t[split.holdout_rows].min()
    assert time_split(10, 0.2).holdout_rows.tolist() == [8, 9]  # no timestamps: row order is time order


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.0), (10, 1.0), (3, 0.9)])
def test_time_split_refuses_an_empty_part(n, fraction):
    with pytest.raises(ValueError, match="baseline.holdout_fraction"):
        time_split(n, fraction)


def test_no_training_step_sees_the_held_out_rows(logs):
    split = time_split(len(logs), 0.2)
    train_ids, held_ids = set(split.train_rows.tolist()), set(split.holdout_rows.tolist())
    assert not train_ids & held_ids and len(train_ids | held_ids) == len(logs)
    assert min(held_ids) == max(train_ids) + 1  # the later rows
    cfg = BASELINE.model_copy(update={"epochs": 2, "patience": 0})
    tcfg = small_train(total_impressions=8192, minibatch_size=512)

    def run(batch: LoggedBatch):
        train, held = split_logs(batch, split)
        ref = fit_reference(train, held, SCHEME, 200, POLICY, cfg, 0, progress=False).policy
        _, history = offline_finetune(
            ref, train, SCHEME, tcfg, 0, progress=False, on_check=BestCheck(held, SCHEME, 0), checks=4
        )
        return ref, [h["loss"] for h in history]

    ref, losses = run(logs)
    ref_h, losses_h = run(_scramble(logs, split.holdout_rows))  # held-out rows changed
    assert all(
        torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ref_h.state_dict().values(), strict=True)
    )
    n = min(len(losses), len(losses_h))
    assert n > 0 and losses[:n] == losses_h[:n]
    ref_t, _ = run(_scramble(logs, split.train_rows[-500:]))  # training rows changed: the test can fail
    assert not all(
        torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ref_t.state_dict().values(), strict=True)
    )


def test_reference_keeps_its_best_held_out_epoch(logs):
    split = time_split(len(logs), 0.2)
    train, held = split_logs(logs, split)
    cfg = BASELINE.model_copy(update={"epochs": 4, "patience": 2})
    fit = fit_reference(train, held, SCHEME, 200, POLICY, cfg, 0, progress=False)
    values = [c["heldout_sampled"] for c in fit.curve]
    assert 1 <= len(values) <= 4 and fit.epoch == 1 + int(np.argmax(values))
    assert fit.heldout.sampled.value == pytest.approx(max(values))
    assert fit.heldout.sampled.ci_low < fit.heldout.sampled.value < fit.heldout.sampled.ci_high


def test_held_out_values_against_hand_counts(logs):
    split = time_split(len(logs), 0.2)
    train, held = split_logs(logs, split)
    ref = fit_reference(train, held, SCHEME, 200, POLICY, BASELINE, 0, progress=False).policy
    logged = logger_value(held, SCHEME)
    assert logged.value == pytest.approx(float(reward(SCHEME, held.logs.outcomes).double().mean()))
    # greedy by hand: a logged product counts where the top-K puts it at its logged position
    items = held.logs.banners.items
    top = ref.logits(held.logs.contexts).topk(items.shape[1], dim=1).indices
    shows = torch.zeros(items.shape[1], 200)
    for k in range(items.shape[1]):
        shows[k] = torch.bincount(items[:, k], minlength=200).float() / len(items)
    rk = position_rewards(SCHEME, held.logs.outcomes).double()
    mu = torch.stack([shows[k][items[:, k]] for k in range(items.shape[1])], 1).double()
    by_hand = float(((top == items).double() * rk / mu).sum(1).mean())
    assert greedy_value(ref, held, SCHEME).value == pytest.approx(by_hand, rel=1e-6)
    sampled = heldout_value(ref, held, SCHEME)
    assert sampled.ci_low < sampled.value < sampled.ci_high


def test_slot_rows_keep_their_positions_and_propensities(logs):
    @dataclasses.dataclass
    class Slots:  # what split_logs reads of ImportedLogs
        positions: np.ndarray
        behaviour_marginals: np.ndarray
        banner_size: int = 5
        slot_rows: bool = True

    n = len(logs)
    slots = Slots(np.arange(n) % 5, np.linspace(0.01, 0.2, n)[:, None])
    _, held = split_logs(logs, Split(torch.arange(n - 10), torch.arange(n - 10, n)), slots)
    assert held.positions.tolist() == (np.arange(n - 10, n) % 5).tolist()
    assert held.behaviour_marginals[:, 0].tolist() == slots.behaviour_marginals[n - 10 :, 0].tolist()


def test_runaway_warning_names_both_values():
    held = Estimate("IIPS", 0.2, 0.15, 0.25, 0.025, 100.0, 5.0, 1000)
    near = dataclasses.replace(held, value=0.24)
    far = dataclasses.replace(held, value=0.5)
    assert runaway_warning("the fine-tune", near, held) is None
    msg = runaway_warning("the fine-tune", far, held)
    assert msg.startswith("warning: the fine-tune overfits") and "0.5000" in msg and "0.2000" in msg


def test_reference_target_mix_chosen_on_held_out_value(logs):
    split = time_split(len(logs), 0.2)
    train, held = split_logs(logs, split)
    cfg = BASELINE.model_copy(update={"epochs": 1, "history_weights": [1.0, 0.0]})
    fit = fit_reference(train, held, SCHEME, 200, POLICY, cfg, 0, progress=False)
    values = {t["history_weight"]: t["heldout_sampled"] for t in fit.tried}
    assert set(values) == {1.0, 0.0} and values[1.0] != values[0.0]
    assert fit.history_weight == max(values, key=values.get)
    assert fit.heldout.sampled.value == max(values.values())


def test_fine_tune_stops_after_patience_checks_without_a_better_held_out_value(logs):
    from recsys_rl.jobs.offline import PATIENCE

    split = time_split(len(logs), 0.2)
    train, held = split_logs(logs, split)
    ref = fit_reference(train, held, SCHEME, 200, POLICY, BASELINE, 0, progress=False).policy
    check = BestCheck(held, SCHEME, 0)
    stops = [check(step, ref) for step in range(10, 10 * (PATIENCE + 2), 10)]  # the same value each time
    assert stops == [False] * PATIENCE + [True] and check.step == 10
    assert check.value == heldout_value(ref, held, SCHEME).value


def test_reference_target_mixes_pair_next_purchase_and_re_showing_weights(logs):
    split = time_split(len(logs), 0.2)
    train, held = split_logs(logs, split)
    cfg = BASELINE.model_copy(
        update={"epochs": 1, "history_weights": [1.0, 0.0], "context_weights": [0.0, 2.0]}
    )
    fit = fit_reference(train, held, SCHEME, 200, POLICY, cfg, 0, progress=False)
    values = {(t["history_weight"], t["context_weight"]): t["heldout_sampled"] for t in fit.tried}
    assert set(values) == {(1.0, 0.0), (1.0, 2.0), (0.0, 0.0), (0.0, 2.0)}
    assert (fit.history_weight, fit.context_weight) == max(values, key=values.get)

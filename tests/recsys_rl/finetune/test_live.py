"""The online trainer on a real SQLite event store: exactly-once consumption, restart, guard rails."""

import math

import mlflow
import pytest
import torch

from recsys_rl import tracking
from recsys_rl.baseline import train_baseline
from recsys_rl.config import OnlineConfig, RunConfig, TrackingConfig, WarmStartConfig, per_banner
from recsys_rl.events import Feedback, Impression, open_store
from recsys_rl.finetune.live import OnlineTrainer
from recsys_rl.guard_rails import GuardRails
from recsys_rl.logdata.parquet import read_logs
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import LoggedBatch
from tests.recsys_rl.helpers import BASELINE, POLICY, SMALL, small_logs_dir, small_sim, small_train

T0 = 1_800_000_000.0


def serve_traffic(store, policy, n, seed, t0=T0):
    """Simulated users get banners sampled from ``policy``; impressions and feedback go to the store."""
    sim, g = small_sim(), torch.Generator().manual_seed(seed)
    users = sim.sample_users(n, g)
    ctx = sim.contexts(users, g)
    banners = policy.sample(ctx, generator=g)
    out = sim.respond(users, banners.items, g)
    imps, fbs = [], []
    for i in range(n):
        iid = f"{seed}-{i}"
        lp = float(banners.log_prob[i])
        imps.append(
            Impression(
                iid,
                t0 + i * 1e-3,
                int(users[i]),
                int(ctx.viewed[i]),
                tuple(h for h in ctx.history[i].tolist() if h >= 0),
                tuple(banners.items[i].tolist()),
                math.exp(lp),
                lp,
                "v0",
            )
        )
        for k in range(5):
            item = int(banners.items[i, k])
            if out.clicks[i, k] > 0:
                fbs.append(Feedback(f"{iid}-c{k}", iid, t0 + i * 1e-3 + 1, "click", item, k, 0, 0.0))
            if out.units[i, k] > 0:
                u = int(out.units[i, k])
                fbs.append(
                    Feedback(
                        f"{iid}-p{k}",
                        iid,
                        t0 + i * 1e-3 + 2,
                        "purchase",
                        item,
                        k,
                        u,
                        float(out.revenue[i, k]) / u,
                    )
                )
    store.append_impressions(imps)
    store.append_feedback(fbs)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    logs = read_logs(small_logs_dir(str(tmp_path_factory.mktemp("logs"))))
    return train_baseline(logs, SMALL.n_products, POLICY, BASELINE, seed=0, progress=False)


def config(tmp_path, **online):
    return RunConfig(
        sim=SMALL,
        policy=POLICY,
        train=small_train(epochs=1, kl_hard_limit=10.0),
        tracking=TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="online"),
        online=OnlineConfig(
            **{
                "attribution_window_s": 10,
                "batch_size": 500,
                "min_batch": 100,
                "register_every": 1000,
                "checkpoint_dir": str(tmp_path / "ckpt"),
                **online,
            }
        ),
    )


def test_restart_after_a_crash_between_checkpoint_and_commit_trains_each_event_once(tmp_path, reference):
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    serve_traffic(store, reference, 1500, seed=1)
    cfg = config(tmp_path)
    clock = lambda: T0 + 1000  # noqa: E731 - every impression's window has passed
    a = OnlineTrainer(cfg, store, reference, clock=clock, log=lambda s: None)
    assert a.step() is not None and a.impressions == 500

    real_commit = store.commit
    store.commit = lambda *a_: (_ for _ in ()).throw(
        RuntimeError("killed")
    )  # dies right after the checkpoint
    with pytest.raises(RuntimeError):
        a.step()
    store.commit = real_commit
    assert store.committed(cfg.online.consumer) is not None

    b = OnlineTrainer(cfg, store, reference, clock=clock, log=lambda s: None)
    assert b.impressions == 1000  # the checkpoint, not the store, says what was trained on
    while b.step() is not None:
        pass
    assert b.impressions == 1500 and b.updates == 3


def test_impressions_inside_the_attribution_window_wait(tmp_path, reference):
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    serve_traffic(store, reference, 300, seed=2)
    t = OnlineTrainer(config(tmp_path), store, reference, clock=lambda: T0 + 5, log=lambda s: None)
    assert t.step() is None  # window of 10 s has not passed for any impression
    t.clock = lambda: T0 + 100
    assert t.step() is not None and t.impressions == 300


def test_registers_a_version_that_passes_guards_and_refuses_a_nan_model(tmp_path, reference):
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    serve_traffic(store, reference, 1000, seed=3)
    cfg = config(tmp_path, register_every=1, value_tolerance=10.0)
    tracking.setup(cfg.tracking)
    t = OnlineTrainer(cfg, store, reference, clock=lambda: T0 + 1000, log=lambda s: None)
    stats = t.step()
    assert stats["registered"] == 1.0
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    v = client.get_model_version_by_alias(cfg.tracking.registered_model, "champion")
    assert str(v.version) == t.registered[-1]

    with torch.no_grad():
        t.policy.item_bias[0] = float("nan")
    stats = t.step()
    assert stats["registered"] == 0.0
    versions = client.search_model_versions(f"name='{cfg.tracking.registered_model}'")
    assert len(versions) == 1


def test_a_required_gain_refuses_a_version_no_better_than_the_current(reference):
    """min_gain > 0 turns "not much worse" into "better by this share" (a promotion gate)."""
    sim, g = small_sim(), torch.Generator().manual_seed(0)
    users = sim.sample_users(256, g)
    ctx = sim.contexts(users, g)
    banners = reference.sample(ctx, generator=g)
    logged = LoggedBatch(ctx, banners, sim.respond(users, banners.items, g))
    candidate = BannerPolicy(
        SMALL.n_products, POLICY.embed_dim, POLICY.hidden_dim, context_features=POLICY.context_features
    )
    candidate.load_state_dict(reference.state_dict())
    values = {id(reference): 10.0, id(candidate): 10.05}  # the candidate is 0.5% better

    def check(**kw):
        return GuardRails(50.0, **kw).check(candidate, reference, reference, logged, lambda p: values[id(p)])

    assert check(tolerance=0.0).passed  # not worse
    strict = check(tolerance=0.0, min_gain=0.01)
    assert not strict.passed and "not above current" in strict.reasons[0]
    values[id(candidate)] = 10.2  # 2% better
    assert check(min_gain=0.01).passed


def test_warm_start_from_logs_is_guard_checked_at_the_first_update_and_replay_reuses_batches(
    tmp_path, reference
):
    logs = read_logs(small_logs_dir(str(tmp_path)))
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    serve_traffic(store, reference, 1000, seed=4)
    cfg = config(tmp_path)  # register_every=1000: without a warm start no check for 1000 updates
    cfg.warm_start = WarmStartConfig(enabled=True, virtual_impressions=20_480)
    cfg.train = cfg.train.model_copy(update={"replay_batches": 1})
    with pytest.raises(ValueError, match="warm_start.enabled"):  # the warm start needs its logs
        OnlineTrainer(cfg, store, reference, clock=lambda: T0 + 1000, log=lambda s: None)
    tracking.setup(cfg.tracking)
    with mlflow.start_run():
        t = OnlineTrainer(cfg, store, reference, clock=lambda: T0 + 1000, log=lambda s: None, warm_logs=logs)
        assert any(
            not torch.equal(a, b) for a, b in zip(t.policy.parameters(), reference.parameters(), strict=True)
        )
        first = t.step()
        assert "guard_kl" in first and first["guard_kl"] <= per_banner(
            cfg.train.kl_hard_limit, 5
        )  # checked at once
        assert len(t.replay) == 1
        second = t.step()
        assert "guard_kl" not in second  # then every register_every updates, as before
    assert t.impressions == 1000  # replayed impressions are not consumed twice
    # a restart resumes from the checkpoint: no second warm start, so no logs needed
    t2 = OnlineTrainer(cfg, store, reference, clock=lambda: T0 + 1000, log=lambda s: None)
    assert t2.updates == 2


def test_the_exposure_guard_refuses_a_version_that_concentrates_exposure(tmp_path, reference):
    store = open_store(f"sqlite:///{tmp_path}/events.db")
    serve_traffic(store, reference, 600, seed=4)
    cfg = config(tmp_path, register_every=1, value_tolerance=10.0, max_exposure_gini_rise=0.05)
    tracking.setup(cfg.tracking)
    t = OnlineTrainer(cfg, store, reference, clock=lambda: T0 + 1000, log=lambda s: None)
    with torch.no_grad():
        t.policy.item_bias[:5] += 20.0  # what any fine-tune would do that learned to show five products
    stats = t.step()
    assert stats["registered"] == 0.0
    assert stats["guard_gini"] > stats["guard_current_gini"] + 0.05

"""The exposure guard rail refuses a version that concentrates exposure and passes one that does not."""

import torch

from recsys_rl.audit.guard import ExposureGuard
from recsys_rl.guard_rails import GuardRails
from recsys_rl.policy import BannerPolicy
from recsys_rl.records import PAD, BannerBatch, ContextBatch, LoggedBatch, OutcomeBatch

N, B, K = 60, 256, 5


def _policy(seed: int) -> BannerPolicy:
    torch.manual_seed(seed)
    return BannerPolicy(N, embed_dim=8, hidden_dim=16, candidates=0).frozen_copy()


def _logged() -> LoggedBatch:
    g = torch.Generator().manual_seed(1)
    history = torch.randint(0, N, (B, 4), generator=g)
    history[:, 3] = PAD
    ctx = ContextBatch(torch.randint(0, N, (B,), generator=g), history)
    items = torch.stack([torch.randperm(N, generator=g)[:K] for _ in range(B)])
    zeros = torch.zeros(B, K)
    return LoggedBatch(ctx, BannerBatch(items, torch.zeros(B)), OutcomeBatch(zeros, zeros, zeros))


def _concentrated(policy: BannerPolicy) -> BannerPolicy:
    out = BannerPolicy(**policy.hparams())
    out.load_state_dict(policy.state_dict())
    with torch.no_grad():
        out.item_bias[:6] += 8.0  # six products take nearly every slot
    return out.frozen_copy()


def _rails() -> GuardRails:
    exam = torch.tensor([1.0, 0.7, 0.5, 0.4, 0.3])
    return GuardRails(kl_hard_limit=1e9, exposure=ExposureGuard(exam, max_gini_rise=0.05, max_tail_drop=0.1))


def test_a_version_that_concentrates_exposure_is_refused():
    current = _policy(0)
    rep = _rails().check(_concentrated(current), current, current, _logged(), lambda p: 1.0)
    assert not rep.passed
    assert rep.exposure["guard_gini"] > rep.exposure["guard_current_gini"] + 0.05
    assert any("exposure Gini" in r for r in rep.reasons)


def test_a_version_that_spreads_exposure_as_much_is_accepted():
    current, candidate = _policy(0), _policy(1)  # another random policy: as spread out
    rep = _rails().check(candidate, current, current, _logged(), lambda p: 1.0)
    assert rep.passed, rep.reasons
    assert abs(rep.exposure["guard_gini"] - rep.exposure["guard_current_gini"]) < 0.05


def test_a_tail_share_limit_alone_refuses_a_version_that_starves_the_tail():
    current = _policy(0)
    logged = _logged()
    head = torch.bincount(logged.contexts.history[logged.contexts.history != PAD], minlength=N)
    top = head.topk(12).indices  # the head the guard will see
    starving = BannerPolicy(**current.hparams())
    starving.load_state_dict(current.state_dict())
    with torch.no_grad():
        starving.item_bias[top] += 8.0
    exam = torch.tensor([1.0, 0.7, 0.5, 0.4, 0.3])
    rails = GuardRails(kl_hard_limit=1e9, exposure=ExposureGuard(exam, max_tail_drop=0.1))
    rep = rails.check(starving.frozen_copy(), current, current, logged, lambda p: 1.0)
    assert not rep.passed and any("long-tail share" in r for r in rep.reasons)

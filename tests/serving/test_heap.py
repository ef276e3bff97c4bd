"""The long-lived heap is frozen out of the cyclic collector at start-up and after a model swap."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from serving import heap
from serving.app import create_app
from tests.serving.helpers import config, serve_banner, tiny_holder, tiny_policy


def test_the_app_freezes_its_heap_at_start_up(tmp_path, store):
    gc.unfreeze()
    app = create_app(config(tmp_path), store=store, holder=tiny_holder())
    with TestClient(app) as c:
        assert gc.get_freeze_count() > 10_000  # torch, FastAPI, the model: everything alive at start-up
        serve_banner(c)  # and serving goes on


def test_a_model_swap_freezes_the_new_models_objects_and_nothing_else():
    swaps = [1]
    listener = heap.freeze_after_swap(lambda: swaps[0])
    gc.freeze()
    frozen = gc.get_freeze_count()
    listener(True)  # a poll that changed nothing
    assert gc.get_freeze_count() == frozen
    new_model = [tiny_policy(seed=s) for s in range(3)]  # noqa: F841 - alive when the swap is seen
    swaps[0] = 2
    listener(True)
    assert gc.get_freeze_count() > frozen

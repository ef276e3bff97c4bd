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


def is_frozen(obj) -> bool:
    """Frozen objects sit in the permanent generation, which ``gc.get_objects()`` does not list.
    (Not ``gc.get_freeze_count()``: it drops whenever another thread frees a frozen object.)"""
    return gc.is_tracked(obj) and all(o is not obj for o in gc.get_objects())


def test_a_model_swap_freezes_the_new_models_objects_and_nothing_else():
    swaps = [1]
    listener = heap.freeze_after_swap(lambda: swaps[0])
    gc.freeze()
    try:
        after_freeze = [tiny_policy(seed=9)]
        listener(True)  # a poll that changed nothing
        assert not is_frozen(after_freeze)
        new_model = [tiny_policy(seed=s) for s in range(3)]
        swaps[0] = 2
        listener(True)
        assert is_frozen(new_model) and is_frozen(new_model[0])
    finally:
        gc.unfreeze()

"""Small simulator worlds shared by the simulator tests."""

from recsys_rl.config import SimConfig


def small_config(**overrides) -> SimConfig:
    """A world small enough to build in milliseconds."""
    base = {"n_products": 200, "n_categories": 8, "n_users": 2000, "consideration_size": 30, "seed": 7}
    return SimConfig(**{**base, **overrides})

"""The e-commerce user simulator (vectorised, seeded), its oracle and the logged-data generator."""

from simulator.env import Simulator, random_banners

__all__ = ["Simulator", "random_banners"]

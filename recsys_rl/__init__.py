"""recsys-rl: fine-tune a banner recommender with KL-constrained online reinforcement learning."""

__version__ = "0.1.0"

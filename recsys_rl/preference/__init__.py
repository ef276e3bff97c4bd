"""Preference optimisation on logged banners: DPO, IPO, KTO and in-banner softmax DPO (no reward model)."""

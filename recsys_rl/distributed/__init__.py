"""Past one machine on Ray (optional extra ``[ray]``): Tune sweeps, sharded simulation, data-parallel
fine-tuning. Ray is imported inside these modules only, so ``import recsys_rl`` never starts or loads it."""

"""Mitigations of popularity bias and feedback loops, each a small part the loop can switch on.

``debias`` (propensity weights for retraining the reference), ``exploration`` (serving with a uniform
floor, exact propensities logged), ``planted`` (a reference with a known popularity boost, to check
that the audit finds bias and the debiased path removes it). The exposure term of the objective lives
with the objective (``recsys_rl.objective.exposure_cap_penalty``).
"""

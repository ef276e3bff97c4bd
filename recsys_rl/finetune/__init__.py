"""The loops that feed the learner: the environment, the live stream, logs, a reward model; warm start, Dyna, replay."""

"""Independent pieces of work as Ray tasks, at most ``workers`` at a time, results in submission order.

The caller decides what a piece is (a simulated log shard, say) and seeds it by its own index, so the
output depends on the pieces alone: ``workers`` only sets how many run at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from recsys_rl.progress import progress_bar


def run_tasks(
    fn: Callable,
    args: Sequence[tuple],
    *,
    workers: int,
    cpus_per_task: float = 1.0,
    description: str = "ray tasks",
    progress: bool = True,
) -> list:
    """``[fn(*a) for a in args]`` computed by Ray tasks, ``workers`` in flight at once (Ray must be up)."""
    import ray

    if workers < 1:
        raise ValueError(f"--workers: must be >= 1, got {workers}")
    remote = ray.remote(num_cpus=cpus_per_task, max_retries=2)(fn)
    results: dict = {}
    pending: dict = {}
    queue = list(enumerate(args))
    with progress_bar(description, len(args), progress) as advance:
        while queue or pending:
            while queue and len(pending) < workers:
                i, a = queue.pop(0)
                pending[remote.remote(*a)] = i
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                results[pending.pop(ref)] = ray.get(ref)
                advance(1)
    return [results[i] for i in range(len(args))]

"""Catalogue scale: fine-tuning, memory, learning, retrieval and serving at 1k, 100k and 1M products.

Each size runs in its own subprocess (so its peak RSS is its own): build the simulator preset (small,
large, xlarge), log ``--logged`` impressions of the popularity behaviour policy, train the baseline
(sampled softmax above 2,048 products), fine-tune for ``--impressions`` with the policy over its
top-M candidates, and report
- train_ips: fine-tuning impressions/s (collect + update; evaluations excluded, timed apart),
- full_ips (100k): the same fine-tune on the full-catalogue path for ``--full-impressions``
  (a short budget: it is the O(B N) reference implementation; at 1M it does not fit the time),
- rss_mb: the subprocess's peak RSS,
- gap: reference->oracle gap closed at the end of the budget (and the whole curve, one line per
  evaluation),
- recall (1M): recall@M of the IVF candidates against the exact top-M, on the fine-tuned policy,
  tie-aware (a found product scoring at least the exact M-th score counts; products that tie there,
  e.g. untrained ones at score 0, are interchangeable); ``recall_ids`` is the plain id overlap,
- serving (1M): p50/p99/rps of ``/v1/banners`` at concurrency 8 (wrk, ``--serve-seconds``) on the
  fine-tuned 1M policy, one uvicorn worker, 1 torch thread.

    python benchmarks/catalogue_scale.py [--sizes 1k,100k,1m] [--impressions 2000000] [--impressions-1m 200000]
        [--eval-users N] [--set policy.sources.cooccurrence=0 ...]  (reduced runs: a budget, fewer users)

Last line:
``scale: train_ips_100k=<n> full_ips_100k=<n> speedup_100k=<x> rss_mb_100k=<n> gap_100k=<x>
train_ips_1m=<n> rss_mb_1m=<n> gap_1m=<x> recall_1m=<x> serve_p99_ms_1m=<x> serve_rps_1m=<n>
oracle_recall_100k=<x> oracle_recall_1m=<x>`` (oracle recall: the share of the oracle banners' products
inside the fine-tuned policy's candidate union; each source's recall and ceiling gap on the lines above).
Targets (issue 11): 100k >= 5,000 impressions/s, >= 20x full, <= 4 GB, gap >= 0.3 within 2M;
1M >= 2,000 impressions/s, <= 8 GB, recall >= 0.95, p99 <= 25 ms.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = {"1k": "small", "100k": "large", "1m": "xlarge"}
EVAL_USERS = {"1k": 4096, "100k": 2048, "1m": 512}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TimedEvaluator:
    """Wraps an Evaluator so the fine-tune's throughput can exclude evaluation time."""

    def __init__(self, ev, label: str):
        self.ev, self.label, self.seconds = ev, label, 0.0

    def __call__(self, policy):
        t = time.perf_counter()
        m = self.ev(policy)
        self.seconds += time.perf_counter() - t
        return m


def worker(size: str, args) -> dict:
    import torch
    import yaml

    from recsys_rl.baseline import train_baseline
    from recsys_rl.candidates import exact_topk, recall_at_m, recall_with_ties
    from recsys_rl.config import builtin_rewards, load_reward, load_run
    from recsys_rl.evaluation import Evaluator
    from recsys_rl.finetune.environment import finetune
    from recsys_rl.logdata.parquet import read_logs
    from recsys_rl.policy import BannerPolicy, save_policy, trainable_copy
    from simulator import Simulator
    from simulator.logged import generate_logs

    impressions = args.impressions_1m if size == "1m" else args.impressions
    over = {
        "sim": PRESETS[size],
        "seed": args.seed,
        "train.total_impressions": impressions,
        "baseline.logged_impressions": args.logged,
        "baseline.epochs": args.baseline_epochs,
        "train.eval_users": args.eval_users or EVAL_USERS[size],
        "train.eval_every": args.eval_every,
    }
    for item in args.set:
        key, _, value = item.partition("=")
        over[key] = yaml.safe_load(value)
    cfg = load_run(None, over)
    torch.set_num_threads(cfg.torch_threads)
    out: dict = {"size": size}
    t = time.perf_counter()
    sim = Simulator(cfg.sim)
    out["sim_build_s"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as d:
        logs = read_logs(
            generate_logs(sim, cfg.baseline.logged_impressions, d, seed=args.seed, progress=False)
        )
    t = time.perf_counter()
    ref = train_baseline(
        logs, sim.n_products, cfg.policy, cfg.baseline, cfg.seed, progress=False, item_category=sim.category
    )
    out["baseline_s"] = time.perf_counter() - t
    del logs
    scheme = load_reward("graded")
    t = time.perf_counter()
    ev = Evaluator(sim, ref, scheme, builtin_rewards(), cfg.train.eval_users, cfg.seed + 1000)
    out["evaluator_s"] = time.perf_counter() - t
    if ref.uses_candidates:
        out["ceiling_ref"] = candidate_ceiling(sim, ev, ref, scheme)
    timed = TimedEvaluator(ev, size)
    curve = []

    def on_eval(n, m):
        curve.append((n, m["oracle_gap_closed"], m["kl_to_reference"]))
        print(
            f"  [{size}] impressions={n:>9,d} gap_closed={m['oracle_gap_closed']:.3f} "
            f"kl={m['kl_to_reference']:.3f}",
            file=sys.stderr,
            flush=True,
        )

    policy = trainable_copy(ref)
    t = time.perf_counter()
    res = finetune(policy, ref, sim, scheme, cfg.train, timed, cfg.seed, on_eval=on_eval, progress=False)
    wall = time.perf_counter() - t
    out.update(
        train_ips=res.impressions / max(wall - timed.seconds, 1e-9),
        impressions=res.impressions,
        gap=res.final["oracle_gap_closed"],
        kl=res.final["kl_to_reference"],
        curve=curve,
        uses_candidates=policy.uses_candidates,
        retrieval=policy.retriever.kind if policy.uses_candidates else "full",
    )
    out["rss_mb"] = rss_mb()  # the candidate path's peak, before the full-path comparison
    if policy.uses_candidates:
        policy.refresh_candidates()
        out["ceiling"] = candidate_ceiling(sim, ev, policy, scheme)
    if size == "100k" and args.full_impressions:
        full = BannerPolicy(**{**ref.hparams(), "full_catalogue_max": sim.n_products})
        # the full path has no context bonus (a candidate-path parameter): the same network otherwise
        full.load_state_dict({k: v for k, v in ref.state_dict().items() if k != "context_weights"})
        full_ref = full.frozen_copy()
        # 256 contexts per batch (not 1024): its (B, N) tensors at 4096 banners x 100k take > 10 GB
        fcfg = cfg.train.model_copy(
            update={
                "total_impressions": args.full_impressions,
                "eval_every": 10**6,
                "contexts_per_batch": 256,
            }
        )
        fev = TimedEvaluator(ev, "full")
        t = time.perf_counter()
        fres = finetune(full.train(), full_ref, sim, scheme, fcfg, fev, cfg.seed, progress=False)
        out["full_ips"] = fres.impressions / max(time.perf_counter() - t - fev.seconds, 1e-9)
    if policy.uses_candidates:  # recall of the policy's retrieval against the exact top-M
        policy.refresh_candidates()
        with torch.no_grad():
            q = policy.query(ev.eval_set.contexts[:512])
            found = policy.retriever.search(q)
            exact_s, exact = exact_topk(q, policy.item_out, policy.item_bias, policy.retriever.m)
            out["recall_ids"] = recall_at_m(found, exact)
            out["recall"] = recall_with_ties(policy.score(q, found), exact_s)
            if policy.retriever.kind == "ivf":
                out["nprobe_sweep"] = nprobe_sweep(policy, q, exact_s)
    if size == "1m" and args.save_1m:
        save_policy(policy, args.save_1m)
    if size == "1m" and args.serve_seconds:
        path = Path(tempfile.mkdtemp()) / "policy-1m.pt"
        save_policy(policy, path)
        del sim, ev, timed, res, ref
        out.update(serve(path, sim_n=policy.n_products, seconds=args.serve_seconds))
    return out


def candidate_ceiling(sim, ev, policy, scheme) -> dict:
    """Per candidate source and for the policy's whole union, on the evaluation users: ``recall``, the
    share of the oracle banner's products inside the set, and ``gap``, the gap closed by the best
    banner the true reward can pick inside it (``oracle_within``, its value exact under the default
    position-based examination): what a policy over that set can reach at most. The sources are each measured alone (the policy's top-M at its own M)."""
    import torch

    from recsys_rl.candidates.context import context_products
    from recsys_rl.candidates.union import membership
    from simulator.oracle import oracle_within

    users, ctx = ev.eval_set.users, ev.eval_set.contexts
    oracle = sim.oracle(users, scheme)
    with torch.no_grad():
        sets = {"union": policy.candidates(ctx), "policy_top": policy.retriever.search(policy.query(ctx))}
        sets["context"] = context_products(ctx)
        if policy.sources is not None:
            for name, lst in zip(
                ("cooccurrence", "category", "popular"), policy.sources.lists(ctx), strict=True
            ):
                if lst.shape[1]:
                    sets[name] = lst
    out = {}
    for name, ids in sets.items():
        recall = membership(oracle, [ids])[..., 0].mean().item()
        _, gains = oracle_within(sim.rates, users, ids, scheme, ev.k)
        gap = ev.gap_closed((gains * sim.position_bias[: ev.k]).sum(1).mean().item())
        out[name] = {"recall": recall, "gap": gap, "width": ids.shape[1]}
    return out


def nprobe_sweep(policy, q, exact_s, probes=(16, 32, 64, 128, 256)) -> list:
    """[(nprobe, tie-aware recall@M, ms per query of the retriever's search)] on the final policy, one
    query at a time as serving's small batches see it: what each setting of the index
    would buy (``RetrievalConfig.nprobe``; the configured one gives the line's recall)."""
    import torch

    from recsys_rl.candidates import recall_with_ties

    index = policy.retriever.index.index
    configured, rows = index.nprobe, []
    with torch.no_grad():
        for nprobe in probes:
            index.nprobe = min(nprobe, policy.retriever.index.nlist)
            found = policy.retriever.search(q)
            t = time.perf_counter()
            for i in range(64):
                policy.retriever.search(q[i : i + 1])
            ms = (time.perf_counter() - t) / 64 * 1e3
            rows.append((index.nprobe, recall_with_ties(policy.score(q, found), exact_s), ms))
    index.nprobe = configured
    return rows


def serve(policy_path: Path, sim_n: int, seconds: float) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _net import free_port, wait_ready
    from serving_latency import SERVE, banner_script, run_wrk, start, stop

    work = policy_path.parent
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(
        SERVE,
        "--policy-path",
        str(policy_path),
        "--events",
        f"sqlite:///{work / 'ev.db'}",
        "--port",
        str(port),
    )
    try:
        wait_ready(url, proc, timeout=300)
        script = banner_script(work / "banners.lua", sim_n)
        run_wrk(url, script, 2, 8, 2)  # warm-up
        s = run_wrk(url, script, seconds, 8, 2)
    finally:
        stop(proc)
    return {
        "serve_p50_ms": s["p50_us"] / 1000,
        "serve_p99_ms": s["p99_us"] / 1000,
        "serve_rps": s["rps"],
        "serve_non2xx": s["non2xx"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1k,100k,1m")
    ap.add_argument("--impressions", type=int, default=2_000_000, help="fine-tune budget at 1k and 100k")
    ap.add_argument("--impressions-1m", type=int, default=200_000, help="fine-tune budget at 1M")
    ap.add_argument("--full-impressions", type=int, default=8192, help="full-path budget at 100k (0: skip)")
    ap.add_argument("--logged", type=int, default=100_000)
    ap.add_argument("--baseline-epochs", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument(
        "--eval-users", type=int, default=0, help="evaluation users (0: 4096 / 2048 / 512 by size)"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        help="config override key=value (e.g. policy.sources.cooccurrence=0), repeatable",
    )
    ap.add_argument("--serve-seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-1m", type=Path, help="also save the fine-tuned 1M policy here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return
    results = {}
    for size in args.sizes.split(","):
        cmd = [sys.executable, __file__, "--worker", size] + [
            a for a in sys.argv[1:] if not a.startswith("--sizes")
        ]
        if "--sizes" in sys.argv:
            i = sys.argv.index("--sizes")
            cmd = [sys.executable, __file__, "--worker", size] + sys.argv[1:i] + sys.argv[i + 2 :]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(done.stderr[-4000:] if done.returncode else "")
        line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not line:
            print(f"{size}: failed (exit {done.returncode})")
            continue
        r = results[size] = json.loads(line[-1][7:])
        print(
            f"{size}: {r['retrieval']} train_ips={r['train_ips']:.0f} impressions={r['impressions']} "
            f"gap={r['gap']:.3f} kl={r['kl']:.3f} rss_mb={r['rss_mb']:.0f} sim_build_s={r['sim_build_s']:.1f} "
            f"baseline_s={r['baseline_s']:.1f} evaluator_s={r['evaluator_s']:.1f} wall_s={time.perf_counter() - t:.0f}"
            + (f" full_ips={r['full_ips']:.0f}" if "full_ips" in r else "")
            + (f" recall={r['recall']:.4f} recall_ids={r['recall_ids']:.4f}" if "recall" in r else "")
            + (
                f" serve_p50_ms={r['serve_p50_ms']:.2f} serve_p99_ms={r['serve_p99_ms']:.2f} "
                f"serve_rps={r['serve_rps']:.0f} non2xx={r['serve_non2xx']}"
                if "serve_p99_ms" in r
                else ""
            )
        )
        for key in ("ceiling_ref", "ceiling"):
            if key in r:
                print(
                    f"  {size} {key} (set: oracle recall / ceiling gap / width): "
                    + " ".join(
                        f"{n}:{c['recall']:.3f}/{c['gap']:.3f}/{c['width']}" for n, c in r[key].items()
                    )
                )
        if "nprobe_sweep" in r:
            print(
                f"  {size} nprobe (recall, ms per query): "
                + " ".join(f"{n}:{rc:.4f}/{ms:.2f}" for n, rc, ms in r["nprobe_sweep"])
            )
        print(
            f"  {size} curve (impressions, gap_closed, kl): "
            + " ".join(f"{n}:{g:.3f}/{k:.2f}" for n, g, k in r["curve"])
        )
    a, b = results.get("100k", {}), results.get("1m", {})
    nan = float("nan")
    speed = a["train_ips"] / a["full_ips"] if a.get("full_ips") else nan
    print(
        f"scale: train_ips_100k={a.get('train_ips', nan):.0f} full_ips_100k={a.get('full_ips', nan):.0f} "
        f"speedup_100k={speed:.1f} rss_mb_100k={a.get('rss_mb', nan):.0f} gap_100k={a.get('gap', nan):.3f} "
        f"train_ips_1m={b.get('train_ips', nan):.0f} rss_mb_1m={b.get('rss_mb', nan):.0f} "
        f"gap_1m={b.get('gap', nan):.3f} recall_1m={b.get('recall', nan):.4f} "
        f"serve_p99_ms_1m={b.get('serve_p99_ms', nan):.2f} serve_rps_1m={b.get('serve_rps', nan):.0f} "
        f"oracle_recall_100k={_recall(a):.3f} oracle_recall_1m={_recall(b):.3f}"
    )


def _recall(r: dict) -> float:
    """Oracle recall of the fine-tuned policy's candidate union (nan when the size did not run)."""
    return r.get("ceiling", {}).get("union", {}).get("recall", float("nan"))


if __name__ == "__main__":
    main()

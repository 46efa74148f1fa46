"""Performance figures for search and CSLS (a script, not a timed test).

    python -m mmea.search.benchmark                 # the three cases, full sizes
    python -m mmea.search.benchmark --quick         # small sizes, seconds
    python -m mmea.search.benchmark --cases csls --csls-n 10500

Cases (each in its own subprocess, so peak RSS is per case):

* ``csls``: ``n x n`` random unit vectors (default 10,500, d = 300): full exact
  CSLS (k = 10, both radii, re-ranked top-10) timed against one dense torch
  matmul + top-10 over the same matrices in the same process (best of
  ``--reps``, interleaved), with the ratio and an exactness check against
  the dense matrix.
* ``exact``: ``n x n`` (default 100,000, d = 300): exact CSLS top-10, time and
  peak RSS, checked on sampled rows against direct computation.
* ``approx``: ``n x n`` clustered synthetic vectors (default 1,000,000,
  d = 128): IVF (or HNSW) top-10 for every query, time, peak RSS and
  recall@10 against exact search on a sample of 10,000 queries.
* ``post``: an ``mmea align`` run's rankings after its search on ``n x n`` correlated unit rows (default
  10,277 x 10,277 at d = 8,960, FB15K-DB15K 20%'s test links over ``gsgl``'s joined rows): the passes as
  they share work now (the search pass keeps the column maxima, the one-to-one pass ranks the reciprocal
  keys, the margins read the pass's top 2) against the reference of one pass each (a CSLS top-2 search for
  the margins, the one-to-one pass, the reciprocal ranking's two passes), with the ratio and a check that
  both give the same ranks, top 2 and one-to-one lists.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

__all__ = ["main", "peak_rss_gib"]


def peak_rss_gib() -> float:
    """Peak resident set size of this process in GiB since :func:`reset_peak_rss` (Linux ``VmHWM`` of
    ``/proc/self/status``), or over the process's life (``ru_maxrss``, KiB on Linux) where that is not readable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak_rss() -> bool:
    """Restart the peak of :func:`peak_rss_gib` at the current RSS (Linux: ``5`` into ``/proc/self/clear_refs``);
    False where that is not possible (the peak then covers the whole process).

    Why: ``mmea bench`` runs its cells one after another in one process, and ``ru_maxrss`` never goes down, so
    without a reset a small cell after a large one reported the large one's peak.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _unit(rng, n: int, d: int, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, d), np.float32)
    for a in range(0, n, chunk):
        x = rng.standard_normal((min(chunk, n - a), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[a:a + chunk] = x
    return out


def case_csls(n: int, d: int, reps: int, seed: int = 0) -> dict:
    import torch

    from .csls import csls_topk

    rng = np.random.default_rng(seed)
    src, tgt = _unit(rng, n, d), _unit(rng, n, d)
    s_t, t_t = torch.from_numpy(src), torch.from_numpy(tgt)
    t_ref, t_csls, c_ref, c_csls, res = [], [], [], [], None
    with torch.no_grad():
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            S = s_t @ t_t.T  # (n, n) dense
            top = torch.topk(S, 10, dim=1)
            t_ref.append(time.perf_counter() - t0)
            c_ref.append(time.process_time() - c0)
            del S, top
            t0, c0 = time.perf_counter(), time.process_time()
            res = csls_topk(src, tgt, 10, csls_k=10, normalize=False)
            t_csls.append(time.perf_counter() - t0)
            c_csls.append(time.process_time() - c0)
        # exactness against the dense matrix
        S = s_t @ t_t.T
        r_src = torch.topk(S, 10, dim=1).values.double().mean(1).float()
        r_tgt = torch.topk(S, 10, dim=0).values.double().mean(0).float()
        C = 2 * S - r_src[:, None] - r_tgt[None, :]
        ids = torch.topk(C, 10, dim=1).indices.numpy()
        del S, C
    return {
        "case": "csls", "n": n, "m": n, "d": d, "k": 10, "topk": 10, "reps": reps,
        "dense_matmul_topk_s": min(t_ref), "csls_s": min(t_csls), "ratio": min(t_csls) / min(t_ref),
        "median_ratio": float(np.median(np.array(t_csls) / np.array(t_ref))),
        "cpu_ratio": min(c_csls) / min(c_ref),
        "all_dense_s": t_ref, "all_csls_s": t_csls, "all_dense_cpu_s": c_ref, "all_csls_cpu_s": c_csls,
        "rescored_rows": res.stats["rescored_rows"],
        "r_src_max_abs_err": float(np.abs(res.r_src - r_src.numpy()).max()),
        "r_tgt_max_abs_err": float(np.abs(res.r_tgt - r_tgt.numpy()).max()),
        "top10_ids_equal_dense": float((res.ids == ids).mean()),
        "peak_rss_gib": peak_rss_gib(),
    }


def case_exact(n: int, d: int, seed: int = 0, sample: int = 200) -> dict:
    import torch

    from .csls import csls_from_cos, csls_topk

    rng = np.random.default_rng(seed)
    src, tgt = _unit(rng, n, d), _unit(rng, n, d)
    rss_data = peak_rss_gib()
    t0 = time.perf_counter()
    res = csls_topk(src, tgt, 10, csls_k=10, normalize=False)
    elapsed = time.perf_counter() - t0
    rss = peak_rss_gib()
    rows = rng.choice(n, min(sample, n), replace=False)
    with torch.no_grad():
        S = torch.from_numpy(src[rows]) @ torch.from_numpy(tgt).T  # (sample, n)
        r_src = torch.topk(S, 10, dim=1).values.double().mean(1).float().numpy()
        C = csls_from_cos(S, torch.from_numpy(res.r_src[rows])[:, None], torch.from_numpy(res.r_tgt)[None, :])
        ids = torch.topk(C, 10, dim=1).indices.numpy()
        St = torch.from_numpy(tgt[rows]) @ torch.from_numpy(src).T
        r_tgt = torch.topk(St, 10, dim=1).values.double().mean(1).float().numpy()
    return {
        "case": "exact", "n": n, "m": n, "d": d, "k": 10, "topk": 10, "csls_s": elapsed,
        "peak_rss_gib": rss, "rss_after_data_gib": rss_data, "rescored_rows": res.stats["rescored_rows"],
        "sample_rows": len(rows),
        "sample_top10_ids_equal": float((res.ids[rows] == ids).mean()),
        "sample_r_src_max_abs_err": float(np.abs(res.r_src[rows] - r_src).max()),
        "sample_r_tgt_max_abs_err": float(np.abs(res.r_tgt[rows] - r_tgt).max()),
    }


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def case_post(n: int, d: int, seed: int = 0) -> dict:
    """The ``post`` case (module doc): shared passes against one pass per ranking, on the same rows."""
    from .csls import csls_topk
    from .matching import Similarity, two_way_topk
    from .onepass import align_once
    from .reciprocal import ReciprocalRanks, reciprocal_ranks

    rng = np.random.default_rng(seed)
    base = _unit(rng, n, 64) * 4.0  # shared structure, so the gold pair i -> i is often near the top
    src, tgt = base + _unit(rng, n, 64), base + _unit(rng, n, 64)
    src, tgt = (np.concatenate([x, 0.05 * _unit(rng, n, d - 64)], 1) for x in (src, tgt))
    src /= np.linalg.norm(src, axis=1, keepdims=True)
    tgt /= np.linalg.norm(tgt, axis=1, keepdims=True)
    ids = np.arange(n)
    (_, found), t_search = _timed(lambda: align_once(src, tgt, ids, ids, topk=2, gold=ids, eval_src=ids))
    sim = Similarity(src, tgt, csls_k=10, radius=(found.r_src, found.r_tgt))
    fed = ReciprocalRanks(found.column_best["csls"], ids, ids, n)
    shared, t_shared = _timed(lambda: two_way_topk(sim.src, sim.tgt, sim.r_src, sim.r_tgt, 50, on_block=fed))
    top2, t_margin = _timed(lambda: csls_topk(src, tgt, topk=2, csls_k=10, normalize=False, index="torch"))
    lists, t_one = _timed(lambda: two_way_topk(sim.src, sim.tgt, sim.r_src, sim.r_tgt, 50))
    ranks, t_rec = _timed(lambda: reciprocal_ranks(sim, ids))
    reference = t_search + t_margin + t_one + t_rec
    return {
        "case": "post", "n": n, "m": n, "d": d, "search_s": t_search, "shared_one_to_one_s": t_shared,
        "reference_margin_search_s": t_margin, "reference_one_to_one_s": t_one, "reference_reciprocal_s": t_rec,
        "shared_s": t_search + t_shared, "reference_s": reference, "ratio": (t_search + t_shared) / reference,
        "reciprocal_ranks_equal": bool(np.array_equal(ranks, fed.ranks)),
        "top2_ids_equal": bool(np.array_equal(top2.ids, found.result.ids[:, :2])),
        "one_to_one_lists_equal": bool(all(np.array_equal(a.ids, b.ids) for a, b in zip(lists, shared))),
        "reciprocal_hits@1": float((fed.ranks == 1).mean()), "peak_rss_gib": peak_rss_gib(),
    }


def _clustered(rng, n: int, d: int, centers: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Two noisy copies of a Gaussian mixture (source / target), L2-normalised: EA-like structure."""
    c = rng.standard_normal((centers, d), dtype=np.float32)
    x, y = np.empty((n, d), np.float32), np.empty((n, d), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        lab = rng.integers(0, centers, b - a)
        for out in (x, y):
            v = c[lab] + noise * rng.standard_normal((b - a, d), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            out[a:b] = v
    return x, y


def case_approx(n: int, d: int, index: str, sample: int, nlist: int | None, nprobe: int, hnsw_m: int,
                ef_search: int, csls: bool, seed: int = 0) -> dict:
    from .csls import csls_topk
    from .knn import TorchIndex, make_index

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    x, y = _clustered(rng, n, d, centers=max(10, n // 50), noise=0.6)
    t_data = time.perf_counter() - t0
    params = {"nlist": nlist, "nprobe": nprobe} if index == "ivf" else {"hnsw_m": hnsw_m, "ef_search": ef_search}
    t0 = time.perf_counter()
    idx = make_index(index, y, n_queries=n, **params)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, ids = idx.search(x, 10)
    t_search = time.perf_counter() - t0
    info = {"nlist": getattr(idx, "nlist", None), "nprobe": getattr(idx, "nprobe", None)} if index == "ivf" \
        else {"hnsw_m": hnsw_m, "ef_search": ef_search}
    del idx
    rss_search = peak_rss_gib()
    q = np.sort(rng.choice(n, min(sample, n), replace=False))
    t0 = time.perf_counter()
    _, exact = TorchIndex(block_size=256).build(y).search(x[q], 10)
    t_exact = time.perf_counter() - t0
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids[q].tolist(), exact.tolist())]))
    out = {"case": "approx", "index": index, **info, "n": n, "m": n, "d": d, "k": 10, "data_s": t_data,
           "build_s": t_build, "search_s": t_search, "total_s": t_build + t_search,
           "recall@10": recall, "sample": len(q), "exact_sample_s": t_exact, "peak_rss_gib_search": rss_search}
    if csls:
        t0 = time.perf_counter()
        res = csls_topk(x, y, 10, csls_k=10, index=index, normalize=False, **params)
        out["approx_csls_s"] = time.perf_counter() - t0
        out["approx_csls_top1_equals_cos_top1"] = float((res.ids[:, 0] == ids[:, 0]).mean())
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def _child(args) -> dict:
    if args.threads:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    if args.child == "csls":
        return case_csls(args.csls_n, args.csls_d, args.reps)
    if args.child == "exact":
        return case_exact(args.exact_n, args.exact_d)
    if args.child == "post":
        return case_post(args.post_n, args.post_d)
    return case_approx(args.approx_n, args.approx_d, args.approx_index, args.sample, args.nlist, args.nprobe,
                       args.hnsw_m, args.ef_search, args.approx_csls)


def _print(r: dict) -> None:
    c = r["case"]
    if c == "csls":
        print(f"[csls]   {r['n']:,} x {r['m']:,}, d={r['d']}: CSLS {r['csls_s']:.2f} s vs dense matmul+topk "
              f"{r['dense_matmul_topk_s']:.2f} s -> ratio {r['ratio']:.2f} (limit 2.0; median of paired "
              f"runs {r['median_ratio']:.2f}, CPU-time {r['cpu_ratio']:.2f}); ids equal dense "
              f"{r['top10_ids_equal_dense']:.4f}; peak RSS {r['peak_rss_gib']:.2f} GiB")
    elif c == "exact":
        print(f"[exact]  {r['n']:,} x {r['m']:,}, d={r['d']}: CSLS {r['csls_s']:.1f} s, peak RSS "
              f"{r['peak_rss_gib']:.2f} GiB (limit 4); sampled ids equal {r['sample_top10_ids_equal']:.4f}")
    elif c == "post":
        print(f"[post]   {r['n']:,} x {r['m']:,}, d={r['d']}: search + shared passes {r['shared_s']:.1f} s vs one pass "
              f"per ranking {r['reference_s']:.1f} s -> ratio {r['ratio']:.2f}; reciprocal ranks equal "
              f"{r['reciprocal_ranks_equal']}, top 2 equal {r['top2_ids_equal']}, one-to-one lists equal "
              f"{r['one_to_one_lists_equal']}; peak RSS {r['peak_rss_gib']:.2f} GiB")
    else:
        extra = f", approx CSLS {r['approx_csls_s']:.1f} s" if "approx_csls_s" in r else ""
        print(f"[approx] {r['n']:,} x {r['m']:,}, d={r['d']}, {r['index']}: build {r['build_s']:.1f} s + search "
              f"{r['search_s']:.1f} s, recall@10 {r['recall@10']:.4f} on {r['sample']:,} queries, peak RSS "
              f"{r['peak_rss_gib']:.2f} GiB{extra}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mmea.search.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--cases", default="csls,exact,approx", help="comma-separated: csls, exact, approx, post")
    p.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    p.add_argument("--csls-n", type=int, default=10_500)
    p.add_argument("--csls-d", type=int, default=300)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--exact-n", type=int, default=100_000)
    p.add_argument("--exact-d", type=int, default=300)
    p.add_argument("--post-n", type=int, default=10_277)
    p.add_argument("--post-d", type=int, default=8_960)
    p.add_argument("--approx-n", type=int, default=1_000_000)
    p.add_argument("--approx-d", type=int, default=128)
    p.add_argument("--approx-index", choices=("ivf", "hnsw"), default="ivf")
    p.add_argument("--approx-csls", action="store_true", help="also run approximate CSLS on the approx case")
    p.add_argument("--sample", type=int, default=10_000, help="queries checked against exact search")
    p.add_argument("--nlist", type=int, default=4096)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch / faiss threads (default: library default)")
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(_child(args)), flush=True)
        return 0
    if args.quick:
        args.csls_n, args.exact_n, args.approx_n, args.sample, args.nlist = 3000, 10_000, 50_000, 1000, 256
        args.post_n, args.post_d = 2000, 512
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--quick",)]
    if args.quick:
        forwarded += ["--post-n", str(args.post_n), "--post-d", str(args.post_d)]
        forwarded += ["--csls-n", str(args.csls_n), "--exact-n", str(args.exact_n), "--approx-n",
                      str(args.approx_n), "--sample", str(args.sample), "--nlist", str(args.nlist)]
    results = []
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        if case not in ("csls", "exact", "approx", "post"):
            p.error(f"unknown case {case!r}")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "mmea.search.benchmark", "--child", case, *forwarded],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"[{case}] failed (exit {proc.returncode})\n{proc.stdout}", file=sys.stderr)
            return 1
        r = json.loads(lines[-1][len("RESULT "):])
        r["wall_s"] = time.perf_counter() - t0
        r["loadavg_1m_after"] = os.getloadavg()[0]  # other processes on the machine skew timings
        r["cpus"] = os.cpu_count()
        r["threads"] = args.threads or "default"
        results.append(r)
        _print(r)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

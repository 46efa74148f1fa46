"""Approximate CSLS (FAISS IVF) against exact CSLS on a 20K x 20K synthetic pair (issue 18).

The pair: 200 Gaussian clusters in 64 dimensions (centres N(0, I), members centre + N(0, I)), the
targets a permutation of the sources plus N(0, 0.25 I) noise: a planted one-to-one alignment whose
neighbourhoods cross cluster boundaries, so the IVF cells do not isolate them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmea.search.csls import csls_radius, csls_topk
from mmea.search.knn import IvfIndex, knn, l2_normalize


def _clustered_pair(n: int = 20_000, d: int = 64, clusters: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)  # (c, d)
    src = centres[rng.integers(0, clusters, n)] + rng.standard_normal((n, d)).astype(np.float32)  # (n, d)
    perm = rng.permutation(n)  # source i <-> target perm[i]
    tgt = np.empty_like(src)
    tgt[perm] = src + 0.5 * rng.standard_normal((n, d)).astype(np.float32)
    return l2_normalize(src), l2_normalize(tgt), perm


def _exact_csls_top10(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """Exact CSLS top-10 by brute force: exact radii, then every (source, target) score, a block at a time."""
    r_src = knn(src, tgt, 10, index="flat", normalize=False)[0].astype(np.float64).mean(1).astype(np.float32)
    r_tgt = knn(tgt, src, 10, index="flat", normalize=False)[0].astype(np.float64).mean(1).astype(np.float32)
    T, rt = torch.from_numpy(tgt), torch.from_numpy(r_tgt)[None, :]
    out = np.empty((len(src), 10), np.int64)
    for a in range(0, len(src), 4096):
        S = 2 * (torch.from_numpy(src[a:a + 4096]) @ T.T) - torch.from_numpy(r_src[a:a + 4096])[:, None] - rt
        out[a:a + 4096] = torch.topk(S, 10, dim=1).indices.numpy()  # (b, 10); ties are measure-zero here
    return out


@pytest.fixture(scope="module")
def pair():
    src, tgt, perm = _clustered_pair()
    return src, tgt, perm, _exact_csls_top10(src, tgt)


def test_ivf_csls_recall_at_default_nprobe(pair):
    """recall@10 of approximate CSLS (IVF, default nlist / nprobe, radii from the approximate lists of
    both sides) against exact CSLS >= 0.99."""
    src, tgt, perm, exact = pair
    res = csls_topk(src, tgt, 10, index="ivf", normalize=False)
    assert not res.exact and res.index == "ivf"
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(res.ids.tolist(), exact.tolist())])
    assert recall >= 0.99, recall
    assert (exact[:, 0] == perm).mean() > 0.95  # the planted alignment is found (the pair is not noise)


def test_ivf_csls_radii_come_from_the_approximate_lists(pair):
    """r_src / r_tgt are the mean cosines of the IVF top-10 of each side (not exact radii)."""
    src, tgt, _, _ = pair
    src, tgt = src[:3000], tgt[:3000]
    res = csls_topk(src, tgt, 10, index="ivf", normalize=False, nlist=64, nprobe=1)
    idx_t = IvfIndex(nlist=64, nprobe=1).build(tgt)
    idx_s = IvfIndex(nlist=64, nprobe=1).build(src)
    v_t, _ = idx_t.search(src, 50)
    v_s, _ = idx_s.search(tgt, 10)
    np.testing.assert_allclose(res.r_src, v_t[:, :10].astype(np.float64).mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.r_tgt, v_s.astype(np.float64).mean(1), rtol=1e-5, atol=1e-6)
    exact_r = csls_radius(src, tgt, 10, index="torch", normalize=False)
    assert (res.r_src <= exact_r[0] + 1e-6).all() and (res.r_src < exact_r[0] - 1e-4).any()  # nprobe=1 misses some

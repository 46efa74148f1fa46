"""TF-IDF weighting of sparse count rows (bags of relations / attributes), shared by the models."""

from __future__ import annotations

import numpy as np


def tfidf_rows(counts) -> "scipy.sparse.csr_matrix":  # noqa: F821
    """Row-normalised TF-IDF of a sparse count matrix ``(n, V)``: ``tf * (log((1+n)/(1+df)) + 1)``."""
    import scipy.sparse as sp

    x = sp.csr_matrix(counts, dtype=np.float64)
    n = x.shape[0]
    df = np.bincount(x.indices, minlength=x.shape[1])  # (V,)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    x = x @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ x)


def paired_tfidf(src, tgt):
    """TF-IDF rows of two bags over their shared vocabulary, idf from both KGs: ``(source, target)`` CSR float32."""
    import scipy.sparse as sp

    both = tfidf_rows(sp.vstack([src, tgt]).tocsr())
    n = src.shape[0]
    return both[:n].tocsr().astype(np.float32), both[n:].tocsr().astype(np.float32)

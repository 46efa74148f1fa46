"""CLEP pre-training of SelfMEA's structure encoder (``--set model.pretrain=clep``; off by default).

Both KGs' triples form one graph with no edge between the KGs (target ids offset,
:func:`~mmea.encoders.structure.joint_triples`; no alignment link is read), and every
entity's text is its name embedding from the task's name encoder (one shared space for
both KGs).  A small CLEP model (entity + relation embeddings, shared ``MLP_g`` / ``MLP_t``)
is trained on the pairs ``(h, r, name(t))``, their inverses and ``(e, self, name(e))`` for
a few epochs; the entity's graph embedding ``x~_g(e) = MLP_g(h_e + rho_self)`` then lies in
the projected name space, comparable across the KGs, and replaces the names as the input
that SelfMEA's structure modality propagates over ``1..H`` hops.
"""

from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger("mmea.clep")

__all__ = ["clep_structure_features"]


def clep_structure_features(task, names: list[np.ndarray], dim: int = 64, epochs: int = 3,
                            max_minutes: float = 2.0, batch_size: int = 1024, lr: float = 0.005,
                            seed: int = 0) -> tuple[list[np.ndarray], dict]:
    """``([x~_g of source (n1, p), of target (n2, p)], info)``, rows L2-normalised.

    ``names``: the two KGs' name features ``(n_k, d_text)`` in one space.
    """
    import torch

    from ..encoders.structure import joint_triples
    from ..linkpred.training import make_optimizer
    from .encoders import ClepModel, EmbeddingGraphEncoder
    from .training import entity_graph_embeddings, run_epoch, training_pairs

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    triples, n = joint_triples(task)
    n1 = task.source.num_entities
    n_rel = int(triples[:, 1].max()) + 1 if len(triples) else 1
    x_text = torch.from_numpy(np.ascontiguousarray(np.concatenate(names), dtype=np.float32))  # (n, d_text)
    has_text = np.asarray(x_text.norm(dim=1) > 0)
    pairs = training_pairs(triples, n, n_rel, identity_relation=True, has_text=has_text)
    model = ClepModel(EmbeddingGraphEncoder(n, 2 * n_rel + 1, dim), x_text.shape[1], dim)
    optimizer = make_optimizer(list(model.parameters()), lr)
    # text id = the entity's row of distinct name vectors: entities with one name are in-batch duplicates
    _, text_ids = np.unique(np.round(x_text.numpy(), 5), axis=0, return_inverse=True)
    text_ids = torch.as_tensor(text_ids.reshape(-1).astype(np.int64))
    losses = []
    deadline = t0 + 60 * max_minutes
    for _ in range(epochs):
        loss, _, out_of_time = run_epoch(model, optimizer, pairs, x_text, text_ids, batch_size, rng, True, deadline)
        losses.append(round(loss, 4))
        if out_of_time:
            break
    model.eval()
    emb = entity_graph_embeddings(model, n_rel, True).numpy()  # (n, p)
    info = {"method": "clep", "epochs_run": len(losses), "loss": losses, "dim": dim, "pairs": int(len(pairs)),
            "time_s": round(time.perf_counter() - t0, 2)}
    log.info("selfmea: CLEP pre-training of the structure input: %s", info)
    return [np.ascontiguousarray(emb[:n1]), np.ascontiguousarray(emb[n1:])], info

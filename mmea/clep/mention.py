"""Zero-shot mention linking with a CLEP run, and reading a run's embeddings for other models.

:func:`link_mention` encodes a free-text mention with the run's text encoder and
``MLP_t``, ``x~_t(m) = MLP_t(TextEncoder(m))``, and ranks every entity ``e`` by

    score(e) = cos(x~_g(e), x~_t(m)),   x~_g(e) = MLP_g(h_e + rho_self)

where ``rho_self`` is the embedding of the identity relation that pre-training fits on the
pairs ``(e, self, d(e))`` (``identity_relation = true``, the default), so ``x~_g(e)`` is the
entity's graph embedding placed next to its own text.  A run trained without it uses the
mean of the relation embeddings instead.  ``x~_g(e)`` is ``entity_graph`` in the run's
``embeddings.npz``; the entity's text plays no part in its score.  A run trained with
``text_finetune`` encodes the mention with its fine-tuned model (``RUN/text_encoder/``).

:func:`load_clep_embeddings` reads the entity and relation tables that link-prediction
models (``init_from``) and SelfMEA (``pretrain = "clep"``) start from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MmeaInputError

__all__ = ["resolve_clep_run", "link_mention", "load_clep_embeddings"]


def resolve_clep_run(name_or_dir: str | Path, runs_root: str | Path = "runs") -> Path:
    """A ``mmea pretrain-clep`` run directory: the folder itself, or the newest ``runs/clep-<NAME>-*``."""
    p = Path(name_or_dir)
    if p.is_dir():
        if not (p / "embeddings.npz").is_file() or not (p / "model.pt").is_file():
            raise MmeaInputError(f"{p}: not a finished `mmea pretrain-clep` run (no embeddings.npz / model.pt)",
                                 hint="run `mmea pretrain-clep --dataset NAME --out DIR` first")
        return p
    found = sorted(Path(runs_root).glob(f"clep-{name_or_dir}-*/embeddings.npz"), key=lambda x: x.stat().st_mtime)
    if not found:
        raise MmeaInputError(f"{name_or_dir!r}: no such run directory, and no {runs_root}/clep-{name_or_dir}-* run",
                             hint=f"pre-train first: mmea pretrain-clep --dataset {name_or_dir}, or pass its --out DIR")
    return found[-1].parent


def link_mention(run_dir: str | Path, mention: str, topk: int = 10) -> list[dict]:
    """The ``topk`` entities whose graph embedding is closest to ``mention``: ``[{rank, id, name, score}]``."""
    import torch

    from .encoders import ProjectionMlp, load_text_encoder

    if not mention or not mention.strip():
        raise MmeaInputError("link-mention: the mention text is empty")
    if topk < 1:
        raise MmeaInputError(f"link-mention: --topk must be >= 1, got {topk}")
    run = Path(run_dir)
    emb = np.load(run / "embeddings.npz", allow_pickle=False)
    state = torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    w0, w2 = state["mlp_t.net.0.weight"], state["mlp_t.net.2.weight"]  # (hidden, d_text), (p, hidden)
    mlp_t = ProjectionMlp(w0.shape[1], w0.shape[0], w2.shape[0])
    mlp_t.load_state_dict({k.removeprefix("mlp_t."): v for k, v in state.items() if k.startswith("mlp_t.")})
    x_t = load_text_encoder(run).encode([mention.strip()])  # (1, d_text)
    with torch.no_grad():
        q = torch.nn.functional.normalize(mlp_t(torch.as_tensor(x_t)), dim=-1)[0].numpy()  # (p,)
    scores = emb["entity_graph"] @ q  # (E,)
    k = min(topk, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.lexsort((top, -scores[top]))]  # by score, then id: deterministic
    ids, names = emb["entity_ids"], emb["entity_names"]
    return [{"rank": i + 1, "index": int(e), "id": str(ids[e]), "name": str(names[e]), "score": float(scores[e])}
            for i, e in enumerate(top)]


def load_clep_embeddings(path: str | Path) -> dict:
    """``{"entity" (E, d), "relation" (R, d), "entity_ids" (E,) or None, "source"}`` of a CLEP run or ``.npz``.

    ``path`` is a ``mmea pretrain-clep`` run directory (its ``embeddings.npz``)
    or any ``.npz`` holding ``entity`` and ``relation`` arrays.
    """
    p = Path(path)
    f = p / "embeddings.npz" if p.is_dir() else p
    if not f.is_file():
        raise MmeaInputError(f"init_from: {f} not found",
                             hint="give a `mmea pretrain-clep` run directory or an .npz with entity and relation "
                                  "arrays")
    try:
        data = np.load(f, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise MmeaInputError(f"init_from: {f} is not a readable .npz file ({e})") from None
    missing = [k for k in ("entity", "relation") if k not in data.files]
    if missing:
        raise MmeaInputError(f"init_from: {f} lacks the array(s) {', '.join(missing)} (has {', '.join(data.files)})")
    return {"entity": np.asarray(data["entity"], dtype=np.float32),
            "relation": np.asarray(data["relation"], dtype=np.float32),
            "entity_ids": data["entity_ids"] if "entity_ids" in data.files else None, "source": str(f)}

"""CLEP's encoders: graph encoders (:data:`GRAPH_ENCODERS`), frozen text encoders
(:data:`TEXT_ENCODERS`), the projection MLPs and :class:`ClepModel`.

Graph side (Papaluca et al., CLEP, sec. 3): ``(h, rho) = GraphEncoder(e_head, r)``,
``x_g = h + rho``, ``x~_g = MLP_g(x_g)``.

* ``embedding``: a plain entity table ``h = E[e]`` and relation table ``rho = R[r]``.
* ``rgcn``: an R-GCN (Schlichtkrull et al. 2018, ESWC) over the training graph (with
  inverse edges), basis-decomposed:

      h_i' = act( W_0 h_i + sum_b V_b^T sum_{(j, r) -> i} a_{r b} / c_i h_j ),  c_i = in-degree of i

  vectorised with ``index_add``: the messages of basis ``b`` are the gathered
  source rows scaled by ``a_{r b} / c_i``, summed into their destination.  The last
  layer is computed only for the entities of the batch (their in-edges, from a CSR
  by destination), so a step costs ``O(edges into the batch)``, not ``O(all edges)``.

Text side: ``x~_t = MLP_t(x_t)`` with ``x_t = TextEncoder(d_tail)`` computed once for
every distinct entity text and cached (the text encoder is frozen, the default):

* ``offline``: TF-IDF over character n-grams plus a seeded sparse random projection,
  as :class:`~mmea.encoders.names.CharNgramEncoder`; the fitted vocabulary and idf are
  saved with the run so that a new mention is encoded in the same space.
* any other name: a sentence-transformers model by hub name or local folder, from local
  files only (:class:`~mmea.encoders.names.SentenceTransformerEncoder`); offline and not
  cached, the error says how to provide it.

With ``text_finetune`` the sentence-transformers model itself trains
(:class:`FineTunedSentenceTransformer`, a submodule of :class:`ClepModel`): each step
encodes the batch's distinct tail texts with gradients, and evaluation re-encodes every
entity text with the current weights; nothing is cached.

This module imports torch at the top: only the CLEP trainer and the mention linker import it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import MmeaInputError
from ..registry import Registry
from ..runs import atomic_write_text
from .math import clep_logits

log = logging.getLogger("mmea.clep")

__all__ = ["GRAPH_ENCODERS", "TEXT_ENCODERS", "GraphEncoder", "EmbeddingGraphEncoder", "RgcnGraphEncoder",
           "FrozenTextEncoder", "OfflineTextEncoder", "SentenceTransformerTextEncoder", "make_text_encoder",
           "FineTunedSentenceTransformer", "FINETUNED_TEXT_DIR", "load_text_encoder", "ProjectionMlp", "ClepModel"]

#: the folder of a run directory holding a fine-tuned sentence-transformers model (``model.save``)
FINETUNED_TEXT_DIR = "text_encoder"


# ------------------------------------------------------------------------------------------- graph side
class GraphEncoder(nn.Module):
    """``forward(heads, rels) -> (h (B, d), rho (B, d))``; :meth:`entity_states` gives ``h`` of every entity."""

    registry_name: str = ""

    def __init__(self, num_entities: int, num_relations: int, dim: int):
        super().__init__()
        if dim < 1 or num_entities < 1 or num_relations < 1:
            raise MmeaInputError(f"graph encoder sizes must be positive (entities {num_entities}, relations "
                                 f"{num_relations}, dim {dim})")
        self.num_entities, self.num_relations, self.dim = int(num_entities), int(num_relations), int(dim)
        self.entity_emb = nn.Parameter(torch.randn(num_entities, dim) / dim ** 0.5)
        self.relation_emb = nn.Parameter(torch.randn(num_relations, dim) / dim ** 0.5)

    def heads(self, idx: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``h (B, d)`` of entities ``idx (B,)``."""
        raise NotImplementedError

    def entity_states(self) -> torch.Tensor:  # pragma: no cover - abstract
        """``h (E, d)`` of every entity."""
        raise NotImplementedError

    def forward(self, heads: torch.Tensor, rels: torch.Tensor):
        return self.heads(heads), nn.functional.embedding(rels, self.relation_emb)  # (B, d), (B, d)


GRAPH_ENCODERS: Registry[GraphEncoder] = Registry("graph encoder", suffix="GraphEncoder")


@GRAPH_ENCODERS.register(name="embedding")
class EmbeddingGraphEncoder(GraphEncoder):
    """Plain entity and relation embeddings: ``h = E[e]``, ``rho = R[r]``."""

    def __init__(self, num_entities, num_relations, dim, triples=None):
        super().__init__(num_entities, num_relations, dim)

    def heads(self, idx):
        return nn.functional.embedding(idx, self.entity_emb)  # (B, d)

    def entity_states(self):
        return self.entity_emb


def _csr_by_destination(src: np.ndarray, rel: np.ndarray, dst: np.ndarray, n: int):
    """Edges sorted by destination plus ``indptr (n + 1,)``: the in-edges of ``i`` are ``indptr[i]:indptr[i+1]``."""
    order = np.argsort(dst, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=indptr[1:])
    return src[order], rel[order], dst[order], indptr


@GRAPH_ENCODERS.register(name="rgcn", aliases=("r-gcn",))
class RgcnGraphEncoder(GraphEncoder):
    """Basis-decomposed R-GCN over the training graph (Schlichtkrull et al. 2018); ``rho`` a relation table.

    ``triples (T, 3)`` are the message edges ``head -> tail`` with their
    relation ids, inverse edges included by the caller (:func:`~mmea.clep.math.with_inverses`);
    ``num_bases`` basis matrices ``V_b (d, d)`` shared by all relation types,
    coefficients ``a (R, num_bases)``, a self-loop ``W_0`` and ``layers`` layers
    (tanh between them, none after the last, so ``h`` is not sign-constrained).

    ``max_neighbors`` (``K``, 0: all): in training, the last layer of a batch
    aggregates at most ``K`` in-edges per node, drawn uniformly with replacement,
    normalised by the number drawn (an unbiased estimate of the ``1 / c_i`` mean,
    GraphSAGE-style sampling).  Triples are drawn in proportion to their head's
    degree, so without it a batch gathers ``E[deg^2] / E[deg]`` edges per head:
    on FB15k-237 (hubs with thousands of edges) one epoch took 360 s on one CPU
    thread.  Evaluation (``entity_states``, ``eval()`` mode) uses every edge.
    """

    def __init__(self, num_entities, num_relations, dim, triples=None, num_bases: int = 4, layers: int = 1,
                 edge_relations: int | None = None, max_neighbors: int = 0):
        super().__init__(num_entities, num_relations, dim)
        if triples is None or not len(triples):
            raise MmeaInputError("rgcn graph encoder: no training triples to pass messages over")
        if num_bases < 1 or layers < 1:
            raise MmeaInputError(f"rgcn: num_bases and layers must be >= 1, got {num_bases}, {layers}")
        triples = np.asarray(triples, dtype=np.int64)
        n_edge_rel = int(edge_relations or triples[:, 1].max() + 1)
        src, rel, dst, indptr = _csr_by_destination(triples[:, 0], triples[:, 1], triples[:, 2], num_entities)
        deg = np.diff(indptr).astype(np.float32)
        self.register_buffer("src", torch.from_numpy(src), persistent=False)
        self.register_buffer("rel", torch.from_numpy(rel), persistent=False)
        self.register_buffer("dst", torch.from_numpy(dst), persistent=False)
        self.register_buffer("indptr", torch.from_numpy(indptr), persistent=False)
        self.register_buffer("norm", torch.from_numpy(1.0 / np.maximum(deg, 1.0)), persistent=False)  # 1 / c_i
        self.num_bases, self.layers, self.max_neighbors = int(num_bases), int(layers), int(max_neighbors)
        self.bases = nn.Parameter(torch.randn(layers, num_bases, dim, dim) / dim ** 0.5)
        self.coeff = nn.Parameter(torch.randn(layers, n_edge_rel, num_bases) / num_bases ** 0.5)
        self.self_loop = nn.Parameter(torch.stack([torch.eye(dim) for _ in range(layers)]))

    def in_edges(self, nodes: torch.Tensor, max_neighbors: int = 0):
        """``(edge positions (M,), local destination (M,), edges taken per node (U,))`` of ``nodes (U,)``.

        ``max_neighbors > 0``: a node with more in-edges gets that many, drawn
        uniformly with replacement (the global torch generator, so seeded runs repeat).
        """
        starts, ends = self.indptr[nodes], self.indptr[nodes + 1]
        counts = ends - starts  # (U,)
        take = counts.clamp(max=max_neighbors) if max_neighbors > 0 else counts  # (U,)
        local = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), take)  # (M,)
        offsets = torch.cumsum(take, 0) - take  # (U,)
        within = torch.arange(int(take.sum()), device=nodes.device) - offsets[local]  # (M,) 0..take-1
        if max_neighbors > 0:
            sampled = counts[local] > max_neighbors
            drawn = (torch.rand(len(local), device=nodes.device) * counts[local]).long()
            within = torch.where(sampled, drawn, within)
        return starts[local] + within, local, take

    def layer(self, k: int, h: torch.Tensor, nodes: torch.Tensor | None) -> torch.Tensor:
        """Layer ``k`` for ``nodes`` (all entities when None) given every entity's input ``h (E, d)``."""
        if nodes is None:
            pos, local, n_out = None, self.dst, self.num_entities
            src, rel, dst_norm = self.src, self.rel, self.norm[self.dst]
            out = h @ self.self_loop[k]  # (E, d)
        else:
            pos, local, take = self.in_edges(nodes, self.max_neighbors if self.training else 0)
            src, rel, n_out = self.src[pos], self.rel[pos], len(nodes)
            dst_norm = 1.0 / take.clamp(min=1).to(h.dtype)[local]  # = 1 / c_i unless sampled
            out = h[nodes] @ self.self_loop[k]  # (U, d)
        msg = h[src]  # (M, d)
        scale = self.coeff[k][rel] * dst_norm[:, None]  # (M, nb): a_{r b} / c_i
        for b in range(self.num_bases):
            agg = torch.zeros(n_out, self.dim, dtype=h.dtype, device=h.device)
            agg = agg.index_add(0, local, msg * scale[:, b:b + 1])  # (n_out, d)
            out = out + agg @ self.bases[k, b]
        return out

    def _states(self, nodes: torch.Tensor | None) -> torch.Tensor:
        h = self.entity_emb
        for k in range(self.layers):
            last = k == self.layers - 1
            h = self.layer(k, h, nodes if last else None)
            if not last:
                h = torch.tanh(h)
        return h

    def heads(self, idx):
        uniq, inv = torch.unique(idx, return_inverse=True)
        return self._states(uniq)[inv]  # (B, d)

    def entity_states(self):
        return self._states(None)  # (E, d)

    def neighbour_count(self) -> np.ndarray:
        return np.diff(self.indptr.cpu().numpy())


# -------------------------------------------------------------------------------------------- text side
class FrozenTextEncoder:
    """Encodes texts once (no gradient): ``fit_encode(texts)`` on the entity texts, ``encode(new)`` afterwards.

    ``state()`` is what a run directory keeps (JSON-able) so that
    :func:`load_text_encoder` rebuilds the same encoder for a mention.
    """

    registry_name: str = ""

    def fit_encode(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def state(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        """Write ``text_encoder.json`` (and any array it needs) into ``folder``."""
        atomic_write_text(folder / "text_encoder.json", json.dumps(self.state(), indent=1))

    def describe(self) -> dict:
        return {k: v for k, v in self.state().items() if k not in ("vocabulary", "idf")}


TEXT_ENCODERS: Registry[FrozenTextEncoder] = Registry("CLEP text encoder", suffix="TextEncoder")


@TEXT_ENCODERS.register(name="offline", aliases=("char-ngram", "char"))
class OfflineTextEncoder(FrozenTextEncoder):
    """Character n-gram TF-IDF + seeded sparse random projection (the offline name encoder of mmea.encoders.names)."""

    def __init__(self, dim: int = 300, ngram_range=(1, 3), seed: int = 0, vocabulary: dict | None = None,
                 idf: list | None = None):
        from ..encoders.names import CharNgramEncoder

        self.char = CharNgramEncoder(ngram_range=tuple(ngram_range), dim=dim, seed=seed, progress=False)
        self.vocabulary = vocabulary
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        self._projection = None

    def _vectorizer(self, fitted: bool):
        from sklearn.feature_extraction.text import TfidfVectorizer

        kw = dict(analyzer="char_wb", ngram_range=self.char.ngram_range, lowercase=True, sublinear_tf=True,
                  norm="l2", dtype=np.float32)
        if not fitted:
            return TfidfVectorizer(**kw)
        vec = TfidfVectorizer(vocabulary=self.vocabulary, **kw)
        vec.idf_ = self.idf
        return vec

    def _project(self, tfidf) -> np.ndarray:
        from ..encoders.names import _l2_normalize_rows, _sparse_random_matrix

        if self._projection is None:
            self._projection = _sparse_random_matrix(tfidf.shape[1], self.char.dim, self.char.seed)
        dense = np.asarray((tfidf @ self._projection).toarray(), dtype=np.float32)  # (n, dim)
        return _l2_normalize_rows(np.ascontiguousarray(dense))

    def fit_encode(self, texts):
        texts = [t if t.strip() else "" for t in texts]
        if not any(texts):
            raise MmeaInputError("CLEP offline text encoder: every entity text is empty")
        vec = self._vectorizer(False)
        tfidf = vec.fit_transform(list(texts)).tocsr()
        self.vocabulary = {k: int(v) for k, v in vec.vocabulary_.items()}
        self.idf = vec.idf_.astype(np.float32)
        self._projection = None
        return self._project(tfidf)

    def encode(self, texts):
        if self.vocabulary is None:
            raise MmeaInputError("CLEP offline text encoder: not fitted (no vocabulary)")
        return self._project(self._vectorizer(True).transform(list(texts)).tocsr())

    def state(self):
        return {"encoder": "offline", "model": "tfidf-char-wb + sparse random projection", "dim": self.char.dim,
                "ngram_range": list(self.char.ngram_range), "seed": self.char.seed,
                "vocabulary": self.vocabulary, "idf": None if self.idf is None else self.idf.tolist()}


@TEXT_ENCODERS.register(name="sentence-transformers", aliases=("st",))
class SentenceTransformerTextEncoder(FrozenTextEncoder):
    """A frozen sentence-transformers model (hub name found in the local caches, or a folder); unit-norm rows."""

    def __init__(self, model: str, batch_size: int = 64, device: str = "cpu"):
        from ..encoders.names import SentenceTransformerEncoder

        self.st = SentenceTransformerEncoder(model=model, batch_size=batch_size, device=device, normalize=True,
                                             progress=False)
        self.path = self.st.model_path()  # raises WeightsNotFoundError (how to provide it) when offline

    def fit_encode(self, texts):
        return self.encode(texts)

    def encode(self, texts):
        return np.asarray(self.st.encode(list(texts)).matrix, dtype=np.float32)

    def state(self):
        return {"encoder": "sentence-transformers", "model": self.st.model, "model_path": str(self.path)}


def make_text_encoder(spec: str, dim: int = 300, seed: int = 0, device: str = "cpu") -> FrozenTextEncoder:
    """``offline`` (char n-grams) or a sentence-transformers hub name / folder."""
    if spec in TEXT_ENCODERS and TEXT_ENCODERS.get(spec) is OfflineTextEncoder:
        return OfflineTextEncoder(dim=dim, seed=seed)
    return SentenceTransformerTextEncoder(spec, device=device)


class FineTunedSentenceTransformer(nn.Module):
    """A sentence-transformers model that CLEP trains (``text_finetune``): ``forward(texts) -> x_t (n, d_text)``.

    A fresh copy of the model is loaded (never the process-wide cached one that the
    frozen encoders share, which must not change).  ``forward`` tokenizes with the
    model's own tokenizer (at most ``max_length`` tokens; 0 keeps the model's),
    runs its modules with gradients and returns the L2-normalised
    ``sentence_embedding``, as the frozen encoder's ``encode(normalize=True)``;
    an empty text gives a zero row, as there.  :meth:`encode` embeds any number of
    texts in batches, without gradients, in eval mode.  :meth:`save` writes the
    model into ``RUN/text_encoder/`` and ``text_encoder.json`` pointing at it, so
    :func:`load_text_encoder` (``mmea link-mention``) encodes mentions with the
    fine-tuned weights.
    """

    def __init__(self, model: str, max_length: int = 0, batch_size: int = 64, device: str = "cpu"):
        super().__init__()
        from ..encoders.names import SentenceTransformerEncoder, _load_sentence_transformer

        finder = SentenceTransformerEncoder(model=model, device=device, progress=False)
        self.model_name, self.path = str(model), finder.model_path()  # WeightsNotFoundError when offline
        self.st = _load_sentence_transformer.__wrapped__(str(self.path), device)  # uncached: a private copy
        if max_length:
            self.st.max_seq_length = int(max_length)
        self.batch_size = int(batch_size)

    @property
    def dim(self) -> int:
        st = self.st
        return int(st.get_embedding_dimension() if hasattr(st, "get_embedding_dimension")
                   else st.get_sentence_embedding_dimension())

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        from ..encoders.names import _clean

        texts = [_clean(t) for t in texts]
        device = next(self.st.parameters()).device
        tokenize = getattr(self.st, "preprocess", None) or self.st.tokenize
        features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in tokenize(texts).items()}
        x = nn.functional.normalize(self.st(features)["sentence_embedding"], dim=-1)  # (n, d_text)
        empty = torch.tensor([not t for t in texts], device=device)
        return x.masked_fill(empty[:, None], 0.0) if bool(empty.any()) else x

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``x_t (n, d_text)`` of ``texts`` with the current weights: batched, no gradient, eval mode."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                parts = [self(list(texts[i:i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
            return torch.cat(parts) if parts else torch.zeros(0, self.dim)
        finally:
            self.train(was_training)

    def state(self) -> dict:
        return {"encoder": "sentence-transformers", "model": self.model_name, "base_model_path": str(self.path),
                "finetuned": True, "model_path": FINETUNED_TEXT_DIR, "max_length": int(self.st.max_seq_length)}

    def save(self, folder: Path) -> None:
        """``folder/text_encoder/`` (the fine-tuned model) and ``folder/text_encoder.json`` naming it."""
        self.st.save(str(Path(folder) / FINETUNED_TEXT_DIR))
        atomic_write_text(Path(folder) / "text_encoder.json", json.dumps(self.state(), indent=1))

    def describe(self) -> dict:
        return self.state()


def load_text_encoder(folder: Path) -> FrozenTextEncoder:
    """The text encoder a run saved (``text_encoder.json``; a fine-tuned model from ``RUN/text_encoder/``)."""
    path = Path(folder) / "text_encoder.json"
    if not path.is_file():
        raise MmeaInputError(f"{path}: not found; is {folder} a `mmea pretrain-clep` run directory?")
    s = json.loads(path.read_text(encoding="utf-8"))
    if s["encoder"] == "offline":
        return OfflineTextEncoder(dim=s["dim"], ngram_range=s["ngram_range"], seed=s["seed"],
                                  vocabulary=s["vocabulary"], idf=s["idf"])
    if s.get("finetuned"):
        tuned = Path(folder) / s["model_path"]  # relative to the run: the run directory can move
        if not tuned.is_dir():
            raise MmeaInputError(f"{tuned}: the fine-tuned text encoder of this run is missing",
                                 hint="a text_finetune run keeps its sentence-transformers model there; re-run "
                                      "`mmea pretrain-clep` or copy the whole run directory")
        return SentenceTransformerTextEncoder(str(tuned.resolve()))
    model = s["model_path"] if Path(s["model_path"]).is_dir() else s["model"]
    return SentenceTransformerTextEncoder(model)


# ---------------------------------------------------------------------------------------------- the model
class ProjectionMlp(nn.Module):
    """``Linear(d_in, hidden) -> GELU -> Linear(hidden, p)``: CLEP's projection heads ``MLP_g`` / ``MLP_t``."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))

    def forward(self, x):  # (B, d_in) -> (B, d_out)
        return self.net(x)


class ClepModel(nn.Module):
    """Graph encoder + ``MLP_g``, ``MLP_t`` over text features, and the learnable temperature ``tau``.

    ``logit_scale`` holds ``tau`` (``m_ij = cos * e^tau``), initialised at
    ``log(1 / 0.07)`` as in CLIP.  ``text_encoder`` (a :class:`FineTunedSentenceTransformer`)
    is set when the text encoder trains too; None when text features are a frozen cache.
    """

    def __init__(self, graph: GraphEncoder, text_dim: int, proj_dim: int, hidden: int | None = None,
                 init_tau: float = float(np.log(1 / 0.07)), text_encoder: FineTunedSentenceTransformer | None = None):
        super().__init__()
        self.graph = graph
        hidden = int(hidden or max(graph.dim, proj_dim))
        self.mlp_g = ProjectionMlp(graph.dim, hidden, proj_dim)
        self.mlp_t = ProjectionMlp(text_dim, hidden, proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(init_tau)))
        self.text_encoder = text_encoder

    def text_inputs(self, text_ids: torch.Tensor, x_text: torch.Tensor | None = None,
                    texts: Sequence[str] | None = None) -> torch.Tensor:
        """``x_t (B, d_text)`` of text ids ``(B,)``: rows of the frozen cache ``x_text (U, d_text)``, or,
        with a trainable ``text_encoder``, the batch's distinct ``texts`` encoded with gradients."""
        if self.text_encoder is None:
            return x_text[text_ids]
        uniq, inv = torch.unique(text_ids, return_inverse=True)
        return self.text_encoder([texts[i] for i in uniq.tolist()])[inv]  # (B, d_text)

    def text_features(self, x_text: torch.Tensor | None = None, texts: Sequence[str] | None = None) -> torch.Tensor:
        """``x_t (U, d_text)`` of every distinct text for evaluation: the frozen cache, or ``texts`` encoded
        with the current fine-tuned weights (no gradient, eval mode)."""
        if self.text_encoder is None:
            return x_text
        return self.text_encoder.encode(list(texts))

    def head_parameters(self) -> list:
        """Every parameter but the fine-tuned text encoder's (those train with their own learning rate)."""
        skip = {id(p) for p in self.text_encoder.parameters()} if self.text_encoder is not None else set()
        return [p for p in self.parameters() if id(p) not in skip]

    def graph_side(self, heads: torch.Tensor, rels: torch.Tensor) -> torch.Tensor:
        """``x~_g = MLP_g(h + rho)`` ``(B, p)``."""
        h, rho = self.graph(heads, rels)  # (B, d), (B, d)
        return self.mlp_g(h + rho)

    def text_side(self, x_t: torch.Tensor) -> torch.Tensor:
        """``x~_t = MLP_t(x_t)`` ``(B, p)`` of cached text features ``(B, d_text)``."""
        return self.mlp_t(x_t)

    def logits(self, heads, rels, x_t):
        return clep_logits(self.graph_side(heads, rels), self.text_side(x_t), self.logit_scale)  # (B, B)

"""The ``names`` modality: entity texts encoded by a name encoder (:mod:`mmea.encoders.names`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..encoders.names import DEFAULT_NAME_MODEL
from .base import MODALITY_ENCODERS, ModalityEncoder, file_signature


@MODALITY_ENCODERS.register(name="names", aliases=("name",))
class NamesModality(ModalityEncoder):
    """Entity names / texts: a transformer (LaBSE) or character n-gram TF-IDF, both KGs in one space.

    ``(n, d)`` float32; ``char-ngram`` also keeps the exact TF-IDF in the extras
    ``source_tfidf`` / ``target_tfidf``.  The ``auto`` encoder's fallback reason is in the info.
    """

    position = 0

    @dataclass(frozen=True)
    class Options:
        """``encoder``: auto | char-ngram | sentence-transformers; ``model``: hub name or folder;
        ``source``: uri | name | translated | auto; ``dim``: char n-gram projection size (``None``:
        sparse TF-IDF only); ``projection``: random | svd."""

        encoder: str = "auto"
        model: str = DEFAULT_NAME_MODEL
        source: str = "auto"
        batch_size: int = 64
        dim: int | None = 300
        ngram_range: tuple[int, int] = (1, 3)
        projection: str = "random"
        transliterate: bool = False

    @classmethod
    def legacy_options(cls, fo) -> dict:
        return {"encoder": fo.name_encoder, "model": fo.name_model, "source": fo.name_source,
                "batch_size": fo.name_batch_size, "dim": fo.name_dim, "ngram_range": tuple(fo.name_ngram_range),
                "projection": fo.name_projection, "transliterate": fo.transliterate}

    def job(self, task):
        from ..encoders.names import SentenceTransformerEncoder, resolve_name_encoder, task_texts

        o = self.options
        enc = resolve_name_encoder(
            o.encoder, model=o.model, batch_size=o.batch_size, device=self.device,
            progress=self.progress, ngram_range=tuple(o.ngram_range), dim=o.dim,
            projection=o.projection, transliterate=o.transliterate, seed=self.seed)
        model_sig = None
        if isinstance(enc, SentenceTransformerEncoder):
            path = enc.model_path()  # raises the actionable error when absent
            model_sig = {"path": str(path), "files": file_signature(path)}
        fallback = getattr(enc, "auto_fallback_reason", None)
        parts = {"encoder": enc.registry_name, "requested": o.encoder, "model": enc.config().get("model"),
                 "model_files": model_sig, "options": {**enc.config(), "name_source": o.source}}

        def compute():
            src_t, tgt_t = task_texts(task.source, task.target, o.source)
            src, tgt = enc.encode_pair(src_t.texts, tgt_t.texts)
            info = dict(src.info)
            info.update({"requested": o.encoder, "name_source": o.source,
                         "text_origin": {"source": src_t.counts, "target": tgt_t.counts}})
            if fallback:
                info["fallback_reason"] = fallback
            arrays = {"source": src.matrix, "target": tgt.matrix, "source_mask": src.mask, "target_mask": tgt.mask}
            for k in src.extras:
                arrays[f"source_{k}"], arrays[f"target_{k}"] = src.extras[k], tgt.extras[k]
            return arrays, info

        return parts, compute

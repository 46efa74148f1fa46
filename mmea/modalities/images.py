"""The ``images`` modality: features of entity images, extracted (ResNet / VGG) or imported from files."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MmeaInputError
from .base import MODALITY_ENCODERS, ModalityEncoder, file_signature

log = logging.getLogger("mmea.features")


@MODALITY_ENCODERS.register(name="images", aliases=("image", "visual"))
class ImagesModality(ModalityEncoder):
    """Entity images: a torchvision backbone's features, or precomputed feature files (``d = 0`` without any).

    Each side of precomputed files takes the vectors whose keys match its ids or URIs; a KG
    without images gets zero rows of the other's size.
    """

    position = 1

    @dataclass(frozen=True)
    class Options:
        """``encoder``: resnet152 | vgg16; ``weights``: weights file; ``features``: precomputed feature
        files (pickle / npy / npz / h5); ``ids``: id list for ``.npy`` files; ``root``: folder that
        relative image paths are resolved against."""

        encoder: str = "resnet152"
        weights: str | None = None
        allow_random_weights: bool = False
        features: tuple[str, ...] = ()
        ids: str | None = None
        root: str | None = None
        batch_size: int = 32

    @classmethod
    def legacy_options(cls, fo) -> dict:
        return {"encoder": fo.image_encoder, "weights": fo.image_weights,
                "allow_random_weights": fo.allow_random_image_weights, "features": tuple(fo.image_features),
                "ids": fo.image_ids, "root": fo.image_root, "batch_size": fo.image_batch_size}

    def job(self, task):
        return self._precomputed_job(task) if self.options.features else self._extract_job(task)

    def _precomputed_job(self, task):
        o = self.options
        files = [Path(p).expanduser() for p in o.features]
        for f in files:
            if not f.is_file():
                raise MmeaInputError(f"image feature file {f} does not exist (--image-features)")
        parts = {"encoder": "precomputed", "model": [str(f) for f in files],
                 "options": {"files": [file_signature(f) for f in files],
                             "ids": file_signature(Path(o.ids)) if o.ids else None}}

        def compute_pre():
            t0 = time.perf_counter()
            s, t = _load_side(task, task.source, files, o.ids), _load_side(task, task.target, files, o.ids)
            info = {**s.info, "time_s": round(time.perf_counter() - t0, 3)}
            return {"source": s.matrix, "target": t.matrix, "source_mask": s.mask, "target_mask": t.mask}, info

        return parts, compute_pre

    def _extract_job(self, task):
        from ..encoders.images import ImageFeatureExtractor

        o = self.options
        ext = ImageFeatureExtractor(o.encoder, weights_path=o.weights, allow_random_weights=o.allow_random_weights,
                                    batch_size=o.batch_size, device=self.device, seed=self.seed,
                                    progress=self.progress)
        parts = {"encoder": ext.arch, "model": ext.arch, "options": ext.config(), "image_root": o.root}
        return parts, lambda: _extract(task, ext, o.root)


def _load_side(task, kg, files: list[Path], ids):
    """One KG's vectors from the precomputed files (the first file that has an entity wins)."""
    from ..encoders import EncodedFeatures
    from ..encoders.images import load_precomputed_image_features

    got: list[EncodedFeatures] = []
    for f in files:
        try:
            got.append(load_precomputed_image_features(f, kg, ids))
        except MmeaInputError as e:
            if "none of its" not in e.message:  # a file for the other KG only is fine
                raise
    if not got:
        raise MmeaInputError(f"no image feature file has vectors for entities of {task.__class__.__name__} "
                             f"side {kg.name}", hint="check that the keys are entity ids or URIs")
    dims = {g.dim for g in got}
    if len(dims) > 1:
        raise MmeaInputError(f"image feature files have different dimensions {sorted(dims)}")
    mat, mask = np.zeros_like(got[0].matrix), np.zeros(kg.num_entities, dtype=bool)
    for g in got:  # first file that has an entity wins
        new = g.mask & ~mask
        mat[new], mask[new] = g.matrix[new], True
    return EncodedFeatures(mat, mask, {"encoder": "precomputed", "model": [str(f) for f in files],
                                       "dim": int(mat.shape[1]), "images_encoded": int(mask.sum())})


def _extract(task, ext, image_root):
    """Both KGs' image features by the extractor ``ext``; a KG without images gets zero rows."""
    from ..encoders.images import image_features_for_kg

    t0 = time.perf_counter()
    s = image_features_for_kg(task.source, ext, image_root)
    t = image_features_for_kg(task.target, ext, image_root)
    sm, tm = s.matrix, t.matrix
    if sm.shape[1] == 0 and tm.shape[1]:  # a KG without images: zero rows of the other's size
        sm = np.zeros((sm.shape[0], tm.shape[1]), dtype=np.float32)
    elif tm.shape[1] == 0 and sm.shape[1]:
        tm = np.zeros((tm.shape[0], sm.shape[1]), dtype=np.float32)
    if sm.shape[1] != tm.shape[1]:
        raise MmeaInputError(f"image features of the two KGs differ in size ({s.dim} vs {t.dim})",
                             hint="use the same extractor or precomputed features of one model for both")
    if sm.shape[1] == 0:
        log.warning("images: no entity of %s or %s has an image or image features; the modality is empty "
                    "(import features with --image-features)", task.source.name, task.target.name)
    info = {**(s.info if s.info.get("encoder") != "none" else t.info),
            "source": s.info, "target": t.info, "time_s": round(time.perf_counter() - t0, 3)}
    return {"source": sm, "target": tm, "source_mask": s.mask, "target_mask": t.mask}, info

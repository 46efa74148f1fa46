"""The ``relations`` and ``attributes`` modalities: bags over a vocabulary shared by both KGs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .base import MODALITY_ENCODERS, ModalityEncoder


class _BagModality(ModalityEncoder):
    """A CSR bag over a shared vocabulary (template: a subclass names its two :mod:`mmea.encoders.bags` functions)."""

    kind = ""

    @dataclass(frozen=True)
    class Options:
        """``share_vocabulary``: merge the relations / attributes of the two KGs that have the same name."""

        share_vocabulary: bool = True

    @classmethod
    def legacy_options(cls, fo) -> dict:
        return {"share_vocabulary": fo.share_vocabulary}

    @staticmethod
    def functions():  # pragma: no cover - abstract
        """``(names of one KG's items, bag of one KG)`` from :mod:`mmea.encoders.bags`."""
        raise NotImplementedError

    def job(self, task):
        from ..encoders import bags

        names_fn, bag_fn = self.functions()
        kind, share = self.kind, self.options.share_vocabulary
        parts = {"encoder": f"bag-of-{kind}", "model": None, "options": {"share_vocabulary": share}}

        def compute():
            t0 = time.perf_counter()
            na, nb = names_fn(task.source), names_fn(task.target)
            ma, mb, vocab = bags.shared_vocabulary(na, nb, by_name=share)
            s, t = bag_fn(task.source, ma, len(vocab)), bag_fn(task.target, mb, len(vocab))
            smask = np.diff(s.indptr) > 0
            tmask = np.diff(t.indptr) > 0
            info = {"encoder": f"bag-of-{kind}", "model": None, "dim": int(s.shape[1]),
                    "vocabulary": {"source": len(na), "target": len(nb), "joint": len(vocab),
                                   "shared": len(na) + len(nb) - len(vocab)},
                    "time_s": round(time.perf_counter() - t0, 3)}
            return {"source": s, "target": t, "source_mask": smask, "target_mask": tmask}, info

        return parts, compute


@MODALITY_ENCODERS.register(name="relations", aliases=("relation", "rel"))
class RelationsModality(_BagModality):
    """Relations: CSR ``(n, 2R)`` bag of the relations an entity is head or tail of."""

    position = 3
    kind = "relations"

    @staticmethod
    def functions():
        from ..encoders import bags

        return bags.relation_names, bags.bag_of_relations


@MODALITY_ENCODERS.register(name="attributes", aliases=("attribute", "attr"))
class AttributesModality(_BagModality):
    """Attributes: CSR ``(n, A)`` bag of the attribute names an entity carries."""

    position = 4
    kind = "attributes"

    @staticmethod
    def functions():
        from ..encoders import bags

        return bags.attribute_names, bags.bag_of_attributes

"""Loader base class and registry.

A loader reads one on-disk layout.  ``detect(path)`` says whether a folder is
in its layout (used for auto-detection); ``load(path, options)`` returns an
:class:`~mmea.data.AlignmentTask` (pair layouts) or a
:class:`~mmea.data.LinkPredictionDataset` (``kind = "linkpred"``).

Every loader fills a :class:`~mmea.data.parsing.LoadReport` with what it read
and what it skipped, stored in ``task.meta["load_report"]`` and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ...errors import MmeaInputError
from ...registry import Registry

log = logging.getLogger("mmea.data")


@dataclass(frozen=True)
class LoadOptions:
    """Options common to every pair loader.

    Attributes:
        seed_ratio: fraction of gold links used as train+valid seeds; ``None`` = the
            dataset's default (DBP15k 0.3, MMKG 0.2), or the split files it ships
            when ``use_dataset_split`` is set.
        seed: seed of the split.
        valid_ratio: fraction of the seeds carved off as validation.
        use_dataset_split: use the train/test files the dataset ships (``sup_pairs``,
            ``721_5fold/N``...) instead of a seeded split.
        fold: OpenEA fold number (1..5).
        pair: sub-pair name where a folder holds several (``"zh_en"``).
        swap: exchange source and target (``--src fb15k --tgt db15k``).
        data_root: the folder holding every dataset (``--data-dir``), for
            companion files stored beside the main folder (DBP15k translated
            names and MuGNN attributes).
        fb15k_triples: for MMKG, a FB15k-237 folder whose triples stand in for the
            missing FB15K relation triples (``None`` = look beside the data).
    """

    seed_ratio: float | None = None
    seed: int = 0
    valid_ratio: float = 0.1
    use_dataset_split: bool = False
    fold: int = 1
    pair: str | None = None
    swap: bool = False
    data_root: Path | None = None
    fb15k_triples: Path | None = None
    extra: dict = field(default_factory=dict)


class DatasetLoader:
    """Reads one on-disk layout into the data model."""

    kind: ClassVar[str] = "pair"  # or "linkpred"
    description: ClassVar[str] = ""

    @classmethod
    def detect(cls, path: Path) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, path: Path, options: LoadOptions | None = None):  # pragma: no cover - abstract
        raise NotImplementedError


LOADERS: Registry[DatasetLoader] = Registry("loader", suffix="Loader")


def detect_loader(path: str | Path) -> str:
    """Name of the registered loader whose layout ``path`` is in, or a clear error."""
    path = Path(path)
    if not path.exists():
        raise MmeaInputError(f"{path}: no such directory")
    hits = [name for name in LOADERS.names() if LOADERS.get(name).detect(path)]
    if not hits:
        raise MmeaInputError(
            f"{path}: not in any supported layout ({', '.join(LOADERS.names())})",
            hint="see docs/formats.md for the file names each layout expects",
        )
    return hits[0]

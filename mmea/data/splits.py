"""Train / valid / test splits of gold links, shared by the pair loaders.

* :func:`seeded_split` -- a seeded random split of all links (the DBP15k protocol);
* :func:`carve_valid` -- validation links carved off a shipped train file;
* :func:`split_from_parts` -- the split files a dataset ships, checked to be disjoint;
* :func:`subtract_links`, :func:`union_links` -- set operations on ``(n, 2)`` links.

The split itself (:func:`~mmea.data.make_split`) lives in :mod:`mmea.data.graph`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import MmeaInputError
from .graph import make_split
from .parsing import LoadReport, check_links

if TYPE_CHECKING:  # pragma: no cover
    from .loaders.base import LoadOptions

__all__ = ["DEFAULT_SEED_RATIO", "seeded_split", "carve_valid", "split_from_parts", "subtract_links", "union_links"]

#: seed ratio of a seeded split when the options give none (the DBP15k protocol)
DEFAULT_SEED_RATIO = 0.3


def seeded_split(links: np.ndarray, seed_ratio: float, options: LoadOptions
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Seeded split of all gold links with :func:`~mmea.data.make_split`.

    The links are sorted first, so the split depends only on the link set, the
    ratio and the seed (the same as :meth:`AlignmentTask.resplit`).  Returns
    ``(train, valid, test, provenance)``.
    """
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    links = links[np.lexsort((links[:, 1], links[:, 0]))]
    train, valid, test = make_split(links, seed_ratio, options.seed, options.valid_ratio)
    prov = {"kind": "seeded", "train_ratio": seed_ratio, "valid_ratio_of_train": options.valid_ratio,
            "seed": options.seed}
    return train, valid, test, prov


def carve_valid(train: np.ndarray, valid_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Carve ``round(valid_ratio * len(train))`` seeded random links off ``train`` as validation.

    Returns ``(train_rest, valid)``; both keep the file order of ``train``.
    """
    train = np.asarray(train, dtype=np.int64).reshape(-1, 2)
    if not 0.0 <= valid_ratio < 1.0:
        raise MmeaInputError(f"valid ratio must be in [0, 1), got {valid_ratio}")
    perm = np.random.default_rng(seed).permutation(len(train))
    n_valid = int(round(valid_ratio * len(train)))
    return train[np.sort(perm[n_valid:])], train[np.sort(perm[:n_valid])]


def _link_keys(links: np.ndarray, width: int) -> np.ndarray:
    return links[:, 0] * width + links[:, 1]


def subtract_links(links: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """Rows of ``links`` that are in none of ``others`` (order kept)."""
    links = np.asarray(links, dtype=np.int64).reshape(-1, 2)
    rest = [np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in others]
    if not len(links) or not any(len(o) for o in rest):
        return links
    width = int(max([links.max()] + [o.max() for o in rest if len(o)])) + 1
    drop = np.concatenate([_link_keys(o, width) for o in rest])
    return links[~np.isin(_link_keys(links, width), drop)]


def union_links(parts: list[np.ndarray], where: str) -> np.ndarray:
    """Every distinct link of ``parts`` (first-occurrence order); an entity linked to two
    different entities across the parts is an error naming ``where``."""
    parts = [np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in parts]
    links = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
    if len(links):
        _, first = np.unique(links, axis=0, return_index=True)
        links = links[np.sort(first)]
    return check_links(links, where, LoadReport(), what="links across files")


def split_from_parts(all_links: np.ndarray | None, train: np.ndarray | None, valid: np.ndarray | None,
                     test: np.ndarray | None, options: LoadOptions, where: str
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Train / valid / test from the split files a dataset ships.

    A missing ``valid`` is carved off ``train`` (``options.valid_ratio``,
    ``options.seed``); a missing ``test`` is every link of ``all_links`` that is
    in neither train nor valid.  A link in two parts, or an entity linked to
    two different entities across the parts, is an error.  Returns
    ``(train, valid, test, provenance_of_valid_and_test)``.
    """
    empty = np.zeros((0, 2), dtype=np.int64)
    prov: dict = {}
    train = empty if train is None else np.asarray(train, dtype=np.int64).reshape(-1, 2)
    if valid is None:
        train, valid = carve_valid(train, options.valid_ratio, options.seed)
        prov["valid"] = {"carved_from": "train", "valid_ratio_of_train": options.valid_ratio, "seed": options.seed}
    if test is None:
        test = empty if all_links is None else subtract_links(all_links, train, valid)
        prov["test"] = "all links minus train and valid" if all_links is not None else "none"
    parts = {"train": train, "valid": np.asarray(valid).reshape(-1, 2), "test": np.asarray(test).reshape(-1, 2)}
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = len(parts[a]) - len(subtract_links(parts[a], parts[b]))
            if both:
                raise MmeaInputError(f"{where}: {both} link(s) are both in {a} and in {b}",
                                     hint="the split files must be disjoint (a test link seen in training "
                                          "would inflate the scores)")
    check_links(np.concatenate(list(parts.values())), where, LoadReport(), what="links across the split files")
    return parts["train"], parts["valid"], parts["test"], prov

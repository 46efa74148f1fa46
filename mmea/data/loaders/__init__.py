"""Registered dataset loaders; importing this package registers all of them."""

from .base import LOADERS, DatasetLoader, LoadOptions, detect_loader
from . import dbp15k, linkpred, mmkg, openea, tsv  # noqa: F401  (registration)

__all__ = ["LOADERS", "DatasetLoader", "LoadOptions", "detect_loader"]

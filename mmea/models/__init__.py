"""Registered alignment models; importing this package registers all of them."""

from .base import MODELS, AlignmentModel, RunContext
from . import baseline, gaussian, gaussian_strong, label_propagation, propagation, relational_gnn, selfmea  # noqa: F401  (registration)

__all__ = ["MODELS", "AlignmentModel", "RunContext"]

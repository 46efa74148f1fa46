"""Modality encoders: one registered class per modality (:class:`~mmea.modalities.base.ModalityEncoder`).

``MODALITY_ENCODERS`` resolves a modality name (or alias) to its class; each class owns its
``Options``, its cache fingerprint (:meth:`~mmea.modalities.base.ModalityEncoder.job`) and,
through its options, its CLI exposure (``mmea ls modalities``, ``mmea features
--modality-option``).  :func:`mmea.features.compute_task_features` runs them through the
feature store; a model states what it needs as :class:`FeatureRequest` values
(``feature_requests(config)``) and receives the computed
:class:`~mmea.features.TaskFeatures` in ``fit(task, features)``.

Adding a modality is one module here with one registered class (every module of the
package is imported, so nothing else names it), plus its test in ``tests/test_modalities.py``.
Importing this package imports nothing heavy.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import (MODALITY_ENCODERS, FeatureRequest, ModalityEncoder, ModalityRegistry, as_request,
                   parse_modality_options)

# registration: every module of this package registers its encoder, so a new modality is one new module
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MODALITY_ENCODERS", "FeatureRequest", "ModalityEncoder", "ModalityRegistry", "as_request",
           "parse_modality_options"]

"""The names-off policy of ``mmea align`` (issue 16, part 4): when a run uses no entity name, and which
models cannot run so (checked with the config, before any data is read).

Names are off with ``features.names = "off"``, or when a model's own config says so (selfmea's
``--modalities`` without ``names``), unless ``features.names = "on"``.  A names-off run never computes
the ``names`` modality (:func:`mmea.pipelines.align.run_align` drops it from the model's feature
requests), so no name-derived feature — names, translations, URI local names, neighbour names, CLEP
text, pseudo-seeds from names — can enter it; ``metrics.json`` records ``names_used`` and ``names_off``.
"""

from __future__ import annotations

from ..config import RunConfig
from ..errors import MmeaInputError
from ..models import MODELS
from .default_model import AUTO


def _model_config(cfg: RunConfig):
    cls = MODELS.get(cfg.model_name)
    return cls, cls.Config(**{k: v for k, v in cfg.model.items() if k != "name"})


def names_switch(cfg: RunConfig) -> str | None:
    """Why this run uses no entity name (``None``: the model may use them).

    ``features.names = "off"``, or a model whose own config says so (selfmea's ``--modalities``
    without ``names``: ``names_off_by_config``) unless ``features.names = "on"`` (an ablation of the
    names modality that keeps names elsewhere, recorded as ``names_used: true``).  With names off the
    ``names`` modality is never computed (:func:`mmea.pipelines.align.model_requests` drops it from
    the model's feature requests), so no name-derived feature (names, translations, URI local names,
    neighbour names, CLEP text, pseudo-seeds from names) can enter; ``metrics.json`` records
    ``names_used``.
    """
    if cfg.features.names == "on":  # explicitly on: e.g. selfmea's "-names" ablation keeps the neighbour names
        return None
    if cfg.features.names == "off":
        return "features.names = off"
    if cfg.model_name == AUTO:
        return None
    cls, mcfg = _model_config(cfg)
    off_by_config = getattr(cls, "names_off_by_config", None)
    if off_by_config is not None and off_by_config(mcfg):
        return "--modalities without names"
    return None


def name_free_models() -> list[str]:
    """The registered models whose default config computes no name feature (they run with names off)."""
    out = []
    for name in MODELS.names():
        cls = MODELS.get(name)
        if "names" not in cls.feature_requests(cls.Config()):
            out.append(name)
    return out


def names_conflict(cfg: RunConfig) -> str | None:
    """Why the run's model cannot run without names (``None``: it can): the model's own
    ``names_conflict(config)``, else "it encodes entity names" when it requests the ``names`` modality."""
    cls, mcfg = _model_config(cfg)
    own = getattr(cls, "names_conflict", None)
    if own is not None:
        return own(mcfg)
    return "it is built on entity names" if "names" in cls.feature_requests(mcfg) else None


def check_names(cfg: RunConfig) -> RunConfig:
    """Names off and a model that needs them: an input error naming the model and the name-free ones."""
    reason = names_switch(cfg)
    if reason is None:
        return cfg
    why = names_conflict(cfg) if cfg.model_name != AUTO else None
    if why is not None:
        raise MmeaInputError(f"names are off ({reason}), but model {cfg.model_name} needs them: {why}",
                             hint=f"models that work without names: {', '.join(name_free_models())}, and selfmea "
                                  "without its names modality (its structure is then the relational graph encoder)")
    return cfg

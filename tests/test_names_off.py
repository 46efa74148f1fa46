"""Names really off (issue 16, part 4): a run without names reads no name-derived feature.

Every name of a demo pair is blanked (names and URIs made empty / opaque) or shuffled between
entities; a names-off run of every model that supports it gives the same metrics on the three
copies, and records ``names_used: false``.  A names-off run of a model that needs names (or of
SelfMEA with its name-built structure modality) is refused before any data is read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mmea.data.demo import generate_demo
from mmea.errors import MmeaInputError
from mmea.pipelines.align import run_align
from mmea.pipelines.align_config import load_config
from mmea.pipelines.names import name_free_models

#: quick settings of each name-free model on the small pair (a model missing here is skipped, with a reason)
FAST = {
    "label-propagation": {"model": {"name": "label-propagation"}},
    "selfmea": {"model": {"name": "selfmea", "modalities": "relations,attributes,anchors", "epochs": 2,
                          "eval_every": 1}},
    "mmea-point": {"model": {"name": "mmea-point", "epochs": 2, "stage1_epochs": 1, "max_minutes": 1.0}},
    "gaussian": {"model": {"name": "gaussian", "epochs": 2, "stage1_epochs": 1, "max_minutes": 1.0}},
    "relational-gnn": {"model": {"name": "relational-gnn", "dim": 16, "epochs": 2, "max_minutes": 1.0}},
    "gaussian-strong": {"model": {"name": "gaussian-strong", "dim": 16, "gnn_dim": 16, "epochs": 2,
                                  "max_minutes": 1.0}},
    "gaussian-strong-point": {"model": {"name": "gaussian-strong-point", "dim": 16, "gnn_dim": 16, "epochs": 2,
                                        "max_minutes": 1.0}},
}


def _rewrite(folder: Path, how: str, rng: np.random.Generator) -> None:
    """Blank (``how="blank"``) or shuffle every entity name and URI of both KGs of a demo pair folder."""
    for kg in ("kg1", "kg2"):
        for fname in ("names.tsv", "entities.tsv"):
            path = folder / kg / fname
            lines = path.read_text(encoding="utf-8").splitlines()
            head = [x for x in lines if x.startswith("#")]
            rows = [x.split("\t") for x in lines if x and not x.startswith("#")]
            values = [r[1] for r in rows]
            if how == "shuffle":
                values = [values[i] for i in rng.permutation(len(values))]
            elif fname == "names.tsv":
                values = [""] * len(values)
            else:  # opaque URIs (unique, nothing of the name in them)
                values = [f"http://opaque.example.org/{kg}/x{i}" for i in range(len(values))]
            path.write_text("\n".join(head + [f"{r[0]}\t{v}" for r, v in zip(rows, values)]) + "\n",
                            encoding="utf-8")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("names_off")
    orig = generate_demo(root / "orig", seed=3, num_shared=300, num_unique=40)
    out = {"orig": orig}
    for how in ("blank", "shuffle"):
        out[how] = Path(shutil.copytree(orig, root / how))
        _rewrite(out[how], how, np.random.default_rng(0))
    return out


def _run(folder: Path, run_dir: Path, layer: dict, names: str = "off") -> dict:
    base = {"data": {"pair": str(folder), "src": "", "tgt": "", "seed_ratio": 0.3},
            "features": {"names": names, "cache": False, "name_encoder": "char-ngram"}, **layer}
    return run_align(load_config(None, [], base), out=run_dir, quiet=True)["metrics"]


@pytest.mark.parametrize("model", name_free_models() + ["selfmea"])
def test_names_off_metrics_ignore_every_name(pairs, tmp_path, model):
    if model not in FAST:
        pytest.skip(f"{model}: no quick setting in FAST")
    runs = {k: _run(folder, tmp_path / k, FAST[model]) for k, folder in pairs.items()}
    for k, m in runs.items():
        assert m["names_used"] is False and m["names_off"], k
        assert "name_encoder" not in m["model_info"], k
        assert 0 <= m["test"]["hits@1_one_to_one"] <= 1
    for k in ("blank", "shuffle"):
        assert runs[k]["test"] == runs["orig"]["test"], k
        assert runs[k]["test_by_method"] == runs["orig"]["test_by_method"], k


def test_names_on_do_change_a_name_model(pairs, tmp_path):
    """The check has teeth: with names on, blanking them changes a name model's metrics."""
    layer = {"model": {"name": "baseline"}}
    a, b = (_run(pairs[k], tmp_path / k, layer, names="auto") for k in ("orig", "blank"))
    assert a["names_used"] is True and a["test"]["hits@1"] > b["test"]["hits@1"]


def test_selfmea_modalities_without_names_switch_names_off(pairs, tmp_path):
    """``--modalities`` without names is names off: the name-built structure modality is refused up front."""
    with pytest.raises(MmeaInputError, match="structure modality is built from entity names"):
        load_config(None, [], {"model": {"name": "selfmea", "modalities": "structure,relations,anchors",
                                         "structure": "neighbour-names"}})
    # names explicitly on: an ablation of the names modality that keeps the neighbour names (names_used: true)
    load_config(None, [], {"model": {"name": "selfmea", "modalities": "structure,relations"},
                           "features": {"names": "on"}})
    with pytest.raises(MmeaInputError) as e:
        load_config(None, [], {"model": {"name": "selfmea"}, "features": {"names": "off"}})
    assert "selfmea needs them" in e.value.message and "label-propagation" in (e.value.hint or "")


@pytest.mark.parametrize("model", ["baseline", "propagation"])
def test_a_name_model_with_names_off_is_refused_naming_the_alternatives(model):
    with pytest.raises(MmeaInputError) as e:
        load_config(None, [], {"model": {"name": model}, "features": {"names": "off"}})
    assert f"model {model} needs them" in e.value.message and "label-propagation" in (e.value.hint or "")


def test_selfmea_self_supervised_without_names_is_refused(pairs, tmp_path):
    """Pseudo-seeds come from names: with names off and no train link, selfmea stops with an input error."""
    layer = {"model": {"name": "selfmea", "modalities": "relations,attributes,anchors", "epochs": 1},
             "data": {"pair": str(pairs["orig"]), "src": "", "tgt": "", "seed_ratio": 0.0}}
    cfg = load_config(None, [], {**layer, "features": {"cache": False}})
    with pytest.raises(MmeaInputError, match="pseudo-seeds from entity names"):
        run_align(cfg, out=tmp_path / "ss", quiet=True)

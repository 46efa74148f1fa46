"""The default model of ``mmea align`` (issue 16, part 7): no ``--model`` runs the strongest model for what
the task has, measured on the train / valid links only, printed and recorded with its reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmea.data.catalog import load_task_from_config
from mmea.data.demo import generate_demo
from mmea.errors import MmeaInputError
from mmea.models import RunContext
from mmea.pipelines import default_model
from mmea.pipelines.align import run_align
from mmea.pipelines.align_config import load_config
from mmea.pipelines.default_model import LARGE_STRUCTURE_MODEL, NAME_MODEL, STRUCTURE_MODEL, choose_model


def _opaque_targets(folder: Path) -> None:
    """Name every target entity by an opaque id (a Wikidata-like Q-number), in names.tsv and in its URI."""
    rng = np.random.default_rng(0)
    for fname, fmt in (("names.tsv", "Q{}"), ("entities.tsv", "http://www.wikidata.org/entity/Q{}")):
        path = folder / "kg2" / fname
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [x.split("\t") for x in lines if x and not x.startswith("#")]
        ids = rng.permutation(10 ** 6)[:len(rows)]
        path.write_text("\n".join([x for x in lines if x.startswith("#")]
                                  + [f"{r[0]}\t{fmt.format(q)}" for r, q in zip(rows, ids)]) + "\n",
                        encoding="utf-8")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("defaults")
    good = generate_demo(root / "good", seed=5, num_shared=300, num_unique=40)
    opaque = Path(shutil.copytree(good, root / "opaque"))
    _opaque_targets(opaque)
    return {"good": good, "opaque": opaque}


def _cfg(folder: Path, *overrides: str, seed_ratio: float = 0.3):
    return load_config(None, list(overrides), {"data": {"pair": str(folder), "src": "", "tgt": "",
                                                        "seed_ratio": seed_ratio},
                                               "features": {"cache": False, "name_encoder": "char-ngram"}})


def _choose(folder: Path, *overrides: str, seed_ratio: float = 0.3):
    cfg = _cfg(folder, *overrides, seed_ratio=seed_ratio)
    task = load_task_from_config(cfg.data, cfg.seed, False)
    return choose_model(task, cfg, RunContext(seed=0, features=cfg.features)), task


def test_no_model_is_the_default_rule():
    assert load_config().model_name == "auto"
    with pytest.raises(MmeaInputError, match="need a model name"):
        load_config(None, ["model.epochs=3"])


def test_names_that_agree_keep_the_name_model(pairs):
    choice, task = _choose(pairs["good"])
    assert choice.config.model_name == NAME_MODEL and choice.config.features.names == "auto"
    sig = choice.signal
    assert sig.agrees and sig.links == len(task.train) + len(task.valid) and sig.hits_at_1 > 0.3
    assert "strongest model with names" in choice.reason
    # seeded and small: SelfMEA's structure modality from the relational graph encoder
    assert choice.config.model["structure"] == "relational" and "relational graph encoder" in choice.reason
    # ... and small enough for the joined rows: name pseudo-seeds in the pool, the pool's label propagation joined
    assert choice.config.model["lp_weight"] == -1.0 and choice.config.model["name_seeds"] is True
    assert "name pseudo-seeds in the pool" in choice.reason


def test_opaque_target_names_are_switched_off_with_a_note(pairs, tmp_path, caplog):
    caplog.set_level("WARNING", logger="mmea")
    m = run_align(_cfg(pairs["opaque"]), out=tmp_path / "run", quiet=True)["metrics"]
    assert m["model"] == STRUCTURE_MODEL and m["names_used"] is False and m["names_off"] == "features.names = off"
    rec = m["model_choice"]
    assert rec["model"] == STRUCTURE_MODEL and rec["names"] == "off" and rec["name_signal"]["agrees"] is False
    assert rec["name_signal"]["hits@1"] < rec["name_signal"]["threshold"]
    assert "switched off" in rec["reason"] and any("switched off" in n for n in m["notes"])
    printed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model: ")]
    assert len(printed) == 1 and STRUCTURE_MODEL in printed[0] and "names carry no signal" in printed[0]
    assert f"model: {STRUCTURE_MODEL} (default)" in (tmp_path / "run" / "run.log").read_text()
    assert rec["settings"]["iterations"] == 3 and "iterative" in rec["reason"]
    assert rec["settings"]["lp_weight"] == -1.0 and "joined by the relational label propagation" in rec["reason"]
    assert m["model_info"]["lp_fusion"]["chosen_by"].startswith("Hits@1 (CSLS) on")
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stored["model_choice"] == rec
    assert m["test"]["hits@1"] > 0.1  # the structure model learns where names cannot


def test_names_on_or_off_skip_the_measurement(pairs):
    on, _ = _choose(pairs["opaque"], "features.names=on")
    assert on.config.model_name == NAME_MODEL and on.signal is None
    off, _ = _choose(pairs["good"], "features.names=off")
    assert off.config.model_name == STRUCTURE_MODEL and off.config.features.names == "off"


def test_no_seeds_and_no_name_signal_is_an_input_error(pairs):
    with pytest.raises(MmeaInputError, match="nothing to align on"):
        _choose(pairs["good"], "features.names=off", seed_ratio=0.0)
    choice, _ = _choose(pairs["good"], seed_ratio=0.0)  # no links to measure on: names kept, self-supervised
    assert choice.config.model_name == NAME_MODEL and "self-supervised" in choice.reason
    assert "structure" not in choice.config.model  # no seeds to pre-train the relational encoder on


def test_a_large_kg_without_name_signal_gets_label_propagation(pairs, monkeypatch):
    monkeypatch.setattr(default_model, "STRUCTURE_MAX_ENTITIES", 100)  # the demo pair: 340 entities a side
    choice, task = _choose(pairs["good"], "features.names=off")
    assert choice.config.model_name == LARGE_STRUCTURE_MODEL and choice.config.features.names == "off"
    assert f"{task.source.num_entities:,} entities" in choice.reason
    assert choice.config.model["anchor_dim"] == 1024 and "anchor_dim 1024" in choice.reason
    sizes = (100_000, 170_000, 200_000, 10 ** 6, 10 ** 8)  # six (N, anchor_dim) float32 blocks under 4 GiB
    assert [default_model.large_anchor_dim(n) for n in sizes] == [1024, 1024, 512, 128, 32]
    named, _ = _choose(pairs["good"])  # names agree on a large KG: label propagation with names, the scale path
    assert named.config.model_name == LARGE_STRUCTURE_MODEL and named.config.features.names == "auto"
    assert named.config.model == {"name": LARGE_STRUCTURE_MODEL, **default_model.LARGE_NAME_SETTINGS}
    assert named.config.search.whole_rows == "off" and "with names" in named.reason
    unseeded, _ = _choose(pairs["good"], seed_ratio=0.0)  # label propagation needs seeds: the name model
    assert unseeded.config.model_name == NAME_MODEL and unseeded.config.search.whole_rows == "on"
    monkeypatch.setattr(default_model, "STRUCTURE_MAX_ENTITIES", 10 ** 6)
    choice, _ = _choose(pairs["good"], "features.names=off")
    assert choice.config.model_name == STRUCTURE_MODEL and choice.config.model["iterations"] == 3
    assert choice.config.model["lp_weight"] == -1.0
    monkeypatch.setattr(default_model, "JOINED_MAX_ENTITIES", 100)  # larger: the GNN alone (memory)
    choice, _ = _choose(pairs["good"], "features.names=off")
    assert choice.config.model_name == STRUCTURE_MODEL and "lp_weight" not in choice.config.model
    assert "without the label-propagation join above 100 entities" in choice.reason
    named, _ = _choose(pairs["good"])  # names agree above JOINED_MAX_ENTITIES: the relational encoder, no join
    assert named.config.model["structure"] == "relational" and "lp_weight" not in named.config.model
    assert "name_seeds" not in named.config.model and "pseudo-seeds" not in named.reason


def test_a_large_kg_with_names_runs_label_propagation_with_names(pairs, monkeypatch, tmp_path):
    """The default above STRUCTURE_MAX_ENTITIES with names that agree runs end to end: names block, pseudo-seeds,
    the anchor overlap and its round (iterative), recorded as the default's choice."""
    monkeypatch.setattr(default_model, "STRUCTURE_MAX_ENTITIES", 100)
    m = run_align(_cfg(pairs["good"]), out=tmp_path / "run", quiet=True)["metrics"]
    assert m["model"] == LARGE_STRUCTURE_MODEL and m["names_used"] is True
    info = m["model_info"]
    assert info["name_weight"] > 0 and info["pseudo_seeds"]["count"] > 0 and info["overlap"]["weight"] > 0
    assert info["iterative"] and len(info["overlap_rounds"]) == 1
    assert m["model_choice"]["model"] == LARGE_STRUCTURE_MODEL and "with names" in m["model_choice"]["reason"]
    assert m["test"]["hits@1"] > 0.5

"""Shared fixtures: the benchmark data folder (or a skip), a tiny alignment task."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_datasets() -> Path | None:
    env = os.environ.get("MMEA_DATA_DIR")
    p = Path(env) if env else REPO.parent / "shared" / "datasets"
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    p = shared_datasets()
    if p is None:
        pytest.skip("benchmark copies not found: set MMEA_DATA_DIR or put them in ../shared/datasets")
    return p


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own MMEA_HOME cache (the demo pair is shared per session)."""
    home = tmp_path_factory.getbasetemp() / "mmea_home"
    monkeypatch.setenv("MMEA_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def tiny_task():
    """Two 6-entity KGs with names, triples and 6 gold links (3 train, 1 valid, 2 test)."""
    from mmea.data import AlignmentTask, KnowledgeGraph

    names1 = ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna"]
    names2 = ["Pariis", "Londres", "Berlino", "Madrit", "Roma", "Wien"]
    tr = np.array([[0, 0, 1], [1, 0, 2], [2, 1, 3], [3, 1, 4], [4, 0, 5]])
    kg1 = KnowledgeGraph("a", [str(i) for i in range(6)], [f"a:{n}" for n in names1], names1, ["r0", "r1"], tr)
    kg2 = KnowledgeGraph("b", [str(i) for i in range(6)], [f"b:{n}" for n in names2], names2, ["s0", "s1"], tr)
    links = np.stack([np.arange(6), np.arange(6)], 1)
    return AlignmentTask("tiny", kg1, kg2, links[:3], links[3:4], links[4:])

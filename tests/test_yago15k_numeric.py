"""YAGO15K's numbers: why the loader reads DH-MEA's ``attr`` and not MMKG's early numerical-triples file.

``MMKG/YAGO15K/YAGO15K_NumericalTriples.early.txt`` (an early mmkb version, ``<Entity> <attr> value``,
dates as ``YYYY.MMDD``; 48,405 lines with repeats, 23,532 distinct facts) holds the same facts as the
YAGO15K lines of ``DH-MEA_converted/YAGO15K-FB15K/attr``, which the ``mmkg-converted`` loader reads:
this test checks that claim on the shared copies (docs/datasets.md states it).  23,520 distinct facts
of the early file are in the loaded task with the same attribute and the same decoded value.  The
other 12 are years that ``attr`` writes with wildcard digits (``09##-##-##``, ``197#-##-##``) and the
early file as the first year of that span (``0900.0000``, ``1970.0000``): the year is not known, so
the loader keeps them as non-numeric (NaN, counted in the load report) rather than invent a year; the
early file adds no fact.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from mmea.data.loaders.base import LoadOptions
from mmea.data.loaders.mmkg import MmkgConvertedLoader, parse_attr_value

LINE = re.compile(r"^<(.+)>\t<(.+)>\t(.+)$")


def _early_facts(path):
    facts = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = LINE.match(line)
        assert m, f"{path}: unexpected line {line!r}"
        facts.add((m.group(1), m.group(2), m.group(3).strip().strip('"')))
    return facts


def test_dh_mea_attr_covers_the_early_yago15k_numerical_triples(data_dir):
    early = data_dir / "MMKG" / "YAGO15K" / "YAGO15K_NumericalTriples.early.txt"
    folder = data_dir / "DH-MEA_converted" / "YAGO15K-FB15K"
    if not early.is_file() or not folder.is_dir():
        pytest.skip(f"{early} or {folder} not found")
    facts = _early_facts(early)
    assert len(facts) == 23532  # the paper's count of YAGO15K numerical facts
    task = MmkgConvertedLoader().load(folder, LoadOptions(seed_ratio=0.2))
    kg = task.source if "yago" in task.source.uris[0].lower() else task.target
    prefix = "http://yago-knowledge.org/resource/"
    local = [u.strip("<>").removeprefix(prefix) for u in kg.uris]
    loaded = {}
    for (e, a), v in zip(kg.attr_triples.tolist(), kg.attr_numeric.tolist()):
        loaded.setdefault((local[e], kg.attributes[a].rsplit("/", 1)[-1].strip("<>")), []).append(v)
    covered, spans = 0, []
    for ent, attr, value in facts:
        num, _ = parse_attr_value(value, "degrees", attr)  # the early file's dates are YYYY.MMDD
        got = loaded.get((ent, attr), [])
        if any(np.isclose(num, g, rtol=0, atol=1e-6) for g in got):
            covered += 1
            continue
        i = local.index(ent)
        raw = [kg.attr_values[j] for j, (e, a) in enumerate(kg.attr_triples.tolist())
               if e == i and kg.attributes[a] == attr]
        spans.append((value, raw))
    assert covered == 23520 and len(spans) == 12
    for value, raw in spans:  # a year span in attr, its first year in the early file
        assert len(raw) == 1 and "#" in raw[0][:4] and raw[0][:4].replace("#", "0") == value[:4], (value, raw)
        assert math.isnan(parse_attr_value(raw[0], "date", "wasCreatedOnDate")[0])

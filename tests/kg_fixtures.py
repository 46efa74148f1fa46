"""Test helpers: two tiny KGs with names, translations, relations and numeric attributes (encoder and
feature tests); a task whose test links raise when read (no-peeking tests of the models)."""

from __future__ import annotations

import math

from mmea.data import AlignmentTask, KnowledgeGraph


def tiny_kgs() -> tuple[KnowledgeGraph, KnowledgeGraph]:
    src = KnowledgeGraph(
        "src", ids=["0", "1", "2"],
        uris=["http://zh.x/resource/Kim_Dae-jung", "http://zh.x/resource/%E5%8C%97%E4%BA%AC", "http://zh.x/resource/Paris"],
        names=["", "Beijing city", ""],
        translated_names=["kim dae jung", "", "paris"],
        relations=["http://x/birthPlace", "http://x/capital"], triples=[[0, 0, 1], [2, 1, 1], [0, 0, 1]],
        attributes=["http://x/population", "http://x/birthDate"], attr_triples=[[1, 0], [2, 0], [0, 1], [1, 0]],
        attr_values=["21000000", "2100000", "1924-01-06", "21500000"],
        attr_numeric=[21e6, 2.1e6, 1924.0137, 21.5e6])
    tgt = KnowledgeGraph(
        "tgt", ids=["10", "11", "12", "13"],
        uris=["http://y/Kim_Dae-jung", "http://y/Beijing", "http://y/Paris", "http://y/Lyon"],
        names=["", "", "", ""],
        relations=["http://y/birth_place", "http://y/mayor"], triples=[[0, 0, 1], [3, 1, 0]],
        attributes=["http://y/population", "http://y/name"], attr_triples=[[1, 0], [2, 0], [3, 0], [3, 1]],
        attr_values=["21500000", "2200000", "500000", "Lyon"], attr_numeric=[21.5e6, 2.2e6, 5e5, math.nan])
    return src, tgt


class PoisonedTask(AlignmentTask):
    """An alignment task whose test links raise when read, once ``armed`` is set (after construction)."""

    armed = False

    def __getattribute__(self, name):
        if name == "test" and object.__getattribute__(self, "armed"):
            raise AssertionError("the model read task.test")
        return super().__getattribute__(name)

"""Data model, loaders, dataset catalog and the demo generator."""

from .graph import AlignmentTask, KnowledgeGraph, LinkPredictionDataset, local_name, make_split
from .parsing import LoadReport, parse_numeric

__all__ = ["AlignmentTask", "KnowledgeGraph", "LinkPredictionDataset", "LoadReport", "local_name",
           "make_split", "parse_numeric"]

"""FIBER fusion for medvit.vlm (the module lives in :mod:`medvit.models.fiber`, where the BenchX retrieval protocol
uses it too)."""

from medvit.models.fiber import FiberFusion, FiberRetrieval

__all__ = ["FiberFusion", "FiberRetrieval"]

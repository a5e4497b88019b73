"""Batch inference over folders of DICOM studies (``medvit infer``): selection rules, contract-driven
preprocessing, parallel decoding, batched prediction, resumable journal, CSV/JSONL/SR/Secondary Capture outputs.
"""

from medvit.infer.runner import (
    EXIT_NOTHING_PREDICTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    InferConfig,
    RunResult,
    run_inference,
)

__all__ = ["EXIT_NOTHING_PREDICTED", "EXIT_OK", "EXIT_SOME_FAILED", "InferConfig", "RunResult", "run_inference"]

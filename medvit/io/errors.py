"""Typed errors of :mod:`medvit.io`. Every error names the file and says why and, where possible, how to fix it.

All inherit :class:`MedicalIOError`, itself a :class:`ValueError`, so callers that only know "bad input" still work.
"""

from __future__ import annotations

from pathlib import Path


class MedicalIOError(ValueError):
    """Base class: a file could not be read as a medical image.

    Attributes:
        path: the offending file (``None`` for in-memory datasets).
        reason: a short human-readable explanation (also part of ``str(err)``).
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        where = self.path if self.path is not None else "<dataset>"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # picklable across multiprocessing workers
        return (type(self), (self.path, self.reason))


class NotDicomError(MedicalIOError):
    """The file is not DICOM (no preamble/meta and not parseable as a raw data set), or not a known image format."""


class NoPixelDataError(MedicalIOError):
    """The file is valid DICOM but holds no image (SR, RT plan, DICOMDIR, waveform, ...)."""


class UnsupportedTransferSyntaxError(MedicalIOError):
    """No installed decoder handles the transfer syntax; the message names the plugin that would."""


class UnsupportedPhotometricError(MedicalIOError):
    """The Photometric Interpretation (or its combination with the pixel attributes) is not supported."""


class CorruptFileError(MedicalIOError):
    """Truncated or malformed file: bad header values, too little pixel data, a decoder failure on the stream."""


class InconsistentSeriesError(MedicalIOError):
    """Slices cannot form one volume: mixed series, orientation/size mismatch, gaps or duplicate positions."""


class FrameIndexError(MedicalIOError, IndexError):
    """A frame/slice index outside the image (also an IndexError)."""


class PixelBudgetError(MedicalIOError):
    """The header claims more pixels than the configured budget; refused before any decoding."""


__all__ = [
    "CorruptFileError",
    "FrameIndexError",
    "InconsistentSeriesError",
    "MedicalIOError",
    "NoPixelDataError",
    "NotDicomError",
    "PixelBudgetError",
    "UnsupportedPhotometricError",
    "UnsupportedTransferSyntaxError",
]

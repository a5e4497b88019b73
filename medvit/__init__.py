"""medvit: Vision Transformers for medical imaging, from papers to the hospital.

Importing ``medvit`` is cheap: it loads torch and the backbone registry, never streamlit, pydicom,
nibabel or transformers (those load lazily in the modules that need them).
"""

from __future__ import annotations

import logging

from medvit.registry import REGISTRY, get, list_names, register
from medvit.version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())


def create_model(name: str, pretrained: str | None = None, **kwargs):
    """Create a registered backbone by name (see :func:`medvit.models.create_model`)."""
    from medvit.models import create_model as _create

    return _create(name, pretrained=pretrained, **kwargs)


__all__ = ["REGISTRY", "create_model", "get", "list_names", "register", "__version__"]

"""Moved to :mod:`medvit.io.rules` (one scope check for ``medvit infer`` and the VLM experts); re-exported here so
older imports keep working."""

from medvit.io.rules import RulesError, Selection, SelectionRules, get_attr  # noqa: F401

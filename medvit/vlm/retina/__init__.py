"""RetinaVLM (Holland et al., npj Digit. Med. 2025): guidelines as data, curriculum generation, closed-ended evaluation.

Submodules: ``guidelines`` (biomarker schema, staging and referral rules; :func:`stage_from_biomarkers`,
:func:`referral_from_stage`), ``reports`` (report text → observations), ``curriculum`` (part 1 and part 2
generators), ``answers`` (parsing free-text answers into option sets), ``evaluate`` (two-step closed-ended evaluation).
"""

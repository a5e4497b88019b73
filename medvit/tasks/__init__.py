"""Registered task kinds: a typed config dataclass plus a run function, driven by pipeline YAML.

A pipeline file names its task and gives the config::

    task: extract_features
    backbone: vit_small_patch16_224
    ...

``medvit run pipeline.yaml a.b=value`` loads it, applies overrides, validates every key against the
task's dataclass (unknown keys fail before any work starts) and writes the resolved config into
the run's output directory.
"""

from __future__ import annotations

# task modules register on import
from medvit.tasks import benchx_grid as _benchx_grid  # noqa: F401
from medvit.tasks import compress_tasks as _compress_tasks  # noqa: F401
from medvit.tasks import compress_train as _compress_train  # noqa: F401
from medvit.tasks import dta_audit as _dta_audit  # noqa: F401
from medvit.tasks import evaluate as _evaluate  # noqa: F401
from medvit.tasks import extract_features as _extract_features  # noqa: F401
from medvit.tasks import finetune_multilabel as _finetune_multilabel  # noqa: F401
from medvit.tasks import finetune_segmentation as _finetune_segmentation  # noqa: F401
from medvit.tasks import frozen_eval as _frozen_eval  # noqa: F401
from medvit.tasks import look_finetune as _look_finetune  # noqa: F401
from medvit.tasks import m3i_pretrain as _m3i_pretrain  # noqa: F401
from medvit.tasks import mae_pretrain as _mae_pretrain  # noqa: F401
from medvit.tasks import ood_reference as _ood_reference  # noqa: F401
from medvit.tasks import prompt_tune as _prompt_tune  # noqa: F401
from medvit.tasks import resizer_probe as _resizer_probe  # noqa: F401
from medvit.tasks import tov_vicreg as _tov_vicreg  # noqa: F401
from medvit.tasks import unip_distill as _unip_distill  # noqa: F401
from medvit.tasks.base import TaskSpec, build_config, register_task, run_task

__all__ = ["TaskSpec", "build_config", "register_task", "run_task"]

"""Experiment tracking beside ``log.csv``: TensorBoard event files and an optional MLflow local file store.

``report_to`` names the trackers (``TrainConfig.report_to``): ``tensorboard`` writes ``<output_dir>/tensorboard/``
with :class:`torch.utils.tensorboard.SummaryWriter` (one scalar per logged column, tagged ``<kind>/<column>``, at
the optimizer step); ``mlflow`` logs the same metrics to a run in the local store ``<output_dir>/mlruns``
(``mlflow ui --backend-store-uri <output_dir>/mlruns``; MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true`` for a file
store, which is set when unset). Nothing leaves the machine: there is no remote default. MLflow is optional
(``pip install 'medvit[tracking]'``, the ``mlflow-skinny`` package).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from medvit.train.csv_log import CSVLogger

logger = logging.getLogger(__name__)

#: tracker names accepted by ``report_to``
TRACKERS = ("none", "tensorboard", "mlflow")


def check_report_to(names: list[str]) -> None:
    """Raise ValueError naming an unknown tracker."""
    for n in names:
        if n not in TRACKERS:
            raise ValueError(f"report_to: unknown tracker {n!r}; use {', '.join(TRACKERS)}")


class RunLog:
    """``log.csv`` plus the trackers of ``report_to``; ``log(row)`` writes a row to all (rank 0 only)."""

    def __init__(self, csv: CSVLogger, report_to: list[str], out: Path | None, config: dict[str, Any] | None = None):
        self.csv = csv
        self.tb: Any = None
        self.mlflow: Any = None
        if out is None or csv.path is None:
            return
        if "tensorboard" in report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:  # the tensorboard package is a dependency; say so when it is missing
                raise ImportError("report_to tensorboard needs the 'tensorboard' package (pip install tensorboard)"
                                  ) from e
            self.tb = SummaryWriter(log_dir=str(out / "tensorboard"))
        if "mlflow" in report_to:
            try:
                import mlflow
            except ImportError as e:
                raise ImportError("report_to mlflow needs the 'mlflow' package (pip install 'medvit[tracking]')"
                                  ) from e
            # MLflow 3 keeps the plain-file store (no database server or SQL driver needed) behind an opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
            mlflow.set_experiment(out.resolve().name)
            self.mlflow = mlflow
            mlflow.start_run()
            if config:
                mlflow.log_params({k: str(v)[:250] for k, v in config.items()})

    def truncate_after(self, step: int) -> None:
        self.csv.truncate_after(step)

    def log(self, row: dict[str, Any]) -> None:
        self.csv.log(row)
        step = int(row.get("step", 0))
        kind = str(row.get("kind", "train"))
        scalars = {k: float(v) for k, v in row.items() if k not in ("step", "kind")
                   and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(f"{kind}/{k}", v, step)
        if self.mlflow is not None:
            self.mlflow.log_metrics({f"{kind}_{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.mlflow is not None:
            self.mlflow.end_run()
            self.mlflow = None

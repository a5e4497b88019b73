"""Run logging: a CSV file of scalars (one row per logged step or evaluation) and a tqdm progress bar."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class CSVLogger:
    """Appends rows to ``path``; new columns are added by rewriting the file (rows are few)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.rows: list[dict[str, Any]] = []
        self.columns: list[str] = []
        if self.path is not None and self.path.is_file():  # resuming: keep earlier rows
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.columns = list(reader.fieldnames or [])
                self.rows = [dict(r) for r in reader]

    def truncate_after(self, step: int) -> None:
        """Drop rows past ``step`` (a resumed run replays them)."""
        self.rows = [r for r in self.rows if r.get("step") not in (None, "") and int(float(r["step"])) <= step]
        if not self.rows:
            self.columns = []
        self._rewrite()

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.path is None:
            return
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns).writerow(row)

    def _rewrite(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, self.columns)
            w.writeheader()
            w.writerows(self.rows)


def progress_bar(total: int, initial: int, enabled: bool, desc: str = "train") -> Any:
    """A tqdm bar over optimizer steps (shows it/s); a no-op object when disabled."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr,
                mininterval=1.0)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *a: Any, **k: Any) -> None:
        pass

    def close(self) -> None:
        pass

"""The run log: a CSV file of scalars, one row per logged step or evaluation (``<output_dir>/log.csv``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


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

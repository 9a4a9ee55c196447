"""The record a training run keeps of itself: ``OUT/log.csv`` and, when installed, TensorBoard scalars.

``log.csv`` has one row per ``train.log_interval`` iterations (and at validations and the end):
iteration, lr, the loss terms averaged since the previous row, grad norm, it/s, patches/s,
elapsed seconds and, on validation rows, ``val_psnr`` (dB). On resume the rows after the resumed
iteration are dropped, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
from pathlib import Path


class CsvLog:
    """Append-only CSV of the logged rows; on resume keeps only the rows up to the resumed iteration."""

    def __init__(self, path: Path, resume_at: int | None):
        self.path = path
        self.fields: list[str] | None = None
        if resume_at is not None and path.is_file():
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                rows = [row for row in reader if int(row["iteration"]) <= resume_at]
                self.fields = reader.fieldnames
            self._rewrite(rows)
        elif path.exists():
            path.unlink()

    def _rewrite(self, rows) -> None:
        from zoo.atomic import atomic_path

        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields or ["iteration"])
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
        if any(key not in self.fields for key in row):  # a new column (e.g. val_psnr): rewrite with it
            rows = []
            if self.path.exists():
                with self.path.open(newline="") as handle:
                    rows = list(csv.DictReader(handle))
            self.fields += [key for key in row if key not in self.fields]
            self._rewrite(rows)
        new_file = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields)
            if new_file:
                writer.writeheader()
            writer.writerow({key: row.get(key, "") for key in self.fields})


def open_tensorboard(out_dir: Path):
    """A TensorBoard ``SummaryWriter`` into ``OUT/tensorboard``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


class LogWindow:
    """Sums of the logged values since the last log row, and the time and patches of the steps."""

    def __init__(self):
        self.steps, self.seconds, self.patches, self.sums = 0, 0.0, 0, {}

    def add(self, seconds: float, values: dict[str, float], patches: int = 0) -> None:
        """One step that took ``seconds`` on ``patches`` patches (its global batch)."""
        self.steps += 1
        self.seconds += seconds
        self.patches += patches
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value

    def means(self) -> dict[str, float]:
        return {key: value / self.steps for key, value in self.sums.items()}

    @property
    def iterations_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0

    @property
    def patches_per_second(self) -> float:
        return self.patches / self.seconds if self.seconds > 0 else 0.0

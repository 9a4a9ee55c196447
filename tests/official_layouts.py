"""Official checkpoint layouts (key and shape lists) for the tests: where they are, how to read them,
and a state dict of that layout. A model card names its file (``ModelCard.official_layout``).

The files live outside the repo, like the datasets: ``$ZOO_OFFICIAL_LAYOUTS``, else
``../shared/notes/official-checkpoints`` beside the checkout. One ``name<TAB>shape`` a line, in
the official order. Without them the tests that need one are skipped (failed under CI=true).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def layout_dir() -> Path:
    """The folder holding the layout files (read from the environment at each call)."""
    return Path(os.environ.get("ZOO_OFFICIAL_LAYOUTS", REPO_ROOT.parent / "shared" / "notes" / "official-checkpoints"))


def official_layout(file_name: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(key, shape), ...]`` in the official order; skipped (failed under CI) when the notes are absent."""
    path = layout_dir() / file_name
    if not path.is_file():
        message = f"official layout {path} not found (set ZOO_OFFICIAL_LAYOUTS)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.strip()]
    return [(key, tuple(ast.literal_eval(shape))) for key, shape in rows]


def layout_state_dict(file_name: str) -> dict[str, torch.Tensor]:
    """A state dict with the official keys and shapes; tensor i holds the value i + 1 everywhere (a
    tensor loaded under the wrong key shows), as stride-0 expansions of one number (no memory)."""
    return {key: torch.tensor(float(index + 1)).expand(shape)
            for index, (key, shape) in enumerate(official_layout(file_name))}

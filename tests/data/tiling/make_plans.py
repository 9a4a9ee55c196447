"""Write ``plans.json``: golden tile plans and blend weights from ``zoo.tiling`` for the demo apps.

The Android (``android_demo/core``, Kotlin) and iOS (``ios_demo``, Swift) implementations of the
tile plan of ``docs/tiling.md`` must reproduce these numbers exactly; ``tests/test_android_core.py``
checks that this file still equals what ``zoo.tiling`` computes, so it cannot drift.

Format: a JSON list, one object per case::

    {"height", "width", "tile", "overlap", "size_multiple", "scale", "margin",
     "padded_height", "padded_width", "pad_modes": [rows, cols],
     "row_starts": [...], "col_starts": [...],
     "row_weights": [[...], ...], "col_weights": [[...], ...]}

* ``height``, ``width``, ``tile``, ``overlap``, ``size_multiple``, ``scale``: the arguments of
  ``plan_tiles`` / ``axis_weights``; ``overlap`` is the overlap as REQUESTED (``plan_tiles``
  rounds it up to a multiple of ``size_multiple``, one case checks that).
* ``margin``: the plan's margin (the default ``overlap_used // 2`` unless the case sets one);
  passing it explicitly to ``plan_tiles`` gives the same plan.
* ``padded_height``, ``padded_width``, ``pad_modes`` (``reflect``/``replicate`` for rows and
  columns), ``row_starts``, ``col_starts``: the plan.
* ``row_weights`` / ``col_weights``: ``plan.axis_weights("rows"|"cols", scale)``, one list of
  ``tile * scale`` float32 values (written as the exact decimal of each float32) per tile.

Run from the repository root: ``python tests/data/tiling/make_plans.py`` (``--check`` only
compares).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from zoo.tiling import plan_tiles  # noqa: E402

PLANS_PATH = Path(__file__).resolve().parent / "plans.json"

#: (height, width, tile, overlap, size_multiple, scale, margin or None for the default)
CASES = [
    (37, 29, 16, 4, 1, 1, None),  # odd sizes, no padding, last tile moved back
    (45, 50, 32, 8, 8, 1, None),  # size_multiple 8: reflect padding to 48 x 56
    (70, 53, 48, 5, 16, 1, None),  # overlap 5 rounded up to 16 (size_multiple 16)
    (23, 31, 16, 6, 1, 2, None),  # scale 2 (super-resolution)
    (19, 26, 16, 4, 4, 4, None),  # scale 4 with size_multiple 4
    (16, 16, 16, 4, 1, 1, None),  # exactly one tile
    (5, 9, 24, 6, 8, 1, None),  # image smaller than the tile: replicate padding on both axes
    (10, 20, 24, 4, 4, 1, None),  # replicate rows, reflect columns
    (41, 38, 20, 7, 1, 1, 2),  # odd overlap with margin 2: a linear ramp of 3 pixels
    (30, 50, 24, 9, 3, 3, 0),  # margin 0 (ramp 9), size_multiple 3, scale 3
    # Super-resolution x2, x3, x4 with odd sizes and odd overlaps (output tile = scale x tile,
    # overlap and margin in input pixels):
    (37, 21, 20, 7, 1, 2, 1),  # x2, margin 1: a linear ramp of 5 input pixels (10 output pixels)
    (29, 43, 16, 5, 1, 3, None),  # x3, default margin 2 with a 1-pixel ramp
    (11, 7, 16, 6, 1, 3, None),  # x3, smaller than one tile: reflect rows, replicate columns
    (33, 47, 24, 7, 2, 3, None),  # x3, size_multiple 2: overlap 7 rounded up to 8, reflect padding
    (27, 35, 12, 5, 1, 4, None),  # x4, odd sizes and overlap, 4 x 5 tiles
]


def make_plans() -> list[dict]:
    """The golden plans of :data:`CASES` as JSON-ready dicts."""
    plans = []
    for height, width, tile, overlap, size_multiple, scale, margin in CASES:
        plan = plan_tiles(height, width, tile=tile, overlap=overlap, size_multiple=size_multiple, margin=margin)
        plans.append({
            "height": height,
            "width": width,
            "tile": tile,
            "overlap": overlap,
            "size_multiple": size_multiple,
            "scale": scale,
            "margin": plan.margin,
            "padded_height": plan.padded_height,
            "padded_width": plan.padded_width,
            "pad_modes": list(plan.pad_modes),
            "row_starts": list(plan.row_starts),
            "col_starts": list(plan.col_starts),
            "row_weights": plan.axis_weights("rows", scale).double().tolist(),
            "col_weights": plan.axis_weights("cols", scale).double().tolist(),
        })
    return plans


def render(plans: list[dict]) -> str:
    """The file's text: one case per line block, weights on one line each (stable, diff-friendly)."""
    blocks = []
    for plan in plans:
        items = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in plan.items()]
        blocks.append("{\n" + ",\n".join(items) + "\n}")
    return "[\n" + ",\n".join(blocks) + "\n]\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with plans.json, write nothing")
    args = parser.parse_args(argv)
    text = render(make_plans())
    if args.check:
        current = PLANS_PATH.read_text(encoding="utf-8") if PLANS_PATH.exists() else ""
        if json.loads(current or "null") != json.loads(text):
            print(f"{PLANS_PATH} is out of date: run python {Path(__file__).relative_to(ROOT)}")
            return 1
        print(f"{PLANS_PATH} is up to date")
        return 0
    PLANS_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {len(CASES)} plans to {PLANS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

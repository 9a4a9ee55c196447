"""Each card's headline number is what `zoo eval` measures with the shipped weights (within 0.05 dB).

A model card is a promise to a user who reruns the command it names; these tests rerun `zoo eval`
(PyTorch, the card's tiling, seed 0) on the evaluation sets under the data root and compare with
the float PSNR the card states. Set5 rows run by default; the larger sets are marked slow.
"""

from __future__ import annotations

import pytest

from zoo.registry import get_card

pytestmark = pytest.mark.usefixtures("one_thread")

#: Allowed difference between a card and a rerun (the issue's reproduction tolerance), dB.
TOLERANCE_DB = 0.05


def _sr_row(name: str) -> dict:
    return next(row for row in get_card(name).results if isinstance(row.get("psnr_db"), dict))


def _headline(name: str, dataset: str, degradation: str) -> float:
    """The float PSNR (dB) the card of ``name`` states for ``dataset`` / ``degradation``."""
    card = get_card(name)
    if card.task == "super-resolution":
        return float(_sr_row(name)["psnr_db"][dataset])
    for row in card.results:
        if degradation in row and isinstance(row[degradation], dict):  # a row per noise level
            return float(row[degradation]["psnr_db"])
        if str(row.get("weights", "")).startswith("shipped") and str(row.get("degradation", "")).split()[0] == degradation:
            return float(row["psnr_db"])
    raise AssertionError(f"{name}'s card states no float PSNR for {dataset} {degradation}")


CASES = [
    pytest.param("idsanet-lite-x2", "set5", "bicubic:x2", id="idsanet-lite-x2-set5"),
    pytest.param("idsanet-lite-x4", "set5", "bicubic:x4", id="idsanet-lite-x4-set5"),
    pytest.param("idsanet-x2", "set5", "bicubic:x2", id="idsanet-x2-set5"),
    pytest.param("idsanet-x3", "set5", "bicubic:x3", id="idsanet-x3-set5"),
    pytest.param("idsanet-x4", "set5", "bicubic:x4", id="idsanet-x4-set5"),
    pytest.param("idsanet-x2", "set14", "bicubic:x2", id="idsanet-x2-set14", marks=pytest.mark.slow),
    pytest.param("idsanet-x3", "set14", "bicubic:x3", id="idsanet-x3-set14", marks=pytest.mark.slow),
    pytest.param("idsanet-x4", "set14", "bicubic:x4", id="idsanet-x4-set14", marks=pytest.mark.slow),
    pytest.param("idsanet-lite-x2", "set14", "bicubic:x2", id="idsanet-lite-x2-set14", marks=pytest.mark.slow),
    pytest.param("idsanet-lite-x4", "set14", "bicubic:x4", id="idsanet-lite-x4-set14", marks=pytest.mark.slow),
    pytest.param("hinet-lite", "bsd68", "gaussian:25", id="hinet-lite-25", marks=pytest.mark.slow),
    pytest.param("hinet-lite", "bsd68", "gaussian:50", id="hinet-lite-50", marks=pytest.mark.slow),
    pytest.param("hinet-lite-s", "bsd68", "gaussian:25", id="hinet-lite-s-25", marks=pytest.mark.slow),
    pytest.param("hinet-lite-s", "bsd68", "gaussian:50", id="hinet-lite-s-50", marks=pytest.mark.slow),
    pytest.param("mhnet-lite-derain", "bsd68", "rain", id="mhnet-lite-derain", marks=pytest.mark.slow),
    pytest.param("hinet-lite-derain", "bsd68", "rain", id="hinet-lite-derain", marks=pytest.mark.slow),
    pytest.param("hinet-lite-deblur", "bsd68", "motion-blur:length=10-30,noise=2.55", id="hinet-lite-deblur",
                 marks=pytest.mark.slow),
    pytest.param("hinet-lite-deblur", "bsd68", "motion-blur:length=10-30,jpeg=60-90", id="hinet-lite-deblur-jpeg",
                 marks=pytest.mark.slow),
    pytest.param("mhnet-lite-deblur", "bsd68", "motion-blur:length=10-30,noise=2.55", id="mhnet-lite-deblur",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "dataset", "degradation"), CASES)
def test_zoo_eval_reproduces_the_card(name, dataset, degradation, data_root):
    from zoo.evaluate import evaluate

    stated = _headline(name, dataset, degradation)
    result = evaluate(name, dataset, degradation=degradation, data_root=data_root, progress=False)
    assert result["mean"]["psnr"] == pytest.approx(stated, abs=TOLERANCE_DB), (
        f"{name} on {dataset} {degradation}: zoo eval {result['mean']['psnr']:.3f} dB, card {stated}")

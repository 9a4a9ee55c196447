"""The contract every registered model card keeps, checked over ``list_models()`` (in the style of
timm's tests/test_models.py). A new family in ``zoo/models`` gets all of it with no other edit;
``test_a_new_family_gets_the_whole_contract`` proves that with a toy family loaded through
``ZOO_EXTRA_FAMILIES``.

Per card: the card is consistent (task in the table, tile a multiple of the size multiple, the
default degradation at the card's scale); parameter and MAC counts are reported (meta device);
the official checkpoint layout the card names loads strictly through ``create_model``'s own path
(``checkpoint_ignore`` included). Per network (cards built by the same builder with the same
arguments share these): on odd sizes (37x45) the zoo's inference helper returns exactly ``scale``
times the input; the model itself computes sides that are multiples of ``size_multiple`` and
either refuses other sides naming the multiple or pads and crops them itself; ``torch.export`` works
at a small tile with the export rewrites applied and matches eager; the rewrites are exact.
Cards with ``single_int8_partition`` lower to one int8 XNNPACK partition (the smallest such card
by default, the others as slow tests). Networks above :data:`BIG_MODEL_PARAMETERS` are built and
run in slow tests only (the 17-88 M parameter reference models: HINet, MHNet v1/v2; their export
rewrite is also covered by the toy family and tests/test_export_executorch.py); their cheap checks
(card, counts, official layout) always run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from functools import lru_cache, partial
from fnmatch import fnmatch
from pathlib import Path

import pytest
import torch
from torch import nn

from export_mobile.rewrites import export_rewrites, register_export_rewrite, rewrite_for_export
from tests.official_layouts import layout_state_dict, official_layout
from zoo.errors import ZooError
from zoo.inference import TileSettings, restore_tensor
from zoo.macs import count_parameters, model_complexity
from zoo.registry import architecture_of, get_card, list_models, load_card_weights
from zoo.tasks import task_names
from zoo.tiling import plan_tiles

ROOT = Path(__file__).resolve().parents[1]
#: Networks with more parameters are built and run in slow tests only (building one costs seconds).
BIG_MODEL_PARAMETERS = 10_000_000
#: An input size that is a multiple of nothing useful (odd height and width).
ODD_SIZE = (37, 45)
#: Side of the small export / forward tile, rounded up to the card's size multiple.
SMALL_SIDE = 32
#: Set in the subprocess of test_a_new_family_gets_the_whole_contract (no recursion).
SUBPROCESS_ENV = "ZOO_CONTRACT_SUBPROCESS"

CARDS = list_models()
NAMES = [card.name for card in CARDS]
ZERO_SHOT_REASON = "{} is a per-image optimisation (zero-shot): no fixed network to run, export, count or load into"


@lru_cache(maxsize=None)
def meta_model(name: str) -> nn.Module:
    """The card's network built on the meta device (shapes only, no memory, no initialisation)."""
    with torch.device("meta"):
        return get_card(name).builder()


def _builder_key(builder):
    if isinstance(builder, partial):
        return builder.func, builder.args, tuple(sorted(builder.keywords.items()))
    return builder


def same_network_as(name: str) -> str | None:
    """The first card (by name) built by the same builder with the same arguments, if not ``name``."""
    key = _builder_key(get_card(name).builder)
    first = next(card.name for card in CARDS if _builder_key(card.builder) == key)
    return None if first == name else first


def small_side(card) -> int:
    """The smallest multiple of the card's size multiple that is at least :data:`SMALL_SIDE`."""
    return -(-SMALL_SIDE // card.size_multiple) * card.size_multiple


def _network_params():
    params = []
    for card in CARDS:
        big = not card.zero_shot and count_parameters(meta_model(card.name)) > BIG_MODEL_PARAMETERS
        params.append(pytest.param(card.name, id=card.name, marks=[pytest.mark.slow] if big else []))
    return params


@pytest.fixture(scope="module", params=_network_params())
def built(request):
    """``(card, model)``: each network built once per module (pytest groups the tests by card), with
    a fixed seed; zero-shot cards and cards sharing another card's network are skipped."""
    card = get_card(request.param)
    if card.zero_shot:
        pytest.skip(ZERO_SHOT_REASON.format(card.name))
    twin = same_network_as(card.name)
    if twin:
        pytest.skip(f"{card.name} builds the same network as {twin} (same builder and arguments): checked there")
    torch.manual_seed(0)
    return card, card.builder().eval()


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


# --- the card ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_card_is_consistent(name):
    from zoo.data.degradations import parse_degradation

    card = get_card(name)
    assert card.task in task_names(), f"{name}: task {card.task!r} is not the table's spelling"
    assert card.scale >= 1 and card.size_multiple >= 1
    assert parse_degradation(card.default_degradation).scale == card.scale
    assert isinstance(meta_model(name), architecture_of(card)) and issubclass(architecture_of(card), nn.Module)
    if card.tile is not None:
        assert card.tile % card.size_multiple == 0, f"{name}: tile {card.tile} vs size multiple {card.size_multiple}"
        assert 0 <= card.overlap < card.tile
        plan = plan_tiles(*ODD_SIZE, tile=card.tile, overlap=card.overlap, size_multiple=card.size_multiple)
        assert plan.padded_height % card.size_multiple == 0 and plan.padded_width % card.size_multiple == 0
    # Shipped QAT int8 state: a known recipe, an installed file of this model and recipe.
    from quantize.qat_state import read_qat_state
    from quantize.recipes import RECIPES

    for recipe in card.qat_weights:
        assert recipe in RECIPES, f"{name}: qat_weights names the unknown recipe {recipe!r}"
        info = read_qat_state(card.qat_weights_path(recipe)).info  # raises when the file is missing
        assert (info.model, info.recipe) == (name, recipe)
        # The QAT graph may need a coarser grid than eager mode (IDSANet: its 8-px window, which
        # eager mode pads to); the card's own tile must fit it, so `zoo export` works by default.
        assert info.size_multiple % card.size_multiple == 0 and card.tile % info.size_multiple == 0, (
            f"{name}: QAT state size multiple {info.size_multiple}, card {card.size_multiple}, tile {card.tile}")


@pytest.mark.parametrize("name", NAMES)
def test_parameter_and_mac_counts_are_reported(name):
    card = get_card(name)
    if card.zero_shot:
        pytest.skip(ZERO_SHOT_REASON.format(name))
    parameters, macs = model_complexity(name)  # what `zoo list` shows (1x3x256x256, meta device)
    assert parameters == count_parameters(meta_model(name)) > 0 and macs > 0


@pytest.mark.parametrize("name", NAMES)
def test_official_layout_loads_strictly(name):
    card = get_card(name)
    if card.zero_shot:
        pytest.skip(ZERO_SHOT_REASON.format(name))
    if not card.official_layout:
        pytest.skip(f"{name} names no official checkpoint layout (official_layout is None)")
    state_dict = layout_state_dict(card.official_layout)
    ignored = [key for key in state_dict if any(fnmatch(key, pattern) for pattern in card.checkpoint_ignore)]
    assert len(ignored) > 0 or not card.checkpoint_ignore, f"{name}: checkpoint_ignore matches no official key"
    with torch.device("meta"):
        model = card.builder()
    model = model.to_empty(device="cpu")  # uninitialised storage: only the load is tested
    if ignored:
        from zoo.checkpoints import load_weights

        with pytest.raises(ZooError, match="unexpected"):  # the patterns are what makes it load
            load_weights(model, state_dict)
    load_card_weights(model, card, {"params": state_dict})  # the official container, as --weights reads it
    loaded = model.state_dict()
    assert set(loaded) == set(state_dict) - set(ignored)
    for index, (key, shape) in enumerate(official_layout(card.official_layout)):
        if key in loaded:
            assert tuple(loaded[key].shape) == shape and bool((loaded[key] == index + 1).all()), key


# --- the network ---------------------------------------------------------------------------------


def test_output_is_scale_times_input_on_odd_sizes(built):
    """Through the zoo's inference helper (padding to the size multiple, then cropping); the tiled
    path of the same helper is tests/test_tiling.py's."""
    card, model = built
    image = _image(*ODD_SIZE)
    restored = restore_tensor(model, card, image, TileSettings(None, 0))
    assert tuple(restored.shape) == (3, ODD_SIZE[0] * card.scale, ODD_SIZE[1] * card.scale)
    assert bool(torch.isfinite(restored).all())


@pytest.fixture(scope="module")
def rewritten(built):
    """``(input, eager output, rewritten model, its report, its output)`` at the small tile, once per card."""
    card, model = built
    x = _image(small_side(card), small_side(card), seed=1)[None]
    export_ready, report = rewrite_for_export(model)
    with torch.no_grad():
        return x, model(x), export_ready, report, export_ready(x)


def test_size_multiple_is_honoured(built, rewritten):
    card, model = built
    side, multiple = small_side(card), card.size_multiple
    assert tuple(rewritten[1].shape) == (1, 3, side * card.scale, side * card.scale)  # a multiple runs
    if multiple == 1:
        return
    with torch.no_grad():
        odd = _image(side + 1, side)[None]
        try:
            output = model(odd)
        except (ValueError, ZooError) as err:  # refused, naming the multiple
            assert str(multiple) in str(err), f"{card.name}: the error does not name the multiple: {err}"
        else:  # or padded and cropped by the model itself
            assert tuple(output.shape) == (1, 3, (side + 1) * card.scale, side * card.scale)


def test_export_rewrites_are_exact(rewritten):
    _, original, _, report, replaced = rewritten
    if report.changed:
        assert float((original - replaced).abs().max()) < 1e-5, report.describe()
    else:
        assert torch.equal(original, replaced)


def test_torch_export_at_a_small_tile_matches_eager(rewritten):
    x, _, export_ready, _, expected = rewritten  # the rewritten model: what `zoo export` exports by default
    exported = torch.export.export(export_ready, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)
    # Core ML's converter refuses aten.alias (a no-op slice or view leaves one after decomposition).
    aliases = [node.name for node in exported.run_decompositions({}).graph.nodes if "alias" in str(node.target)]
    assert not aliases, f"alias nodes (Core ML cannot convert them): {aliases}"


# --- int8 on XNNPACK -------------------------------------------------------------------------------


def _single_partition_params():
    flagged = sorted((card for card in CARDS if card.single_int8_partition),
                     key=lambda card: count_parameters(meta_model(card.name)))
    # The smallest one runs by default (it exercises the same check); the others are slow.
    return [pytest.param(card.name, id=card.name, marks=[] if index == 0 else [pytest.mark.slow])
            for index, card in enumerate(flagged)]


@pytest.mark.parametrize("name", _single_partition_params())
def test_int8_lowers_to_one_xnnpack_partition(name, tmp_path):
    pytest.importorskip("executorch")
    from export_mobile.api import export_model

    card = get_card(name)
    outcome = export_model(name, "executorch-xnnpack", "int8", small_side(card), tmp_path / name, untrained=True,
                           calibration="bundled", calibration_images=2, verify=False)
    backend = outcome.manifest["backend"]
    assert backend["partitions"] == 1 and backend["ops_outside_delegate"] == [], backend


# --- the export rewrite table ------------------------------------------------------------------------


class _Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class _SwishAsReluMix(nn.Module):
    """Not an exact replacement: only used to see that the table entry is applied."""

    def __init__(self, original: nn.Module):
        super().__init__()

    def forward(self, x):
        return torch.relu(x)


def test_a_registered_rewrite_replaces_its_module_type(monkeypatch):
    from export_mobile import rewrites

    monkeypatch.setattr(rewrites, "_EXPORT_REWRITES", dict(rewrites._EXPORT_REWRITES))
    model = nn.Sequential(nn.Conv2d(3, 3, 1), _Swish(), nn.Sequential(_Swish(), nn.InstanceNorm2d(3)))
    register_export_rewrite(_Swish, _SwishAsReluMix)
    assert export_rewrites()[_Swish] is _SwishAsReluMix
    rewritten, report = rewrite_for_export(model)
    assert report.replaced == ["1: _Swish -> _SwishAsReluMix", "2.0: _Swish -> _SwishAsReluMix",
                               "2.1: InstanceNorm2d -> DecomposedInstanceNorm2d"]
    assert type(model[1]) is _Swish  # the original is untouched
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_export_rewrite(int, _SwishAsReluMix)


# --- a new family gets all of the above ------------------------------------------------------------

TOY_MODULE = '''
"""A toy x2 super-resolution family for the contract tests (loaded through ZOO_EXTRA_FAMILIES)."""
import torch
import torch.nn.functional as F
from torch import nn

from zoo.registry import ModelCard, register


class ToyNet(nn.Module):
    """conv -> instance norm (the export rewrite applies) -> conv -> pixel shuffle + nearest skip."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.InstanceNorm2d(8, affine=True)
        self.tail = nn.Conv2d(8, 12, 3, padding=1)

    def forward(self, x):
        if x.shape[-2] % 2 or x.shape[-1] % 2:
            raise ValueError(f"ToyNet needs sides that are multiples of 2, got {tuple(x.shape[-2:])}")
        residual = F.pixel_shuffle(self.tail(torch.relu(self.norm(self.head(x)))), 2)
        return residual + F.interpolate(x, scale_factor=2, mode="nearest")


register(ModelCard(name="toynet-x2", family="toynet", task="sr", variant="x2", summary="toy x2 upscaler",
                   builder=lambda: ToyNet().eval(), scale=2, size_multiple=2, tile=32, overlap=4,
                   official_layout="ToyNet.txt", checkpoint_ignore=("aux.*",)))
'''


def test_a_new_family_gets_the_whole_contract(tmp_path):
    if os.environ.get(SUBPROCESS_ENV):
        pytest.skip("already inside the contract subprocess")
    (tmp_path / "toy_family_zoo.py").write_text(textwrap.dedent(TOY_MODULE), encoding="utf-8")
    # The toy's "official" layout: its own keys plus one the forward never uses (checkpoint_ignore).
    layout = ["head.weight\t(8, 3, 3, 3)", "head.bias\t(8,)", "norm.weight\t(8,)", "norm.bias\t(8,)",
              "tail.weight\t(12, 8, 3, 3)", "tail.bias\t(12,)", "aux.weight\t(4,)"]
    (tmp_path / "ToyNet.txt").write_text("\n".join(layout) + "\n", encoding="utf-8")
    env = dict(os.environ, ZOO_EXTRA_FAMILIES="toy_family_zoo", ZOO_OFFICIAL_LAYOUTS=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", **{SUBPROCESS_ENV: "1"})
    report = tmp_path / "report.xml"
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings", "-m", "not slow",
         "-k", "toynet", f"--junitxml={report}", str(Path(__file__).relative_to(ROOT))],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    import xml.etree.ElementTree as ElementTree

    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("skipped", "failure", "error")), "passed")
        outcomes[case.get("name")] = outcome
    expected = {f"{test}[toynet-x2]" for test in (
        "test_card_is_consistent", "test_parameter_and_mac_counts_are_reported", "test_official_layout_loads_strictly",
        "test_output_is_scale_times_input_on_odd_sizes", "test_size_multiple_is_honoured",
        "test_export_rewrites_are_exact", "test_torch_export_at_a_small_tile_matches_eager")}
    assert outcomes == {name: "passed" for name in expected}, json.dumps(outcomes, indent=1)

"""The QAT int8 state file: what a QAT run leaves to rebuild its int8 model, and what a model ships.

A QAT run (:mod:`quantize.qat_phase`) ends with ``OUT/quantized_state.safetensors`` beside
``OUT/quantized.pt2``. It holds tensors only (safetensors: loads without running code, reads on
any torch version) and rebuilds exactly the int8 model the run converted:

* ``model.*``: the latent float weights of the evaluated model (the EMA weights when the run used
  EMA), a state dict of the configured model under the prefix ``model.``;
* ``quantizer.*``: every fake quantizer's state (observer ranges, scales, learnable LSQ scales,
  flags), keyed ``quantizer.<fake quantizer>.<key>``, as it was converted (after the optional
  ``reestimate_ranges``); always float32 / integer, never packed;
* the safetensors header metadata (JSON text per key): ``format``, ``format_version``, ``model``
  (card name, or the config's model description), ``recipe``, ``mixed`` (the ``--mixed`` text),
  ``learnable_scales``, ``tile`` (the run's export tile), ``size_multiple``, ``trace_shape``
  (height and width the run traced at), ``provenance`` (:mod:`quantize.provenance`) and ``sidecar``
  (the ``quantized.json`` metadata of the run).

:func:`rebuild_qat_model` turns a float model instance and the file into the converted int8 PT2E
model: ``prepare_qat_graph`` with the recorded recipe and mixed precision (the phase's
dynamic-shape export), LSQ quantizers when recorded, the weights and the quantizer state loaded,
``convert_qat_graph`` at the recorded (or a given) tile. Its outputs equal the run's
``quantized.pt2`` bit for bit. The run and the rebuild convert through the same function
(:func:`convert_qat_state`), so the settings recorded on the graph are the same.

Shipping: :func:`pack_qat_state` (``zoo quantize MODEL --backend B --pack RUN_DIR -o
zoo/weights/FILE.safetensors``) writes the file with the model weights in float16 (about half the
size; the quantizer state stays float32), and a card lists it per recipe
(``ModelCard.qat_weights = {"xnnpack": "FILE.safetensors"}``); ``zoo export MODEL --precision
int8`` then rebuilds the int8 model from it, without calibration data. Unlike the ``.pt2`` the
state is not tied to one torch version or one tile: it converts at any multiple of the size
multiple (at least two).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zoo.errors import ZooError

__all__ = ["QUANTIZED_STATE", "STATE_FORMAT", "STATE_VERSION", "QATStateInfo", "quantizer_state",
           "load_quantizer_state", "convert_qat_state", "write_qat_state", "read_qat_state", "rebuild_qat_model",
           "pack_qat_state"]

#: File name of a QAT run's state, in the run folder.
QUANTIZED_STATE = "quantized_state.safetensors"
#: ``format`` / ``format_version`` of the file's metadata.
STATE_FORMAT = "zoo-qat-state"
STATE_VERSION = 1
MODEL_PREFIX = "model."
QUANTIZER_PREFIX = "quantizer."


# ----------------------------------------------------------------------------- fake quantizer state


def quantizer_state(graph: nn.Module) -> dict[str, torch.Tensor]:
    """Every fake quantizer's state (ranges, scales, flags) of a prepared graph, keyed
    ``<fake quantizer>.<key>``, cloned to the CPU."""
    from quantize.qat import fake_quantizers

    return {f"{name}.{key}": value.detach().cpu().clone()
            for name, module in fake_quantizers(graph).items() for key, value in module.state_dict().items()}


def load_quantizer_state(graph: nn.Module, state: dict[str, torch.Tensor], *, source: str = "the checkpoint",
                         fix: str = "resume with the config (quantization section) of that run") -> set[str]:
    """Load :func:`quantizer_state` ``state`` into the fake quantizers of ``graph`` (in place);
    returns the keys of ``state`` it used. :class:`ZooError` naming ``source`` and ``fix`` when a
    quantizer of the graph has no state there or its state does not fit (another recipe, LSQ or
    not, another model)."""
    from quantize.qat import fake_quantizers

    used: set[str] = set()
    for name, module in fake_quantizers(graph).items():
        prefix = f"{name}."
        own = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if not own:
            raise ZooError(f"{source} holds no state for the fake quantizer {name}", fix)
        # The observers read their layout version from the state dict's metadata (without it they
        # take eps for an old checkpoint's and reset it): keep the module's own.
        loaded = collections.OrderedDict(own)
        loaded._metadata = getattr(module.state_dict(), "_metadata", None)
        try:
            with torch.no_grad():
                module.load_state_dict(loaded)
        except RuntimeError as err:  # missing/unexpected keys, shapes: a quantizer of another kind
            detail = " ".join(str(err).split())[:200]
            raise ZooError(f"{source}: the state of the fake quantizer {name} does not fit it ({detail})", fix) from None
        used.update(prefix + key for key in own)
    return used


# ----------------------------------------------------------------------------- conversion


def convert_qat_state(graph: torch.fx.GraphModule, model: nn.Module, recipe, tile: int,
                      provenance: dict | None) -> tuple[torch.fx.GraphModule, dict[str, str]]:
    """Convert a prepared QAT graph (left as it is) to the int8 model taking ``tile`` x ``tile``
    inputs (any batch 1..64); returns (converted graph, layer precision as
    :func:`quantize.ptq.layer_precision` gives it).

    The converted graph's ``meta[META_KEY]`` records recipe, method ``qat``, numerics, mixed
    precision (``graph.meta[MIXED_KEY]``), the added output clamp, the input shape and
    ``provenance``: the one place both a QAT run and :func:`rebuild_qat_model` set it."""
    from quantize.ptq import META_KEY
    from quantize.qat import MIXED_KEY, convert_qat_graph

    converted, clamped, precision = convert_qat_graph(graph, model, recipe, torch.zeros(2, 3, tile, tile))
    converted.meta[META_KEY] = {
        "recipe": recipe.NAME,
        "method": "qat",
        "numerics": dict(recipe.NUMERICS),
        "fold_quantize": recipe.FOLD_QUANTIZE,
        "mixed_precision": graph.meta.get(MIXED_KEY),
        "output_clamp_added": clamped,
        "input_shape": [3, tile, tile],
        "provenance": provenance,
    }
    return converted, precision


# ----------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class QATStateInfo:
    """The metadata of a QAT state file (see the module docstring)."""

    #: Card name of the model (or the run config's model description for a model without a card).
    model: str
    #: Quantization recipe (``xnnpack``, ``coreml``, ``tflite``).
    recipe: str
    #: ``--mixed`` text: layers kept in float (``first-last``, ``none``, module names).
    mixed: str
    learnable_scales: bool
    #: Export tile of the run (input pixels, square).
    tile: int
    size_multiple: int
    #: Height and width (input pixels) the run traced the model at.
    trace_shape: tuple[int, int]
    provenance: dict | None
    #: The ``quantized.json`` metadata of the run (model, weights, calibration, qat settings, ...).
    sidecar: dict

    _FIELDS = ("model", "recipe", "mixed", "learnable_scales", "tile", "size_multiple", "trace_shape", "provenance",
               "sidecar")

    def to_metadata(self) -> dict[str, str]:
        """The safetensors header metadata (str -> JSON text)."""
        metadata = {"format": json.dumps(STATE_FORMAT), "format_version": json.dumps(STATE_VERSION)}
        metadata.update({name: json.dumps(getattr(self, name)) for name in self._FIELDS})
        return metadata

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], path: Path) -> "QATStateInfo":
        """Read :meth:`to_metadata` back; :class:`ZooError` for another format, a newer version or
        missing / unreadable fields."""
        fix = "pass the quantized_state.safetensors of a QAT run, or a file zoo quantize --pack wrote"
        if metadata.get("format") != json.dumps(STATE_FORMAT):  # weights files hold other (plain text) metadata
            raise ZooError(f"{path.name} is not a zoo QAT state file (its metadata has no format {STATE_FORMAT!r})", fix)
        try:
            values = {key: json.loads(text) for key, text in metadata.items()}
        except json.JSONDecodeError as err:
            raise ZooError(f"{path.name} has QAT state metadata that is not JSON ({err.msg})", fix) from None
        version = values.get("format_version")
        if not isinstance(version, int) or version > STATE_VERSION:
            raise ZooError(f"{path.name} was written by a newer zoo (QAT state format {version})",
                           "upgrade mobile-restoration-zoo")
        missing = [name for name in cls._FIELDS if name not in values]
        if missing:
            raise ZooError(f"{path.name} lacks the QAT state metadata {', '.join(missing)}", fix)
        fields = {name: values[name] for name in cls._FIELDS}
        try:
            fields["trace_shape"] = tuple(int(side) for side in fields["trace_shape"])
            fields["tile"], fields["size_multiple"] = int(fields["tile"]), int(fields["size_multiple"])
        except (TypeError, ValueError):
            raise ZooError(f"{path.name} records a tile, size multiple or trace shape that is not a size", fix) from None
        return cls(**fields)


def write_qat_state(path: str | Path, model: nn.Module, graph: nn.Module, info: QATStateInfo, *,
                    weights_dtype: torch.dtype | None = None) -> Path:
    """Write ``model``'s state dict (the float weights the prepared ``graph`` computes with) and
    the state of ``graph``'s fake quantizers with ``info`` as one safetensors file, atomically.

    ``weights_dtype``: cast the model's floating-point tensors (e.g. ``torch.float16`` to ship);
    None keeps them. The quantizer state is never cast. Returns ``path``."""
    return _save_state(path, model.state_dict(), quantizer_state(graph), info, weights_dtype)


def _save_state(path: str | Path, weights: dict[str, torch.Tensor], quantizers: dict[str, torch.Tensor],
                info: QATStateInfo, weights_dtype: torch.dtype | None) -> Path:
    """The file's one writer: prefixed tensors (floating weights cast to ``weights_dtype``), metadata, atomically."""
    from zoo.checkpoints import save_weights

    def cast(value: torch.Tensor) -> torch.Tensor:
        value = value.detach().cpu()
        return value.to(weights_dtype) if weights_dtype is not None and value.is_floating_point() else value

    tensors = {MODEL_PREFIX + key: cast(value) for key, value in weights.items()}
    tensors.update({QUANTIZER_PREFIX + key: value for key, value in quantizers.items()})
    return save_weights(tensors, path, metadata=info.to_metadata())


@dataclass(frozen=True)
class QATState:
    """A QAT state file read back: its metadata, the model weights and the quantizer state."""

    path: Path
    info: QATStateInfo
    weights: dict[str, torch.Tensor]
    quantizers: dict[str, torch.Tensor]


def read_qat_state(path: str | Path) -> QATState:
    """Read a QAT state file (:func:`write_qat_state`, :func:`pack_qat_state`).

    :class:`ZooError` when the file is missing, not safetensors, truncated or corrupt, not a zoo
    QAT state file, written by a newer zoo, or holds no model weights or no quantizer state."""
    from zoo.checkpoints import read_metadata, read_state_dict

    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ZooError(f"QAT state file {path} {what}",
                       "pass the quantized_state.safetensors of a QAT run (zoo train with a quantization section)")
    info = QATStateInfo.from_metadata(read_metadata(path), path)
    tensors = read_state_dict(path)
    weights = {key[len(MODEL_PREFIX):]: value for key, value in tensors.items() if key.startswith(MODEL_PREFIX)}
    quantizers = {key[len(QUANTIZER_PREFIX):]: value for key, value in tensors.items()
                  if key.startswith(QUANTIZER_PREFIX)}
    strangers = [key for key in tensors if not key.startswith((MODEL_PREFIX, QUANTIZER_PREFIX))]
    if not weights or not quantizers or strangers:
        what = "no model weights" if not weights else "no quantizer state" if not quantizers else \
            f"tensors outside model. and quantizer. ({', '.join(strangers[:3])})"
        raise ZooError(f"QAT state file {path.name} holds {what}",
                       "pass the quantized_state.safetensors of a QAT run, or a file zoo quantize --pack wrote")
    return QATState(path=path, info=info, weights=weights, quantizers=quantizers)


# ----------------------------------------------------------------------------- rebuilding


def rebuild_qat_model(model: nn.Module, state: str | Path | QATState, *, model_name: str | None = None,
                      recipe: str | None = None, tile: int | None = None) -> tuple[torch.fx.GraphModule, dict]:
    """The converted int8 PT2E model a QAT state file describes, built on ``model``'s architecture.

    Args:
        model: a float model instance of the architecture the run trained (its weights are
            replaced by the file's; ``model`` itself is left untouched: a copy is used). Build it
            without export rewrites: the fake quantizers are named after the traced graph.
        state: the file (:data:`QUANTIZED_STATE` of a run, or a packed file) or what
            :func:`read_qat_state` returned.
        model_name, recipe: when given, the file must record this model (card name) and recipe.
        tile: input height and width of the int8 model (input pixels; a multiple of the recorded
            size multiple, at least two of them); default the run's tile.
    Returns:
        ``(converted GraphModule, sidecar metadata)``: the graph runs NCHW batches 1..64 of
        ``tile`` x ``tile`` in [0, 1] and carries ``meta[META_KEY]`` as the run's did; the metadata
        is the run's ``quantized.json`` fields (for :func:`quantize.ptq.save_quantized`), with
        ``tile``, ``input_shape`` and ``layer_precision`` of this conversion.
    Raises:
        ZooError: the file is unreadable (:func:`read_qat_state`), records another model or
        recipe, its weights or quantizer state do not fit ``model``, or ``tile`` does not fit.
    """
    from quantize.qat import prepare_qat_graph, use_learnable_scales
    from quantize.recipes import MixedPrecision, require_recipe
    from zoo.checkpoints import load_weights

    if not isinstance(state, QATState):
        state = read_qat_state(state)
    info, name = state.info, state.path.name
    if model_name is not None and info.model != model_name:
        raise ZooError(f"{name} holds the QAT state of {info.model}, not {model_name}",
                       f"pass a QAT state file of {model_name} (zoo quantize {model_name} --backend {info.recipe} "
                       f"--pack RUN_DIR -o FILE)")
    if recipe is not None and info.recipe != recipe:
        raise ZooError(f"{name} holds QAT state for the {info.recipe} recipe, this target needs {recipe}",
                       f"train QAT with quantization.backend: {recipe} and pack that run, or export to a target "
                       f"of the {info.recipe} recipe")
    recipe_module = require_recipe(info.recipe)
    multiple = info.size_multiple
    tile = info.tile if tile is None else int(tile)
    if tile % multiple or tile < 2 * multiple:
        raise ZooError(f"tile {tile} is not a multiple of the size multiple {multiple} of at least twice it",
                       f"use a tile such as {max(4 * multiple, tile // multiple * multiple)}")

    float_model = copy.deepcopy(model).eval()
    try:
        load_weights(float_model, state.weights)  # strict; float16 weights are cast to the model's dtype
    except ZooError as err:  # "state dict does not fit NET: 2 missing, ... (missing: a, b)"
        detail = err.problem.split(": ", 1)[-1]
        raise ZooError(f"{name}: the model weights do not fit {type(model).__name__}: {detail}",
                       f"pass a model of the architecture the QAT run trained ({info.model})") from None
    example = torch.zeros(2, 3, *info.trace_shape)
    graph = prepare_qat_graph(float_model, example, recipe_module, MixedPrecision.parse(info.mixed),
                              size_multiple=multiple)
    if info.learnable_scales:
        use_learnable_scales(graph)
    fix = f"the file does not match this model: pass the QAT state of {info.model} with its own architecture"
    used = load_quantizer_state(graph, state.quantizers, source=name, fix=fix)
    unused = sorted({key.rsplit(".", 1)[0] for key in state.quantizers if key not in used})
    if unused:
        raise ZooError(f"{name} holds state for fake quantizers this model does not have ({', '.join(unused[:3])})",
                       fix)
    converted, precision = convert_qat_state(graph, float_model, recipe_module, tile, info.provenance)
    sidecar = {**info.sidecar, "tile": tile, "input_shape": [3, tile, tile], "layer_precision": precision,
               "qat_state": name}
    return converted, sidecar


# ----------------------------------------------------------------------------- shipping


def pack_qat_state(source: str | Path, output: str | Path, *, model_name: str | None = None,
                   recipe: str | None = None, overwrite: bool = False) -> dict:
    """Write the QAT state of a run for shipping: the model weights in float16 (the quantizer
    state stays float32), same metadata, plus ``sidecar["packed"]`` naming the source.

    ``source``: a QAT run folder (its :data:`QUANTIZED_STATE`) or a state file. ``output``: the
    ``.safetensors`` file to write (atomically; an existing one only with ``overwrite``), e.g.
    ``zoo/weights/hinet_lite_s_gaussian_qat_xnnpack.safetensors`` (the float weights' stem +
    ``_qat_<recipe>``). ``model_name`` / ``recipe``: when given, the state must be of that model
    and recipe. Returns ``{"path", "model", "recipe", "bytes",
    "provenance"}``. :class:`ZooError` for a run without the file, a mismatch, a weight outside
    the float16 range, an existing output, or an output that is the source itself.
    """
    from zoo.checkpoints import check_fits_float16

    source = Path(source).expanduser()
    path = source / QUANTIZED_STATE if source.is_dir() else source
    if source.is_dir() and not path.is_file():
        raise ZooError(f"{source} holds no {QUANTIZED_STATE}",
                       "pack a finished QAT run (zoo train with a quantization section) of this zoo version")
    output = Path(output).expanduser()
    if output.suffix != ".safetensors":
        raise ZooError(f"the packed QAT state is a .safetensors file, got {output.name}",
                       "name the output FILE.safetensors (e.g. zoo/weights/<weights stem>_qat_<recipe>.safetensors)")
    if output.exists() and path.exists() and output.resolve() == path.resolve():  # --overwrite or not
        raise ZooError(f"-o {output} is the QAT state being packed: packing would replace its float32 weights "
                       "by float16 ones", "write the packed file elsewhere (zoo/weights/<weights stem>_qat_<recipe>"
                       ".safetensors)")
    if output.exists() and not overwrite:
        raise ZooError(f"{output} already exists", "pass --overwrite or choose another -o")
    state = read_qat_state(path)
    info = state.info
    if model_name is not None and info.model != model_name:
        raise ZooError(f"{path} holds the QAT state of {info.model}, not {model_name}",
                       f"pack it as {info.model} (zoo quantize {info.model} --pack ...)")
    if recipe is not None and info.recipe != recipe:
        raise ZooError(f"{path} holds QAT state for the {info.recipe} recipe, not {recipe}",
                       f"pack it with --backend {info.recipe}")
    check_fits_float16(state.weights, path.name, "ship the unpacked quantized_state.safetensors (float32) instead")
    packed = dataclasses.replace(info, sidecar={**info.sidecar,
                                                "packed": {"from": str(path), "weights_dtype": "float16"}})
    output.parent.mkdir(parents=True, exist_ok=True)
    _save_state(output, state.weights, state.quantizers, packed, torch.float16)
    return {"path": output, "model": info.model, "recipe": info.recipe, "bytes": output.stat().st_size,
            "provenance": info.provenance}

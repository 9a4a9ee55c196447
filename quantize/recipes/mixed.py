"""Mixed precision for PT2E quantization: which layers and operators stay in float.

Int8 hurts restoration networks most at their ends: the first convolution sees the raw image
(fine detail in a few levels of a shared scale), the last one writes the residual that is added
to the image, and the global residual add / output clamp would otherwise round the output
itself to 8 bits of an activation scale instead of the image's own levels. Keeping those in
float costs little (they are thin: 3 input or output channels) and brings the int8 drop close to
the quantization-aware result (see docs/quantization.md).

:class:`MixedPrecision` lists what stays float; :func:`keep_float` wraps any backend
quantizer and removes the quantization annotations of those nodes after the backend has
annotated the graph. This works the same for every backend (XNNPACK's and LiteRT's quantizers
refuse ``set_module_name(name, None)``), and it can also reach the operators that belong to no
submodule (the global residual add and clamp of ``forward``).

Only torch is imported here; the backend quantizers are created by the recipe modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from zoo.errors import ZooError

#: Placeholder names in :attr:`MixedPrecision.float_modules`, resolved on the exported graph.
FIRST = "@first"
LAST = "@last"

#: The PyTorch attribute where PT2E quantizers store their per-node annotation.
_ANNOTATION_KEY = "quantization_annotation"


def _weighted_packets() -> set:
    aten = torch.ops.aten
    return {
        aten.conv1d, aten.conv2d, aten.conv3d, aten.convolution,
        aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d,
        aten.linear,
    }


def is_weighted_layer(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a convolution, transposed convolution or linear layer call."""
    if node.op != "call_function":
        return False
    packet = getattr(node.target, "overloadpacket", None)
    return packet in _weighted_packets()


def module_path(node: torch.fx.Node) -> str:
    """Qualified name of the innermost module ``node`` was traced in ("" for the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    prefix = "L['self']."
    return path[len(prefix):] if path.startswith(prefix) else path


def _module_paths(node: torch.fx.Node) -> set[str]:
    prefix = "L['self']."
    return {path[len(prefix):] if path.startswith(prefix) else path
            for path, _ in (node.meta.get("nn_module_stack") or {}).values()}


def weighted_layers(graph: torch.fx.Graph) -> list[str]:
    """Module names of the conv/linear layers of an exported graph, in execution order, once each."""
    names: list[str] = []
    for node in graph.nodes:
        if is_weighted_layer(node):
            name = module_path(node)
            if name and name not in names:
                names.append(name)
    return names


def _tensor_inputs(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The graph nodes ``node`` reads, constants (get_attr: weights, scalars) excluded."""
    return [arg for arg in node.all_input_nodes if arg.op != "get_attr"]


def first_layers(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    """Conv/linear nodes that read the model input, directly or through single-input operators
    (pad, pixel_unshuffle, scaling): the layers that see the raw image."""
    found: list[torch.fx.Node] = []
    frontier = [node for node in graph.nodes if node.op == "placeholder"]
    seen: set[torch.fx.Node] = set(frontier)
    while frontier:
        node = frontier.pop(0)
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            if is_weighted_layer(user):
                found.append(user)
            elif user.op == "call_function" and len(_tensor_inputs(user)) == 1:
                frontier.append(user)
    return found


def last_layers(graph: torch.fx.Graph) -> tuple[list[torch.fx.Node], list[torch.fx.Node]]:
    """``(layers, tail)``: the conv/linear nodes whose output reaches the model output without
    passing through another conv/linear, and the operators between them and the output (global
    residual add, pixel_shuffle, clamp)."""
    output = next(node for node in reversed(graph.nodes) if node.op == "output")
    layers: list[torch.fx.Node] = []
    tail: list[torch.fx.Node] = []
    frontier = list(output.all_input_nodes)
    seen: set[torch.fx.Node] = set(frontier)
    while frontier:
        node = frontier.pop(0)
        if node.op in ("placeholder", "get_attr"):
            continue
        if is_weighted_layer(node):
            layers.append(node)
            continue
        tail.append(node)
        for arg in node.all_input_nodes:
            if arg not in seen:
                seen.add(arg)
                frontier.append(arg)
    return layers, tail


@dataclass(frozen=True)
class MixedPrecision:
    """What stays in float when the rest of the model is quantized to int8.

    ``float_modules``: qualified module names (as in ``model.named_modules()``) whose operators
    are left unquantized; the placeholders ``"@first"`` and ``"@last"`` stand for the
    convolutions that read the input image and those that write the output (found on the
    exported graph, so they work for any model). ``float_output_ops``: also keep the operators
    between the last convolution(s) and the output in float (global residual add,
    pixel_shuffle, clamp). The default is the first + last layer recipe.
    """

    float_modules: tuple[str, ...] = (FIRST, LAST)
    float_output_ops: bool = True

    @classmethod
    def parse(cls, text: str | None) -> "MixedPrecision | None":
        """``"first-last"`` -> the default; ``"none"`` (or None/empty) -> None (all int8);
        otherwise a comma-separated list of module names, where ``first`` and ``last`` may
        appear (e.g. ``"first,last,down_path_2.0.conv_1"``)."""
        if text is None or text.strip().lower() in ("", "none", "int8", "all-int8"):
            return None
        if text.strip().lower() == "first-last":
            return cls()
        names = []
        for part in (piece.strip() for piece in text.split(",")):
            if not part:
                continue
            names.append({"first": FIRST, "last": LAST}.get(part.lower(), part))
        if not names:
            raise ZooError(f"empty mixed-precision list {text!r}", "use first-last, none or module names")
        return cls(float_modules=tuple(names), float_output_ops=LAST in names)

    def describe(self) -> dict:
        """JSON-ready summary (the requested names, before resolution)."""
        return {"float_modules": list(self.float_modules), "float_output_ops": self.float_output_ops}

    @staticmethod
    def flag(mixed: "MixedPrecision | None") -> str:
        """The ``--mixed`` text of ``mixed`` (what :meth:`parse` reads back): ``first-last`` for the
        default, ``none`` for None, else the comma-separated names (``first``/``last`` for the
        placeholders)."""
        if mixed is None:
            return "none"
        if mixed == MixedPrecision():
            return "first-last"
        return ",".join({FIRST: "first", LAST: "last"}.get(name, name) for name in mixed.float_modules)


@dataclass
class FloatSelection:
    """The result of resolving a :class:`MixedPrecision` on one graph."""

    modules: list[str] = field(default_factory=list)
    output_ops: list[str] = field(default_factory=list)
    nodes: set = field(default_factory=set)

    def describe(self) -> dict:
        return {"float_modules": list(self.modules), "float_output_ops": list(self.output_ops)}


def resolve_float_nodes(graph: torch.fx.Graph, mixed: MixedPrecision) -> FloatSelection:
    """The nodes of ``graph`` that ``mixed`` keeps in float, with their module names.

    Raises :class:`ZooError` for a module name that matches no operator of the graph.
    """
    selection = FloatSelection()
    wanted: list[str] = []
    for name in mixed.float_modules:
        if name == FIRST:
            wanted += [module_path(node) or node.name for node in first_layers(graph)]
        elif name == LAST:
            wanted += [module_path(node) or node.name for node in last_layers(graph)[0]]
        else:
            wanted.append(name)
    for name in dict.fromkeys(wanted):  # keep order, drop repeats
        matched = [node for node in graph.nodes if name in _module_paths(node) or node.name == name]
        if not matched:
            examples = ", ".join(weighted_layers(graph)[:4])
            raise ZooError(f"module {name!r} is not in the model's exported graph",
                           f"use qualified module names such as {examples}")
        selection.modules.append(name)
        selection.nodes.update(matched)
    if mixed.float_output_ops:
        tail = last_layers(graph)[1]
        selection.output_ops = [node.name for node in tail]
        selection.nodes.update(tail)
    return selection


def _references(spec) -> list:
    """Edges/nodes a shared or derived quantization spec points at."""
    if spec is None:
        return []
    if hasattr(spec, "edge_or_node"):
        return [spec.edge_or_node]
    return list(getattr(spec, "derived_from", None) or [])


def _reference_is_annotated(reference) -> bool:
    if isinstance(reference, tuple):  # edge (producer, consumer): the consumer's input spec
        producer, consumer = reference
        annotation = consumer.meta.get(_ANNOTATION_KEY)
        return annotation is not None and annotation.input_qspec_map.get(producer) is not None
    annotation = reference.meta.get(_ANNOTATION_KEY)
    return annotation is not None and annotation.output_qspec is not None


def strip_annotations(graph: torch.fx.Graph, nodes: set) -> int:
    """Remove the quantization annotations of ``nodes`` (they then run in float); returns how
    many nodes lost their annotation.

    Annotations elsewhere that share or derive their quantization parameters from a removed one
    are removed too (repeated until none is left), since they would point at nothing.
    """
    removed = 0
    for node in nodes:
        if node.meta.pop(_ANNOTATION_KEY, None) is not None:
            removed += 1
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            annotation = node.meta.get(_ANNOTATION_KEY)
            if annotation is None:
                continue
            specs = [*annotation.input_qspec_map.values(), annotation.output_qspec]
            if any(not _reference_is_annotated(ref) for spec in specs for ref in _references(spec)):
                del node.meta[_ANNOTATION_KEY]
                removed += 1
                changed = True
    return removed


def keep_float(base, mixed: MixedPrecision | None):
    """``base`` (a PT2E quantizer) unchanged when ``mixed`` is None, else wrapped in a
    :class:`KeepFloatQuantizer` that leaves ``mixed``'s layers and operators in float."""
    if mixed is None:
        return base
    return _keep_float_class()(base, mixed)


_KEEP_FLOAT_CLASS = None


def _keep_float_class():
    """The quantizer wrapper class, defined on first use so that importing this module needs
    torch only (torchao is imported here)."""
    global _KEEP_FLOAT_CLASS
    if _KEEP_FLOAT_CLASS is not None:
        return _KEEP_FLOAT_CLASS

    from torchao.quantization.pt2e.quantizer import Quantizer

    class KeepFloatQuantizer(Quantizer):
        """Delegates to ``base``, then removes the annotations of the nodes ``mixed`` keeps in
        float. After ``prepare_pt2e`` the resolved names are in :attr:`selection`."""

        def __init__(self, base, mixed: MixedPrecision):
            super().__init__()
            self.base = base
            self.mixed = mixed
            self.selection: FloatSelection | None = None

        def transform_for_annotation(self, model):
            return self.base.transform_for_annotation(model)

        def annotate(self, model):
            model = self.base.annotate(model)
            self.selection = resolve_float_nodes(model.graph, self.mixed)
            strip_annotations(model.graph, self.selection.nodes)
            return model

        def validate(self, model) -> None:
            self.base.validate(model)

        def prepare_obs_or_fq_callback(self, model, edge_or_node_to_obs_or_fq) -> None:
            self.base.prepare_obs_or_fq_callback(model, edge_or_node_to_obs_or_fq)

        def __getattr__(self, name):
            # Converters read settings of the backend quantizer (e.g. LiteRT's global_config).
            if name in ("base", "mixed", "selection"):
                raise AttributeError(name)
            return getattr(self.base, name)

    _KEEP_FLOAT_CLASS = KeepFloatQuantizer
    return _KEEP_FLOAT_CLASS

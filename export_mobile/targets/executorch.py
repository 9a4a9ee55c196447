"""ExecuTorch targets: one ``.pte`` program per artifact, lowered to a delegate.

=====================  ==============  ==========================================================
target                 precisions      delegate, and where the ``.pte`` runs
=====================  ==============  ==========================================================
executorch-xnnpack     fp32, int8      ``XnnpackBackend`` (CPU, Android and iOS); runs on desktop
                                       in ExecuTorch's Python runtime
executorch-coreml      fp16, int8      ``CoreMLBackend`` (ANE/GPU/CPU, iOS 17+ / macOS 14+);
                                       lowers on Linux, runs only on Apple OS
executorch-vulkan      fp32, fp16      ``VulkanBackend`` (Android GPU); runs only where the
                                       ExecuTorch runtime was built with Vulkan
executorch-qnn         fp16            ``QnnBackend`` (Qualcomm HTP); needs Qualcomm's QNN SDK
                                       (``QNN_SDK_ROOT``) to lower
=====================  ==============  ==========================================================

int8 programs are lowered from the PT2E-converted model of ``quantize/`` (``xnnpack`` recipe for
XNNPACK, ``coreml`` for Core ML): the delegate runs the int8 operators the quantizer annotated,
so the ``.pte`` computes what the quantized model computes in PyTorch. Inputs and outputs stay
float32 NCHW in [0, 1]; the quantize/dequantize at the edges is inside the program.

After lowering, the graph left outside the delegates is inspected: the number of delegate
partitions and every operator that stayed outside (with the module it came from and, where the
partitioner said so, why) go into the :class:`ExportResult` and the manifest.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from export_mobile.targets.base import (ExportRequest, ExportResult, TargetOption, check_request, fixed_shape_batch,
                                        missing_packages_reason, require_runnable)
from zoo.errors import ZooError

#: Operators of a lowered graph that are bookkeeping, not computation.
_BOOKKEEPING = {"getitem", "executorch_call_delegate"}

#: Loggers that explain why a node was not partitioned (ExecuTorch's WhyNoPartition helper).
_WHY_LOGGERS = ("executorch.backends.xnnpack", "executorch.backends.vulkan", "executorch.backends.apple.coreml",
                "executorch.exir.backend")


# --------------------------------------------------------------------------------------------
# Preparing a program
# --------------------------------------------------------------------------------------------


def fold_parameter_only_ops(exported: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Replace every operator whose inputs are all weights or constants by its result (in place).

    A model may compute tensors from its parameters alone in ``forward`` (IDSA-Net gathers its
    relative position bias from a table and exponentiates a temperature): after export these run
    on every call, and the ones a delegate lacks (a gather, integer casts) stay outside it and
    split the program. Folding them leaves only input-dependent work. Quantize / dequantize
    operators are never folded: an int8 weight must reach the delegate as int8 + dequantize, which
    is the pattern it lowers to an int8 kernel.
    """
    from executorch.exir.operator.util import _QUANT_PRIMITIVES
    from executorch.exir.passes.constant_prop_pass import _DEFAULT_SKIP_TARGETS, constant_prop_pass

    return constant_prop_pass(exported, custom_skip_targets=set(_DEFAULT_SKIP_TARGETS) | set(_QUANT_PRIMITIVES))


# --------------------------------------------------------------------------------------------
# Inspecting a lowered program
# --------------------------------------------------------------------------------------------


def _operator_name(target) -> str:
    """``aten.add.Tensor``, ``getitem``, ``executorch_call_delegate``, ... for a node target."""
    op = getattr(target, "_op", None)  # edge-dialect operators wrap an aten OpOverload
    text = str(op if op is not None else target)
    if text.startswith("<built-in function "):
        return text[len("<built-in function "):-1]
    return text


def _module_path(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path, _type = list(stack.values())[-1]
    # torch.export prefixes paths with "L['self']." in some versions.
    return str(path).replace("L['self'].", "").replace("L__self___", "") or None


def delegation_summary(graph_module: torch.fx.GraphModule, reasons: dict[str, str] | None = None,
                       delegate: str | None = None) -> dict:
    """Delegate partitions and operators left outside them in a lowered (edge) graph.

    Returns ``{"partitions": {backend id: count}, "outside": ["op at module.path (reason)", ...]}``;
    ``outside`` lists every computing operator not inside a delegate, in graph order.
    ``reasons`` maps node names to the partitioner's explanation (see :func:`_collect_reasons`);
    nodes without one are operators ``delegate`` has no support for at all.
    """
    reasons = reasons or {}
    partitions: Counter = Counter()
    outside: list[str] = []
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = _operator_name(node.target)
        if name == "executorch_call_delegate":
            lowered = getattr(graph_module, node.args[0].target)
            partitions[lowered.backend_id] += 1
            continue
        if name in _BOOKKEEPING:
            continue
        where = _module_path(node)
        entry = name + (f" at {where}" if where else "")
        if node.name in reasons:
            entry += f" ({reasons[node.name]})"
        elif delegate:
            entry += f" (not supported by {delegate})"
        outside.append(entry)
    return {"partitions": dict(partitions), "outside": outside}


class _WhyHandler(logging.Handler):
    """Collects ``WhyNoPartition`` messages: node name -> reason."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.reasons: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.msg
        node = getattr(message, "node", None)
        reason = getattr(message, "reason", None)
        if node is not None and reason and getattr(node, "name", None) not in self.reasons:
            self.reasons[node.name] = str(reason).rstrip(".")


@contextlib.contextmanager
def _collect_reasons():
    """Capture partitioners' reasons for rejected nodes and keep their INFO chatter off the console."""
    handler = _WhyHandler()
    saved = []
    for name in _WHY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    root = logging.getLogger()
    root_level = root.level
    # The Vulkan partitioner logs every partition at INFO on the root logger.
    root.setLevel(max(root_level, logging.WARNING))
    try:
        yield handler.reasons
    finally:
        root.setLevel(root_level)
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def registered_backends() -> list[str]:
    """Delegates the installed ExecuTorch Python runtime can execute (e.g. ``XnnpackBackend``)."""
    from executorch.runtime import Runtime

    registry = Runtime.get().backend_registry
    return list(registry.registered_backend_names)


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


class PteRunner:
    """Runs a ``.pte`` program's ``forward`` on float32 NCHW batches (one image per call inside).

    ``native_shapes``: the (input, output) tensor shapes the program declares.
    """

    def __init__(self, path: Path):
        from executorch.runtime import Runtime

        self.path = Path(path)
        try:
            program = Runtime.get().load_program(str(self.path))
            self.method = program.load_method("forward")
            meta = self.method.metadata
            self.native_shapes = (tuple(int(v) for v in meta.input_tensor_meta(0).sizes()),
                                  tuple(int(v) for v in meta.output_tensor_meta(0).sizes()))
        except Exception as err:  # the runtime reports a corrupt file as a generic RuntimeError
            raise ZooError(f"ExecuTorch cannot load {self.path.name}: {err}",
                           "re-export the artifact; check it was copied completely") from None
        # The program's own shape, not the manifest's: the runtime cannot resize a fixed input.
        self.input_shape = self.native_shapes[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """``batch``: (N, C, H, W) float32 with (C, H, W) as exported; returns (N, C', H', W') float32."""
        batch = fixed_shape_batch(batch, self.input_shape[1:], self.path.name)
        outputs = []
        for image in batch:
            result = self.method.execute([torch.from_numpy(np.ascontiguousarray(image[None]))])
            # Copy: the output may live in the program's planned memory, reused by the next call.
            outputs.append(np.array(result[0].detach().to(torch.float32).numpy(), copy=True))
        return np.concatenate(outputs, axis=0)


class ExecuTorchTarget:
    """One ExecuTorch delegate as an export target (see the module docstring for the table)."""

    suffix = ".pte"
    supports_dynamic = False
    #: The ``--option``s the delegate reads (none for XNNPACK and Vulkan); others are refused.
    accepted_options: dict[str, TargetOption] = {}

    def __init__(self, name: str, delegate: str, precisions: tuple[str, ...], int8_recipe: str | None,
                 backend_module: str, description: str):
        self.name = name
        self.delegate = delegate
        self.precisions = precisions
        self.int8_recipe = int8_recipe
        self.backend_module = backend_module
        self.description = description

    def __repr__(self) -> str:
        return f"ExecuTorchTarget({self.name!r})"

    # ---- availability

    def available(self) -> str | None:
        """None when this delegate can be lowered to here, else the reason and the fix."""
        reason = missing_packages_reason(("executorch",))
        if reason:
            return reason
        try:
            if importlib.util.find_spec(self.backend_module) is None:
                return f"{self.backend_module} is missing from the installed executorch"
        except ModuleNotFoundError as err:
            return f"{self.backend_module} cannot be imported: {err}"
        if self.delegate == "CoreMLBackend":
            return missing_packages_reason(("coremltools",))
        return None

    def runtime_reason(self) -> str | None:
        """None when the desktop runtime here can execute this delegate, else why not."""
        if self.available():
            return self.available()
        if self.delegate in registered_backends():
            return None
        return f"the installed ExecuTorch runtime has no {self.delegate} (it has {', '.join(registered_backends())})"

    # ---- export

    def _partitioners(self, precision: str, options: dict) -> list:
        raise NotImplementedError

    def _program_model(self, request: ExportRequest) -> torch.nn.Module:
        """The module to lower: the PT2E-quantized one for int8, else the float model."""
        if request.precision == "int8":
            if request.quantized is None:
                raise ZooError(f"int8 {self.name} export needs a quantized model",
                               "pass calibration data (--calibration) or a quantized model (--quantized PATH.pt2)")
            return request.quantized
        return request.model

    def export(self, request: ExportRequest) -> ExportResult:
        """Lower the model to this delegate and write the ``.pte`` to ``request.out_path``."""
        from executorch.exir import to_edge_transform_and_lower

        check_request(self, request, "install the missing toolchain or pick another target")
        model = self._program_model(request)
        example = request.example.contiguous()
        with torch.no_grad():
            exported = fold_parameter_only_ops(torch.export.export(model, (example,)))
        out_path = Path(request.out_path)
        summary = self._lower_and_write(
            lambda: to_edge_transform_and_lower(exported, partitioner=self._partitioners(request.precision,
                                                                                          request.options)),
            out_path)
        partitions = sum(summary["partitions"].values())
        notes = []
        if partitions == 0:
            notes.append(f"nothing was delegated to {self.delegate}: the program runs on portable kernels only")
        other = {k: v for k, v in summary["partitions"].items() if k != self.delegate}
        if other:
            notes.append(f"other delegates in the program: {other}")
        return ExportResult(path=out_path, delegate=self.delegate, partitions=partitions,
                            ops_outside_delegate=summary["outside"], notes=notes)

    def _lower_and_write(self, lower, out_path: Path) -> dict:
        """Run ``lower()`` (returns an EdgeProgramManager), write its ``.pte`` to ``out_path``; returns
        :func:`delegation_summary` of the lowered graph, with the partitioners' reasons."""
        with _collect_reasons() as reasons:
            edge = lower()
            summary = delegation_summary(edge.exported_program().graph_module, reasons, self.delegate)
            program = edge.to_executorch()
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(out_path, "wb") as handle:
            program.write_to_file(handle)
        return summary

    # ---- running

    def load_runner(self, path: Path, manifest: dict):
        """A :class:`PteRunner` for the ``.pte``, or :class:`ZooError` when this runtime lacks the delegate."""
        require_runnable(path, self.runtime_reason(), self._where_it_runs())
        return PteRunner(Path(path))

    def _where_it_runs(self) -> str:
        return "run it on a device whose ExecuTorch runtime includes this delegate"


class XnnpackTarget(ExecuTorchTarget):
    def __init__(self):
        super().__init__("executorch-xnnpack", "XnnpackBackend", ("fp32", "int8"), "xnnpack",
                         "executorch.backends.xnnpack.partition.xnnpack_partitioner",
                         "ExecuTorch with the XNNPACK delegate (CPU, Android and iOS)")

    def _partitioners(self, precision: str, options: dict) -> list:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return [XnnpackPartitioner()]


class CoreMLDelegateTarget(ExecuTorchTarget):
    """Core ML delegate: fp16 compute (``ct.precision.FLOAT16``) or the PT2E int8 model (W8A8),
    iOS 17 deployment target, compute units from ``options["compute_units"]`` (default ALL)."""

    COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")
    accepted_options = {"compute_units": TargetOption("the devices Core ML may use", COMPUTE_UNITS)}

    def __init__(self):
        super().__init__("executorch-coreml", "CoreMLBackend", ("fp16", "int8"), "coreml",
                         "executorch.backends.apple.coreml.partition",
                         "ExecuTorch with the Core ML delegate (ANE/GPU/CPU, iOS 17+, macOS 14+)")

    def _partitioners(self, precision: str, options: dict) -> list:
        import coremltools as ct
        from executorch.backends.apple.coreml.compiler import CoreMLBackend
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        units = str(options.get("compute_units", "all")).lower()
        if units not in self.COMPUTE_UNITS:
            raise ZooError(f"unknown Core ML compute units {units!r}", f"use one of {', '.join(self.COMPUTE_UNITS)}")
        specs = CoreMLBackend.generate_compile_specs(
            compute_unit=getattr(ct.ComputeUnit, units.upper()),
            minimum_deployment_target=ct.target.iOS17,
            # int8 weights/activations come from the PT2E graph; the float parts compute in fp16.
            compute_precision=ct.precision.FLOAT16,
        )
        return [CoreMLPartitioner(compile_specs=specs)]

    def runtime_reason(self) -> str | None:
        import platform

        if platform.system() != "Darwin":
            return "Core ML programs run only on Apple OS (macOS 14+/iOS 17+), this is " + platform.system()
        return super().runtime_reason()

    def _where_it_runs(self) -> str:
        return ("run it on macOS with an ExecuTorch build that has the Core ML backend, or in the iOS demo app; "
                "the XNNPACK/TFLite/ONNX artifacts of the same model are the numeric proxy on Linux")


class VulkanTarget(ExecuTorchTarget):
    """Vulkan GPU delegate; fp16 sets the partitioner's ``force_fp16`` (fp16 textures and math)."""

    def __init__(self):
        super().__init__("executorch-vulkan", "VulkanBackend", ("fp32", "fp16"), None,
                         "executorch.backends.vulkan.partitioner.vulkan_partitioner",
                         "ExecuTorch with the Vulkan delegate (Android GPU)")

    def _partitioners(self, precision: str, options: dict) -> list:
        from executorch.backends.vulkan.partitioner.vulkan_partitioner import VulkanPartitioner

        return [VulkanPartitioner({"force_fp16": precision == "fp16"})]

    def _where_it_runs(self) -> str:
        return ("the pip wheel of ExecuTorch is built without Vulkan: run the .pte on an Android GPU, or build "
                "executorch with -DEXECUTORCH_BUILD_VULKAN=ON")


def _chipset_name(value) -> str:
    """A Qualcomm chipset name as QcomChipset spells it (upper case): 2-4 letters, 4 digits, an
    optional letter. ``ValueError`` for anything else (a typo is refused before the SDK loads)."""
    name = str(value).strip().upper()
    if not re.fullmatch(r"[A-Z]{2,4}\d{4}[A-Z]?", name):
        raise ValueError("takes a Qualcomm chipset name such as SM8650, SM8550, SA8295 or QCS6490")
    return name


class QnnTarget(ExecuTorchTarget):
    """Qualcomm QNN (HTP) delegate; lowering needs the QNN SDK named by ``QNN_SDK_ROOT``."""

    # The chipset names live in the SDK's QcomChipset, checked when the SDK is imported; their
    # form (SM8650, SA8295, QCS6490, SSG2115P, SXR2230P) is checked before, without the SDK.
    accepted_options = {"soc": TargetOption("the Snapdragon chipset, a QcomChipset name such as SM8650",
                                            parse=_chipset_name)}

    def __init__(self):
        super().__init__("executorch-qnn", "QnnBackend", ("fp16",), None,
                         "executorch.backends.qualcomm.partition.qnn_partitioner",
                         "ExecuTorch with the Qualcomm QNN delegate (Snapdragon HTP)")

    def available(self) -> str | None:
        reason = super().available()
        if reason:
            return reason
        root = os.environ.get("QNN_SDK_ROOT")
        if not root:
            return ("the Qualcomm QNN SDK is missing: set QNN_SDK_ROOT to an installed QNN/QAIRT SDK "
                    "(download from Qualcomm; it is not on PyPI) and add $QNN_SDK_ROOT/lib/x86_64-linux-clang to "
                    "LD_LIBRARY_PATH")
        if not Path(root, "lib").is_dir():
            return f"QNN_SDK_ROOT={root} does not hold a QNN SDK (no lib/ folder): point it at the SDK's root"
        return None

    def export(self, request: ExportRequest) -> ExportResult:
        check_request(self, request, "set QNN_SDK_ROOT, or export executorch-xnnpack for Android CPU")
        from executorch.backends.qualcomm.serialization.qc_schema import QcomChipset
        from executorch.backends.qualcomm.utils.utils import (
            generate_htp_compiler_spec,
            generate_qnn_executorch_compiler_spec,
            to_edge_transform_and_lower_to_qnn,
        )

        model = self._program_model(request)
        soc = str(request.options.get("soc", "SM8650"))
        if not hasattr(QcomChipset, soc):
            raise ZooError(f"unknown Qualcomm chipset {soc!r}", "pass --option soc=SM8650 (or another QcomChipset name)")
        specs = generate_qnn_executorch_compiler_spec(
            soc_model=getattr(QcomChipset, soc), backend_options=generate_htp_compiler_spec(use_fp16=True))
        out_path = Path(request.out_path)
        summary = self._lower_and_write(lambda: to_edge_transform_and_lower_to_qnn(model, (request.example,), specs),
                                        out_path)
        return ExportResult(path=out_path, delegate=self.delegate, partitions=sum(summary["partitions"].values()),
                            ops_outside_delegate=summary["outside"], notes=[f"HTP fp16, chipset {soc}"])

    def _where_it_runs(self) -> str:
        return "run it on a Snapdragon device (QNN HTP), or on x86 with the QNN SDK's HTP simulator libraries"


#: The ExecuTorch targets of this module, by name (read by :mod:`export_mobile.targets`).
TARGETS = {target.name: target for target in (XnnpackTarget(), CoreMLDelegateTarget(), VulkanTarget(), QnnTarget())}

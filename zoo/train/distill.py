"""Knowledge distillation: train a small student with a frozen teacher (``zoo distill CONFIG``).

The loss of a batch is::

    task(student stages, ground truth)                      as in ``zoo train`` (section loss)
    + alpha * output_loss(student output, teacher output)   output distillation
    + beta * sum_j w_j * feature_loss(A_j(s_j), t_j)         intermediate features

where ``s_j`` / ``t_j`` are the outputs of the student / teacher modules named in
``distill.features`` (captured with forward hooks, so no model has to know about distillation)
and ``A_j`` is a 1x1 convolution mapping the student's channels to the teacher's (identity when
they match). The adapters are trained with the student and saved in checkpoints, but not in
the final weights. The teacher runs in eval mode under ``no_grad`` on the same degraded batch.

With ``distill.init: teacher`` the student starts as a channel-pruned copy of the teacher
(``student.inherit_from(teacher)``) instead of its random initialisation: prune, then distil.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.train.config import ExperimentConfig, FeatureTap
from zoo.train.engine import TaskObjective, TrainResult, train
from zoo.train.losses import pixel_loss
from zoo.train.models import build_model


class _FeatureRecorder:
    """Forward hooks that keep the latest output of named modules."""

    def __init__(self, model: nn.Module, taps: list[tuple[str, int | None]], role: str):
        self.features: dict[int, torch.Tensor] = {}
        self.handles = []
        names = dict(model.named_modules())
        for slot, (name, index) in enumerate(taps):
            if name not in names or not name:
                last = name.split(".")[-1]
                close = [candidate for candidate in names if candidate and candidate.split(".")[-1] == last]
                hint = f"e.g. {', '.join(close[:3])}" if close else "see [n for n, _ in model.named_modules()]"
                raise ZooError(f"distill.features: the {role} has no module named {name!r}",
                               f"use a dotted module name, {hint}")
            self.handles.append(names[name].register_forward_hook(self._hook(slot, name, index, role)))

    def _hook(self, slot: int, name: str, index: int | None, role: str):
        def keep(module, inputs, output):
            if isinstance(output, (tuple, list)):
                if index is None:
                    raise ZooError(f"distill.features: {role} module {name} returns {len(output)} tensors",
                                   f"set {role}_index to the one to match (0..{len(output) - 1})")
                output = output[index]
            elif index is not None:
                raise ZooError(f"distill.features: {role} module {name} returns one tensor but {role}_index is {index}",
                               f"set {role}_index: null")
            self.features[slot] = output

        return keep

    def take(self) -> dict[int, torch.Tensor]:
        features, self.features = self.features, {}
        return features

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class DistillationObjective(TaskObjective):
    """Task loss + output distillation + feature distillation (see the module docstring)."""

    def __init__(self, config: ExperimentConfig):
        super().__init__(config)
        if config.distill is None:
            raise ZooError("the config has no distill section",
                           "add distill: {teacher: ..., alpha: ...} (docs/training.md)")
        self.settings = config.distill
        self.output_loss = pixel_loss(self.settings.output_loss, config.loss.charbonnier_eps)
        self.feature_loss = pixel_loss(self.settings.feature_loss)
        self.taps: list[FeatureTap] = list(self.settings.features)
        self.teacher: nn.Module | None = None
        self.adapters = nn.ModuleList()
        self.student_recorder: _FeatureRecorder | None = None
        self.teacher_recorder: _FeatureRecorder | None = None
        self.teacher_multiple = 1

    def prepare(self, model: nn.Module, device: torch.device, sample: torch.Tensor) -> None:
        super().prepare(model, device, sample)
        teacher, self.teacher_multiple = build_model(self.settings.teacher, "distill.teacher")
        if sample.shape[-1] % self.teacher_multiple or sample.shape[-2] % self.teacher_multiple:
            raise ZooError(f"training inputs of {sample.shape[-1]} pixels are not a multiple of "
                           f"{self.teacher_multiple} as the teacher {self.settings.teacher.describe()} needs",
                           f"use a data.patch_size that is a multiple of {self.teacher_multiple}")
        teacher.to(device).eval()
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        self.teacher = teacher
        inherited = self._inherit(model, teacher) if self.settings.init == "teacher" else {}
        self.student_recorder = _FeatureRecorder(model, [(t.student, t.student_index) for t in self.taps], "student")
        self.teacher_recorder = _FeatureRecorder(teacher, [(t.teacher, t.teacher_index) for t in self.taps], "teacher")

        # One dry run at the training size tells the feature shapes, hence the adapter widths.
        with torch.no_grad():
            student_output = model(sample)
            teacher_output = teacher(sample)
        if isinstance(student_output, (list, tuple)) or student_output.shape != teacher_output.shape:
            raise ZooError(f"student output {tuple(student_output.shape)} and teacher output "
                           f"{tuple(teacher_output.shape)} differ", "distill between models of the same task and scale")
        student_features = self.student_recorder.take()
        teacher_features = self.teacher_recorder.take()
        for slot, tap in enumerate(self.taps):
            s, t = student_features[slot], teacher_features[slot]
            if s.dim() != 4 or t.dim() != 4 or s.shape[-2:] != t.shape[-2:]:
                raise ZooError(f"distill.features[{slot}]: student {tap.student} gives {tuple(s.shape)} but "
                               f"teacher {tap.teacher} gives {tuple(t.shape)}; feature maps must have the same "
                               f"height and width",
                               "pair modules at the same resolution level")
            if s.shape[1] == t.shape[1]:
                self.adapters.append(nn.Identity())
            else:
                adapter = nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1).to(device)
                kept = inherited.get(tap.student) if tap.student == tap.teacher else None
                if kept is not None and len(kept) == s.shape[1] and tap.student_index is tap.teacher_index is None:
                    with torch.no_grad():  # student channel i is teacher channel kept[i]: start there
                        adapter.weight.zero_()
                        adapter.bias.zero_()
                        adapter.weight[kept.to(device), torch.arange(len(kept), device=device)] = 1.0
                self.adapters.append(adapter)

    def _inherit(self, model: nn.Module, teacher: nn.Module) -> dict[str, torch.Tensor]:
        """distill.init: teacher: the student starts as a pruned teacher; returns the kept channels."""
        if not hasattr(model, "inherit_from"):
            raise ZooError(f"distill.init is 'teacher' but the student {type(model).__name__} cannot inherit weights",
                           "set distill.init: random (weight inheritance exists for HINetLite students)")
        try:
            return model.inherit_from(teacher)
        except ValueError as err:
            raise ZooError(f"distill.init: teacher: {err}",
                           "use a teacher of the student's family that is at least as wide and deep, "
                           "or distill.init: random") from err

    def modules(self) -> dict[str, nn.Module]:
        return {"distill_adapters": self.adapters}

    def __call__(self, model: nn.Module, degraded: torch.Tensor, target: torch.Tensor):
        outputs = self.forward_model(model, degraded)
        total, terms = self.loss(outputs, target)
        student_features = self.student_recorder.take()
        with torch.no_grad():
            teacher_output = self.teacher(degraded)
        teacher_features = self.teacher_recorder.take()
        final = outputs[-1] if isinstance(outputs, (list, tuple)) else outputs
        if self.settings.alpha:
            output_term = self.output_loss(final.float(), teacher_output.float())
            terms["distill_output"] = output_term.detach()
            total = total + self.settings.alpha * output_term
        if self.taps and self.settings.beta:
            feature_total = None
            for slot, tap in enumerate(self.taps):
                adapted = self.adapters[slot](student_features[slot])
                value = tap.weight * self.feature_loss(adapted.float(), teacher_features[slot].float())
                feature_total = value if feature_total is None else feature_total + value
            terms["distill_features"] = feature_total.detach()
            total = total + self.settings.beta * feature_total
        return self.add_output_terms(outputs, degraded, total, terms), terms


def distill(config: ExperimentConfig, out_dir: str | Path | None = None, **kwargs) -> TrainResult:
    """Run :func:`zoo.train.engine.train` with a :class:`DistillationObjective` (same arguments,
    ``phases`` included: a distilled student can be trained quantization-aware).

    The final weights hold the student only; the adapters live in the checkpoints.
    """
    return train(config, out_dir, objective=DistillationObjective(config), **kwargs)

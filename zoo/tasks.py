"""The restoration tasks: one table that every spelling of a task comes from.

Model cards name their task; evaluation takes its default degradation and metric settings from
here; the manifest and results schemas (``export_mobile/schemas``) and the task enums of the
Android and iOS demo apps list exactly :func:`task_names` (``tests/test_tasks.py`` checks all
four against this table). Older spellings stay readable as aliases: manifests written before
the table said ``"sr"`` for super-resolution, and model cards may still say it.
"""

from __future__ import annotations

from dataclasses import dataclass

from zoo.errors import ZooError

__all__ = ["Task", "TASKS", "TASK_ALIASES", "task_names", "get_task", "canonical_task"]


@dataclass(frozen=True)
class Task:
    """One task: its name as the schemas and apps spell it, and how it is evaluated by default."""

    #: The one spelling written to manifests, results files, the apps and ``zoo list``.
    name: str
    summary: str
    #: Degradation spec of the default evaluation (``zoo.data.degradations``); ``{scale}`` is
    #: replaced by the model's scale (super-resolution).
    default_degradation: str
    #: PSNR/SSIM on the BT.601 Y channel (True) or on RGB (False).
    y_channel: bool = False
    #: Whether ``scale`` pixels are cropped at each border before PSNR/SSIM (the SR convention).
    crop_border_is_scale: bool = False
    #: Older spellings still accepted when reading files and cards (never written).
    aliases: tuple[str, ...] = ()

    def degradation(self, scale: int = 1) -> str:
        """The default evaluation degradation for a model of upscaling factor ``scale`` (>= 1)."""
        return self.default_degradation.format(scale=scale)

    def crop_border(self, scale: int = 1) -> int:
        """Pixels cropped at each border of the target before PSNR/SSIM (0, or ``scale`` for SR)."""
        return scale if self.crop_border_is_scale else 0


#: Training and card degradation of the lite deblurring models: DeblurGAN random trajectories of
#: 10-30 px (the deblur task's default benchmark uses 60 px, which a CPU budget does not learn;
#: docs/training.md, "Motion deblurring"), plus Gaussian noise of sigma 0-3 (0-255 scale).
MILD_CAMERA_SHAKE = "motion-blur:length=10-30,noise=0-3"
#: The same shake as scored by `zoo benchmark deblur` and the cards: 1 % noise (sigma 2.55, inside
#: the training range), the non-blind deconvolution literature's setting (docs/benchmark.md).
MILD_CAMERA_SHAKE_SCORED = "motion-blur:length=10-30,noise=2.55"
#: Mild shake, then saved as a JPEG of quality 60-90 (NTIRE 2021 deblurring's JPEG track, the one
#: HINet won, on mild trajectories; no added noise, as there): the second row hinet-lite-deblur is
#: scored on.
MILD_CAMERA_SHAKE_JPEG_SCORED = "motion-blur:length=10-30,jpeg=60-90"
#: Training degradation of hinet-lite-deblur from its second stage on: each patch is mild shake as
#: above, or the same saved as a JPEG of quality 60-90, equally likely (phone photos are JPEGs).
MILD_CAMERA_SHAKE_OR_JPEG = f"{MILD_CAMERA_SHAKE} || {MILD_CAMERA_SHAKE},jpeg=60-90"

#: Every task, in the order schemas and apps list them.
TASKS: tuple[Task, ...] = (
    Task("denoise", "noise removal (Gaussian or real camera noise)", "gaussian:25"),
    Task("blind-denoise", "noise removal without knowing the noise level", "gaussian:25"),
    Task("deblur", "motion deblurring", "motion-blur"),
    Task("derain", "rain-streak removal", "rain"),
    Task("super-resolution", "upscaling by the model's scale", "bicubic:x{scale}", y_channel=True,
         crop_border_is_scale=True, aliases=("sr",)),
)

_BY_NAME = {task.name: task for task in TASKS}
#: Older spelling -> task name.
TASK_ALIASES: dict[str, str] = {alias: task.name for task in TASKS for alias in task.aliases}


def task_names() -> tuple[str, ...]:
    """The task names as the schemas and the apps spell them, in table order."""
    return tuple(_BY_NAME)


def get_task(name: str) -> Task:
    """The task called ``name`` or one of its aliases; :class:`ZooError` listing the names otherwise."""
    task = _BY_NAME.get(TASK_ALIASES.get(name, name))
    if task is None:
        raise ZooError(f"unknown task {name!r}", f"use one of {', '.join(task_names())}")
    return task


def canonical_task(name: str | None) -> str | None:
    """``name`` as the table spells it (``"sr"`` -> ``"super-resolution"``); None stays None."""
    return None if name is None else get_task(name).name

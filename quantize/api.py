"""The quantization API: :func:`run_quantize` quantizes a zoo model for one mobile backend and writes
the model, its sidecar and the reports; ``zoo quantize`` (:mod:`quantize.commands`, parsing and
printing only) and the tests call it. The export quantizes through the pieces it is made of
(:mod:`quantize.calibration`, :mod:`quantize.ptq`, :mod:`quantize.recipes`).

Writes ``DIR/<model>_<backend>_<method>.pt2`` (the converted graph, ``torch.export.save``) with
its ``.json`` sidecar, ``report.json`` (accuracy drop on the evaluation set) unless the evaluation
set is ``none``, and ``sensitivity.json`` with ``sensitivity=True``. torch and the backends are
imported inside the functions, so importing this module (its constants) is light.
"""

from __future__ import annotations

from pathlib import Path

from zoo.errors import ZooError

#: The recipe names (quantize.recipes.RECIPES), repeated here so argument parsing imports no torch
#: (tests/test_quantize.py checks that the two agree).
BACKENDS = ("xnnpack", "coreml", "tflite")
DEFAULT_CALIB_IMAGES = 32
DEFAULT_QAT_STEPS = 200
DEFAULT_QAT_LR = 1e-5
#: QAT loss targets: the clean crops, or the float model's own outputs.
QAT_TARGETS = ("clean", "float")
#: QAT activation ranges: PTQ's histogram ranges (frozen), or moving-average min/max.
QAT_RANGES = ("ptq", "minmax")


def _float_model_targets(sampler, model):
    """Wrap a ``step -> (inputs, targets)`` sampler so the targets are ``model``'s outputs (eval, no grad)."""
    import torch

    model.eval()

    def sample(step: int):
        inputs, _ = sampler(step)
        with torch.no_grad():
            return inputs, model(inputs).clamp(0.0, 1.0)

    return sample


def qat_config(model_name: str, *, backend: str, weights: str | Path | None, tile: int, scale: int,
               source: str, images: int, degradation: str, steps: int, lr: float, batch: int, target: str,
               ranges: str, mixed: str | None, data_root: str | Path | None, seed: int) -> dict:
    """The experiment config (YAML data) ``zoo quantize --method qat`` runs through the training engine:
    ``steps`` iterations of QAT from the given weights (``quantization.start: 0``) on ``batch``
    patches of ``tile`` input pixels from the first ``images`` images of ``source``, constant
    learning rate ``lr``, L1 loss, gradient clip 0.01; ``target: float`` adds an L1 term (weight 1)
    towards the float model's outputs."""
    return {
        "name": f"qat_{model_name}_{backend}",
        "description": "zoo quantize --method qat",
        "model": {"name": model_name, "weights": str(weights) if weights else None},
        "data": {"sources": [source], "degradation": degradation, "data_root": str(data_root) if data_root else None,
                 "val_images": 0, "limit": images, "patch_size": tile * scale, "batch_size": batch},
        "loss": {"type": "l1"},
        "optimizer": {"type": "adam", "lr": lr},
        "schedule": {"type": "constant", "eta_min": 0.0},
        "train": {"iterations": steps, "grad_clip": 0.01, "checkpoint_interval": 0, "seed": seed},
        "quantization": {"backend": backend, "start": 0, "ranges": ranges, "lr": lr, "mixed": mixed or "none",
                         "tile": tile, "calibration_batches": max(1, -(-images // batch)),
                         "distill_from_float": 1.0 if target == "float" else 0.0},
    }


def _run_qat(model_name: str, card, weights, untrained: bool, calibration, *, backend: str, tile: int, spec: str,
             calib_images: int, qat_steps: int, qat_lr: float, qat_batch: int, qat_target: str, qat_ranges: str,
             mixed: str | None, data_root, seed: int, run_dir: Path, progress: bool) -> Path:
    """Run the QAT config of :func:`qat_config` in ``run_dir``; returns the int8 ``.pt2`` it wrote."""
    from quantize.qat_phase import train_with_qat
    from zoo.train.config import config_from_dict

    if weights is None and not untrained:
        weights = "shipped"
    raw = qat_config(model_name, backend=backend, weights=weights, tile=tile, scale=card.scale,
                     source=calibration.source, images=calib_images, degradation=spec, steps=qat_steps, lr=qat_lr,
                     batch=qat_batch, target=qat_target, ranges=qat_ranges, mixed=mixed, data_root=data_root,
                     seed=seed)
    result = train_with_qat(config_from_dict(raw), run_dir, progress=progress)
    return result.phase_outputs["quantized_model"]


def run_quantize(model_name: str, *, backend: str, method: str = "ptq", output_dir: str | Path,
                 weights: str | Path | None = None, untrained: bool = False, tile: int | None = None,
                 calib_images: int = DEFAULT_CALIB_IMAGES, calib_source: str = "auto",
                 degradation: str | None = None, qat_steps: int = DEFAULT_QAT_STEPS,
                 qat_lr: float = DEFAULT_QAT_LR, qat_batch: int = 4, qat_target: str = "clean",
                 qat_ranges: str = "ptq", mixed: str | None = "first-last",
                 eval_dataset: str | None = "bsd68", eval_limit: int | None = None,
                 eval_degradation: str | None = None, sensitivity: bool = False, sensitivity_images: int = 4,
                 data_root: str | Path | None = None, seed: int = 0, overwrite: bool = False,
                 progress: bool = True, log=print) -> dict:
    """Quantize ``model_name`` for ``backend`` and write the model, sidecar and reports.

    ``method``: ``ptq`` (calibrate on ``calib_images`` degraded training-pool crops) or ``qat``:
    the training engine's QAT phase (:mod:`quantize.qat_phase`) runs the config
    :func:`qat_config` builds (``qat_steps`` Adam steps on batches of ``qat_batch`` fresh patches
    of the first ``calib_images`` images of the calibration source, lr ``qat_lr``, ``qat_target``
    ``float`` adding a term towards the float model's outputs) in ``DIR/<model>_<backend>_qat_run``
    (log, checkpoints, float weights); its int8 model is copied to the usual ``.pt2``.
    ``qat_ranges``: ``ptq`` starts the activation quantizers at PTQ's histogram ranges on training
    batches and freezes them; ``minmax`` lets them track moving-average min/max.
    ``tile``: export size in input pixels (default: the card's tile). ``mixed``: ``first-last``
    (default), ``none`` or comma-separated module names (see :class:`MixedPrecision`).
    ``degradation``: the crops' degradation (default: the model's training degradation).
    Returns a summary dict with the paths written, the provenance record (:mod:`quantize.provenance`)
    and the mean accuracy drop.
    """
    import torch

    from quantize.calibration import build_calibration_set
    from quantize.provenance import provenance_label
    from quantize.ptq import layer_precision, load_quantized, quantization_info, quantize_ptq, save_quantized, sidecar_path
    from quantize.recipes import MixedPrecision, require_recipe
    from zoo.atomic import ensure_writable
    from zoo.registry import create_model, weights_record

    if method not in ("ptq", "qat"):
        raise ZooError(f"unknown quantization method {method!r}", "use --method ptq or --method qat")
    recipe = require_recipe(backend)
    if tile is not None and tile < 1:  # 0 is not "the default": it was silently replaced by the card's tile
        raise ZooError(f"--tile {tile} is not a tile size", "pass a positive multiple of the model's size multiple, "
                       "or leave --tile out for the model's tile")
    # Before the model is built and calibrated (a file at -o failed only when the .pt2 was saved).
    ensure_writable(output_dir, "quantize output folder", kind="folder", fix="choose another -o folder")
    evaluate = bool(eval_dataset) and eval_dataset.lower() != "none"
    if evaluate:
        from zoo.data.datasets import BENCHMARK_SETS, DATASET_ALIASES, resolve_data_root

        if DATASET_ALIASES.get(eval_dataset.lower(), eval_dataset.lower()) in BENCHMARK_SETS:
            resolve_data_root(data_root)  # fail before the work when the benchmark images are missing
    model, card = create_model(model_name, weights, untrained=untrained)
    if card.zero_shot:
        raise ZooError(f"{model_name} fits each image from scratch and has no weights to quantize",
                       "quantize a trained model (zoo list shows them)")
    tile = tile if tile is not None else card.tile or 256
    if tile % card.size_multiple:
        raise ZooError(f"tile {tile} is not a multiple of {model_name}'s size multiple {card.size_multiple}",
                       f"use --tile {max(card.size_multiple, tile // card.size_multiple * card.size_multiple)}")
    mixed_precision = MixedPrecision.parse(mixed)
    spec = degradation or card.calibration_degradation

    output_dir = Path(output_dir)
    model_path = output_dir / f"{model_name}_{recipe.NAME}_{method}.pt2"
    report_path = output_dir / "report.json"
    sensitivity_path = output_dir / "sensitivity.json"
    planned = [model_path, model_path.with_suffix(".json")]
    planned += [report_path] if evaluate else []
    planned += [sensitivity_path] if sensitivity else []
    run_dir = output_dir / f"{model_name}_{recipe.NAME}_qat_run"
    planned += [run_dir] if method == "qat" else []
    existing = [path for path in planned if path.exists()]
    if existing and not overwrite:
        raise ZooError(f"{existing[0]} already exists", "pass --overwrite or choose another -o folder")
    if method == "qat":
        if qat_target not in QAT_TARGETS:
            raise ZooError(f"unknown QAT target {qat_target!r}", f"use --qat-target {' or '.join(QAT_TARGETS)}")
        if qat_ranges not in QAT_RANGES:
            raise ZooError(f"unknown QAT activation ranges {qat_ranges!r}", f"use --qat-ranges {' or '.join(QAT_RANGES)}")
        if run_dir.exists():
            import shutil

            shutil.rmtree(run_dir)  # --overwrite: a new run, not a resume

    calibration = build_calibration_set(spec, tile=tile, count=calib_images, source=calib_source,
                                        data_root=data_root, seed=seed)
    log(f"calibration: {len(calibration)} crops of {tile}x{tile} from {calibration.source}, degradation {spec}")
    example = calibration.inputs[0]
    torch.manual_seed(seed)
    if method == "ptq":
        quantized = quantize_ptq(model, example, recipe, calibration, mixed=mixed_precision, progress=progress)
    else:
        trained = _run_qat(model_name, card, weights, untrained, calibration, backend=recipe.NAME, tile=tile,
                           spec=spec, calib_images=calib_images, qat_steps=qat_steps, qat_lr=qat_lr,
                           qat_batch=qat_batch, qat_target=qat_target, qat_ranges=qat_ranges, mixed=mixed,
                           data_root=data_root, seed=seed, run_dir=run_dir, progress=progress)
        quantized, run_sidecar = load_quantized(trained)
    precision = layer_precision(quantized) if method == "ptq" else run_sidecar["layer_precision"]
    float_layers = [name for name, kind in precision.items() if kind == "float"]
    log(f"{sum(kind == 'int8' for kind in precision.values())} of {len(precision)} conv layers in int8; "
        f"float: {', '.join(float_layers) or 'none'}")

    metadata = {
        "model": model_name,
        "task": card.task,
        "weights": ("untrained (random init): NOT a restoration" if getattr(model, "zoo_untrained", False)
                    else str(weights) if weights else str(card.weights_path)),
        # The float model it was made from, as a manifest records it: zoo check rebuilds it as the reference.
        "float_weights": weights_record(card, weights, untrained=getattr(model, "zoo_untrained", False)),
        "backend": recipe.NAME,
        "mixed_flag": mixed or "none",
        "calibration": calibration.describe(),
        **({"qat_target": qat_target, "qat_run": str(run_dir), "qat": run_sidecar.get("qat"),
            "calibration": run_sidecar.get("calibration"),
            "qat_data": "fresh patches of the source images (random crop, flip/rotation, degradation) at every step"}
           if method == "qat" else {}),
        "layer_precision": precision,
        "tile": tile,
        "size_multiple": card.size_multiple,
        "scale": card.scale,
    }
    if method == "ptq":
        save_quantized(quantized, model_path, example, metadata)
    else:  # the engine's file as it is, with the command's metadata in its sidecar
        import json
        import shutil

        from zoo.atomic import atomic_path, write_json

        with atomic_path(model_path) as temporary:
            shutil.copyfile(trained, temporary)
        write_json(sidecar_path(model_path), {**json.loads(sidecar_path(trained).read_text()), **metadata,
                                              "file": model_path.name})
    log(f"wrote {model_path} and {model_path.with_suffix('.json').name}")
    provenance = quantization_info(quantized).get("provenance")
    log(f"quantization: {provenance_label(provenance)}")
    summary = {"model_path": str(model_path), "sidecar_path": str(model_path.with_suffix(".json")),
               "layer_precision": precision, "provenance": provenance}

    if sensitivity:
        from quantize.sensitivity import format_sensitivity_table, layer_sensitivity, write_sensitivity

        held_out = build_calibration_set(spec, tile=tile, count=sensitivity_images, source=calib_source,
                                         data_root=data_root, seed=seed, skip_images=calib_images)
        result = layer_sensitivity(model, example, recipe, calibration, held_out.inputs, progress=progress)
        result["held_out"] = held_out.describe()
        write_sensitivity(result, sensitivity_path)
        log(format_sensitivity_table(result, limit=20))
        log(f"wrote {sensitivity_path}")
        summary["sensitivity_path"] = str(sensitivity_path)

    if evaluate:
        from quantize.report import accuracy_drop_report, format_report_table

        report = accuracy_drop_report(model, quantized, card, dataset=eval_dataset,
                                      degradation=eval_degradation, data_root=data_root, limit=eval_limit,
                                      tile=tile, json_path=report_path, progress=progress)
        log(format_report_table(report))
        log(f"wrote {report_path}")
        summary.update(report_path=str(report_path), mean=report["mean"])
    return summary

"""Packing a training run's weights to ship with a model (``zoo pack RUN -o zoo/weights/FILE.safetensors``).

The shipped file is the run's best (or final) weights, EMA where the run kept it, stored as float16
(cast back to float32 on load: half the size, no measurable PSNR change) with a safetensors header
that says what the weights are: model, task, degradation and ``training``, the whole chain of runs
that made them, each stage written from its run folder (config.json, log.csv, start.json), so a
model card's "how it was trained" is generated, not typed. The QAT int8 state of a run is packed by
``zoo quantize --pack`` instead.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from zoo.errors import ZooError

#: ``--weights`` choices: the run file each names.
RUN_FILES = {"best": "best.safetensors", "final": "final.safetensors", "final_ema": "final_ema.safetensors"}
STORAGE_FLOAT16 = "float16 (cast to float32 on load)"


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise ZooError(f"{run_dir} is not a training run folder (it holds no config.json)",
                       "pass the folder zoo train / zoo distill wrote (runs/NAME) or a file inside it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ZooError(f"{path} is not readable JSON ({err})", "pass a run folder this zoo version wrote") from err


def _minutes_and_rate(run_dir: Path) -> tuple[float | None, float | None]:
    """(minutes trained, mean iterations per second) from log.csv; elapsed_s restarts at each resume,
    so the time is the sum of each segment's last elapsed value."""
    path = run_dir / "log.csv"
    if not path.is_file():
        return None, None
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    total, segment_end, rates = 0.0, 0.0, []
    for row in rows:
        try:
            elapsed = float(row.get("elapsed_s") or "nan")
            rate = float(row.get("it_per_s") or "nan")
        except ValueError:
            continue
        if elapsed == elapsed:
            if elapsed < segment_end:  # a resume started a new segment
                total += segment_end
            segment_end = elapsed
        if rate == rate and rate > 0:
            rates.append(rate)
    total += segment_end
    return (total / 60 if total else None), (sum(rates) / len(rates) if rates else None)


def _short_number(value: float) -> str:
    """A learning rate as people write it: 2e-4, 1.5e-3, 0.5."""
    if value >= 0.1:
        return f"{value:g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def describe_stage(run_dir: str | Path) -> str:
    """One run as a sentence: command and config, iterations, patches, loss, optimiser, precision,
    EMA, data and measured time, e.g. ``zoo train configs/x.yaml (2000 iterations of batch 8 of
    64 px patches, l1, adamw 2e-4 cosine, bf16 autocast, EMA 0.999; urban100 + bundled; 68 min at
    0.49 it/s)``."""
    run_dir = Path(run_dir)
    config = _run_config(run_dir)
    data, train, optimizer = config.get("data") or {}, config.get("train") or {}, config.get("optimizer") or {}
    name = config.get("name") or run_dir.name
    command = "zoo distill" if config.get("distill") else "zoo train"
    config_file = f"configs/{name}.yaml" if (Path("configs") / f"{name}.yaml").is_file() else f"config {name}"
    unit = "px patches"
    try:
        from zoo.registry import get_card

        if (config.get("model") or {}).get("name") and get_card(config["model"]["name"]).scale > 1:
            unit = "px HR patches"
    except ZooError:
        pass
    parts = [f"{train.get('iterations')} iterations of batch {data.get('batch_size')} of "
             f"{data.get('patch_size')} {unit}"
             + "".join(f", then batch {batch} of {size} px from iteration {first}"
                       for first, size, batch in (data.get("patch_schedule") or []))]
    loss = (config.get("loss") or {}).get("type")
    if loss:
        parts.append(str(loss).replace("_", " "))
    schedule = (config.get("schedule") or {}).get("type")
    parts.append(f"{optimizer.get('type')} {_short_number(optimizer.get('lr'))}" + (f" {schedule}" if schedule else "")
                 if isinstance(optimizer.get("lr"), (int, float)) else str(optimizer.get("type")))
    if train.get("amp") not in (None, "none"):
        parts.append(f"{train['amp']} autocast")
    if train.get("channels_last"):
        parts.append("channels-last")
    if train.get("ema_decay"):
        parts.append(f"EMA {train['ema_decay']:g}")
    distill = config.get("distill") or {}
    teacher = (distill.get("teacher") or {}).get("name") if isinstance(distill, dict) else None
    if teacher:
        parts.append(f"teacher {teacher}")
    sources = data.get("sources") or []
    tail = [" + ".join(map(str, sources))] if sources else []
    minutes, rate = _minutes_and_rate(run_dir)
    if minutes is not None:
        tail.append(f"{minutes:.0f} min" + (f" at {rate:.2g} it/s" if rate else ""))
    return f"{command} {config_file} ({', '.join(parts)}{'; ' + '; '.join(tail) if tail else ''})"


def training_chain(run_dir: str | Path, _seen: tuple[Path, ...] = ()) -> str:
    """Every stage that made a run's weights, oldest first, joined by ``then``.

    The run's start comes from its start.json (written by the engine since session 13): a packed
    file's ``training`` text is the chain so far; a file inside another run folder is that run's
    chain. Older runs without start.json fall back to config.json's ``model.weights``.
    """
    from zoo.train.models import START_RECORD, names_shipped

    run_dir = Path(run_dir)
    if run_dir.resolve() in _seen:
        raise ZooError(f"run {run_dir} starts from its own weights", "pack a run with a finite history")
    config = _run_config(run_dir)
    stage = describe_stage(run_dir)
    record_path = run_dir / START_RECORD
    record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else None
    weights = record.get("weights") if record else (config.get("model") or {}).get("weights")
    metadata = (record or {}).get("metadata") or {}
    if not weights:
        return f"{stage}, from scratch"
    if metadata.get("training"):
        return f"{metadata['training']} then {stage}"
    parent = Path(weights).expanduser().parent
    if (parent / "config.json").is_file():
        return f"{training_chain(parent, (*_seen, run_dir.resolve()))} then {stage}"
    if names_shipped(str(weights)):
        model = (config.get("model") or {}).get("name") or "the model"
        return f"{stage}, from the {weights.split(':', 1)[1] if ':' in weights else model} weights shipped then"
    return f"{stage}, from {Path(weights).name}"


def _source_file(source: Path, which: str) -> tuple[Path, Path]:
    """(weights file, run folder) for ``zoo pack SOURCE --weights WHICH``."""
    if which not in RUN_FILES:
        raise ZooError(f"--weights {which!r} is not one of {', '.join(RUN_FILES)}", "pick one of them")
    if source.is_dir():
        _run_config(source)  # a run folder at all?
        path = source / RUN_FILES[which]
        if not path.is_file():
            present = [key for key, name in RUN_FILES.items() if (source / name).is_file()]
            raise ZooError(f"{source} holds no {RUN_FILES[which]}",
                           f"pass --weights {present[0]}" if present else "finish the run first (zoo train ... --resume)")
        return path, source
    if not source.is_file():
        raise ZooError(f"{source} not found", "pass a run folder (runs/NAME) or a weights file inside one")
    return source, source.parent


def pack_run(source: str | Path, output: str | Path, *, weights: str = "best", model_name: str | None = None,
             training: str | None = None, hardware: str | None = None, dtype: str = "float16",
             overwrite: bool = False) -> dict:
    """Write a run's weights as a shippable ``.safetensors`` file with provenance metadata.

    ``source``: a run folder (``weights`` picks best / final / final_ema) or a weights file inside
    one. ``output``: the file to write (atomically; an existing file only with ``overwrite``).
    ``model_name``: when given, the run must have trained that model. ``training``: the training
    text to store instead of the generated :func:`training_chain`; ``hardware`` is appended to it
    (e.g. ``1 thread of a shared 2-core x86-64 CPU``). ``dtype``: ``float16`` (default; refused
    for a weight outside its range) or ``float32``. The weights are loaded strictly into the model
    before anything is written. Returns ``{"path", "model", "bytes", "metadata"}``.
    """
    from zoo.checkpoints import check_fits_float16, read_metadata, read_state_dict, save_weights
    from zoo.registry import get_card, load_card_weights

    source, output = Path(source).expanduser(), Path(output).expanduser()
    path, run_dir = _source_file(source, weights)
    config = _run_config(run_dir)
    if config.get("quantization"):
        raise ZooError(f"{run_dir} is a quantization-aware run: its int8 state is what ships",
                       "pack it with zoo quantize MODEL --backend B --pack RUN_DIR -o FILE")
    trained = (config.get("model") or {}).get("name")
    if not trained:
        raise ZooError(f"{run_dir} trained a model family, not a registered model: there is no card to ship it with",
                       "register the model (zoo/models/) and train it by name")
    if model_name is not None and model_name != trained:
        raise ZooError(f"{run_dir} trained {trained}, not {model_name}", f"pack it as {trained}")
    if output.suffix.lower() != ".safetensors":
        raise ZooError(f"the packed weights are a .safetensors file, got {output.name}",
                       "name the output FILE.safetensors (e.g. zoo/weights/<model>.safetensors)")
    if output.exists() and output.resolve() == path.resolve():
        raise ZooError(f"-o {output} is the file being packed", "write the packed file elsewhere (zoo/weights/)")
    if output.exists() and not overwrite:
        raise ZooError(f"{output} already exists", "pass --overwrite or choose another -o")
    if dtype not in ("float16", "float32"):
        raise ZooError(f"--dtype {dtype!r} is not float16 or float32", "pick one of them")

    card = get_card(trained)
    state = read_state_dict(path, prefer_ema=True)
    load_card_weights(card.builder(), card, state)  # strict: the layout matches
    if dtype == "float16":
        check_fits_float16(state, path.name, "pack with --dtype float32")
        state = {key: value.half() if value.is_floating_point() else value for key, value in state.items()}

    # The chain is read before writing: the output may be the shipped file a stage started from.
    text = training if training is not None else training_chain(run_dir)
    if hardware:
        text = f"{text}; {hardware}"
    source_meta = read_metadata(path) if path.suffix.lower() == ".safetensors" else {}
    data = config.get("data") or {}
    metadata = {
        "model": trained,
        "task": card.task,
        "degradation": str(data.get("degradation") or card.default_degradation),
        "storage": STORAGE_FLOAT16 if dtype == "float16" else "float32",
        "training": text,
        "source": f"{run_dir.name}/{path.name}" + "".join(
            f", {key} {source_meta[key]}" for key in ("iteration", "val_psnr", "weights") if key in source_meta),
    }
    written = save_weights(state, output, metadata=metadata)
    return {"path": written, "model": trained, "bytes": written.stat().st_size, "metadata": metadata}

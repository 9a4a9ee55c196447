"""Zero-shot blind denoising with an implicit neural representation (``inr-zeroshot``).

After Kim, Lee and Shin, "Zero-shot Blind Image Denoising via Implicit Neural Representations"
(arXiv:2204.02405, 2022). No training data and no weights: for each photo a fresh coordinate
network (pixel position -> colour) is fitted to the noisy photo itself with Adam. Such a network
fits the smooth, structured part of the photo before the white noise, so the fit is stopped as
soon as its mean squared residual to the noisy photo falls to the noise variance, which is
estimated from the photo (:mod:`zoo.noise_level`). The layers nearest the output are the ones
that fit fine detail (and so the noise); weight decay on the last two layers only slows their
growth and delays noise fitting further.

The network (see :class:`INRConfig` for every choice and why):

* input: the pixel position, encoded by random Fourier features ``sin/cos(2*pi*f.u)`` with
  frequencies ``f`` drawn once from a Gaussian (cycles per pixel, so tiles of any size behave
  alike);
* a ReLU MLP, whose low-frequency-first fitting is what early stopping exploits;
* output: colour in an orthonormal opponent colour space (luma and two chroma axes), as the
  deviation from the tile's mean colour. White noise keeps the same variance on each axis, while
  photos carry far less chroma than luma detail, so each axis is stopped on its own when its
  residual reaches the noise variance.

Each Adam step sees a random subset of a tile's pixels (a whole-tile check confirms the stop), and
what is returned is a running average of the weights rather than the last iterate; on CPUs that
multiply bfloat16 natively the matrix products run in bfloat16. Together these made the fit about
5x cheaper and 1 dB better than full-tile float32 steps on the tuning crops (docs/inr.md).

Photos larger than one tile are fitted tile by tile (overlapping tiles, blended with ramps), so
memory is bounded and a 12-megapixel photo finishes; several tiles are fitted at once as one
batched network (all tiles share the coordinate encoding, so the batch is a few large matrix
products), which is where a GPU pays off.

It is not exportable to mobile formats: "the model" is an optimisation run per image (hundreds of
Adam steps with autograd), not a fixed network.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.noise_level import PATCH_SIZE, estimate_noise_sigma
from zoo.registry import ModelCard, register

#: With pixel subsets, steps between two exact whole-tile checks of the stopping rule.
CHECK_INTERVAL = 10

#: Orthonormal RGB -> opponent colour transform (rows: luma, red-blue, green-magenta). Being
#: orthonormal, it keeps white noise white with the same sigma on every axis.
OPPONENT_FROM_RGB = torch.tensor([
    [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
    [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)],
    [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)],
])


@dataclass(frozen=True)
class INRConfig:
    """Hyper-parameters of the zero-shot INR denoiser; defaults were chosen on crops of the
    training pool (urban100) and scikit-image's sample photos, never on the evaluation sets."""

    #: Random Fourier frequencies (the encoding has twice as many values: sin and cos).
    fourier_features: int = 64
    #: Standard deviation of the frequencies, in cycles per pixel. Small values make the fit
    #: start from large smooth shapes; 0.02 (a period of ~50 px on average) denoised best. 0.015
    #: lost 1 dB; 0.025-0.03 need 30-45% less work, gain on dense texture, lose 0.1-0.4 dB elsewhere.
    fourier_std: float = 0.02
    #: Width of the hidden ReLU layers (64: 0.6x the time, -0.25 dB; 128: 1.4x the time, -0.15 dB).
    hidden_width: int = 96
    #: Number of hidden ReLU layers (the output layer comes on top).
    hidden_layers: int = 3
    #: Adam learning rate (constant: the early stop ends the fit, so no decay schedule is needed).
    #: With pixel subsets and weight averaging, 7e-3 beat 5e-3 and 1e-2 (+0.13 / +0.04 dB over
    #: 1e-2 at sigma 15 / 25, 10% less work); 2e-2 is unstable (-1.3 dB).
    learning_rate: float = 7e-3
    #: Most Adam steps per tile. With 512-pixel steps the tiles of a 256x256 crop stop after 150-350
    #: steps on average; densely textured ones reach the cap (500 saved 15-20% and lost 0.4-0.6 dB).
    max_steps: int = 800
    #: Pixels per Adam step (a random subset of the ~2100 of a tile); None or >= the tile's pixels:
    #: all of them. 512 takes more steps but half the work of whole tiles at the same PSNR; 256
    #: loses 0.6 dB at sigma 15, 1024 costs 1.45x for +0.07 dB.
    pixels_per_step: int | None = 512
    #: Stop when the residual reaches the estimated noise variance (False: run all max_steps).
    early_stopping: bool = True
    #: Stop when residual MSE <= stop_ratio * sigma_estimate**2 (0.95 / 1.05: -0.2 / -0.4 dB).
    stop_ratio: float = 1.0
    #: Stop each opponent-colour channel on its own residual (False: one stop on the RGB mean).
    per_channel_stopping: bool = True
    #: Decoupled (AdamW) weight decay on the weights of the last ``decay_layers`` layers; 0 = off.
    #: 1.0 was best of 0, 0.3, 1, 3 in the original setting (+0.2 dB over 0; 3 delays the stop past
    #: max_steps); with weight averaging and lr 1e-2, 0 / 0.3 / 1 were within 0.15 dB (noise).
    selective_decay: float = 1.0
    #: How many layers, counted back from the output, get the selective decay.
    decay_layers: int = 2
    #: Below this estimated sigma (0-255 scale) the photo counts as clean and is returned as is.
    clean_sigma: float = 3.0
    #: Largest tile side in pixels; every photo is cut into overlapping tiles of about this size,
    #: each fitted by its own network and stopped on its own residual. Small tiles make the stop
    #: local (flat regions stop early, textured ones late): 44-px tiles beat one 128-px fit by
    #: 0.7 dB. Also what bounds memory for large photos.
    tile_size: int = 48
    #: Overlap between neighbouring tiles, in pixels (blended with linear ramps; the blend also
    #: averages independent fits: 8 px instead of 16 saved 30% of the work and lost 0.25 dB).
    tile_overlap: int = 16
    #: Tiles fitted together as one batched network (None: 32 on CPU, 256 on CUDA); finished
    #: tiles leave the batch, so batching costs no extra steps and saves per-step overhead.
    tiles_per_batch: int | None = None
    #: Running average of the weights: after every step ``mean += (1 - weight_average) * (weights - mean)``.
    #: The stop is decided on the trained networks; the averaged networks are returned (0: the last
    #: iterate). Free (the fit is unchanged) and +0.5 dB at both sigmas; 0.9 beat 0.8 and 0.95.
    weight_average: float = 0.9
    #: Dtype of the matrix products: "auto" (bfloat16 on CPUs that multiply it natively, i.e.
    #: AVX512-BF16 or AMX, else float32), "float32" or "bfloat16". Weights, Adam and the output
    #: layer's bias stay float32. bfloat16 made a step 1.6-2x faster on an AVX512-BF16 CPU for
    #: -0.06 / -0.01 dB at sigma 15 / 25.
    compute_dtype: str = "auto"
    #: Seed of the random frequencies and initial weights (results are reproducible).
    seed: int = 0

    def __post_init__(self):
        positive = ("fourier_features", "hidden_width", "hidden_layers", "max_steps", "tile_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ZooError(f"INRConfig.{name} must be at least 1, got {getattr(self, name)}",
                               f"set {name} to a positive number")
        if not 0 < self.decay_layers <= self.hidden_layers + 1:
            raise ZooError(f"INRConfig.decay_layers={self.decay_layers} is not between 1 and the "
                           f"{self.hidden_layers + 1} layers", "lower decay_layers")
        if not 0 <= self.tile_overlap < self.tile_size // 2:
            raise ZooError(f"INRConfig.tile_overlap={self.tile_overlap} must be below half the tile size",
                           "lower tile_overlap")
        if self.compute_dtype not in ("auto", "float32", "bfloat16"):
            raise ZooError(f"INRConfig.compute_dtype={self.compute_dtype!r} is not one of auto, float32, bfloat16",
                           "use compute_dtype='auto'")
        if not 0 <= self.weight_average < 1:
            raise ZooError(f"INRConfig.weight_average={self.weight_average} must be in [0, 1)",
                           "use 0.9, or 0 for none")
        if self.tile_size < PATCH_SIZE * 4:
            raise ZooError(f"INRConfig.tile_size={self.tile_size} is too small", "use at least 32 pixels")


#: The ablation variants: each switches one component of the method off.
ABLATIONS = {
    "inr": {},
    "inr-no-decay": {"selective_decay": 0.0},
    "inr-no-early-stop": {"early_stopping": False},
}


def ablation_config(name: str, base: INRConfig | None = None) -> INRConfig:
    """The config of ablation variant ``name`` (a key of :data:`ABLATIONS`) built on ``base``."""
    if name not in ABLATIONS:
        raise ZooError(f"unknown INR variant {name!r}", f"use one of {', '.join(ABLATIONS)}")
    return replace(base or INRConfig(), **ABLATIONS[name])


class FourierFeatureMLP(nn.Module):
    """A batch of independent coordinate MLPs sharing one random Fourier encoding.

    ``forward(features)`` maps the encoded pixel positions (n, 2*fourier_features) to
    (batch, n, out_channels); network ``b`` has its own weights ``layers[i][0][b]``.
    """

    def __init__(self, batch: int, out_channels: int, config: INRConfig, generator: torch.Generator):
        super().__init__()
        frequencies = torch.randn(2, config.fourier_features, generator=generator) * config.fourier_std
        self.register_buffer("frequencies", frequencies)
        widths = [2 * config.fourier_features] + [config.hidden_width] * config.hidden_layers + [out_channels]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            # nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), per network
            bound = 1 / math.sqrt(fan_in)
            weight = (torch.rand(batch, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            bias = (torch.rand(batch, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(bias))

    def encode(self, height: int, width: int) -> torch.Tensor:
        """Fourier features (height*width, 2*fourier_features) of the pixel grid, row-major."""
        device = self.frequencies.device
        rows = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
        cols = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
        grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
        positions = torch.stack([grid_cols.reshape(-1), grid_rows.reshape(-1)], dim=1)  # pixels
        phase = 2 * math.pi * positions @ self.frequencies
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)

    def forward(self, features: torch.Tensor, parameters: tuple[list, list] | None = None) -> torch.Tensor:
        """The networks' outputs (batch, n, out) at ``features``; ``parameters`` = (weights, biases)
        replaces the module's own (e.g. their running average)."""
        # The matrix products run in the features' dtype (float32, or bfloat16 where the CPU
        # multiplies it natively); the output bias is added in float32 so the fit stays precise.
        weights, biases = parameters if parameters is not None else (self.weights, self.biases)
        dtype = features.dtype
        batch = weights[0].shape[0]
        hidden = torch.baddbmm(biases[0].to(dtype), features.expand(batch, *features.shape), weights[0].to(dtype))
        for weight, bias in zip(weights[1:-1], biases[1:-1]):
            hidden = torch.baddbmm(bias.to(dtype), torch.relu(hidden), weight.to(dtype))
        return torch.bmm(torch.relu(hidden), weights[-1].to(dtype)).float() + biases[-1]

    def layer_weights(self) -> list[nn.Parameter]:
        """The weight tensors, input layer first."""
        return list(self.weights)


def selective_decay_groups(model: FourierFeatureMLP, decay: float, last_layers: int = 2) -> list[dict]:
    """Adam parameter groups: weight decay ``decay`` on the weights of the last ``last_layers``
    layers only; all other weights and every bias get none."""
    weights = model.layer_weights()
    decayed = weights[len(weights) - last_layers:]
    decayed_ids = {id(p) for p in decayed}
    others = [p for p in model.parameters() if id(p) not in decayed_ids]
    return [{"params": others, "weight_decay": 0.0}, {"params": decayed, "weight_decay": decay}]


@dataclass
class TileFit:
    """Result of fitting a batch of tiles: ``fitted`` (batch, C, h, w) in the colour space fitted,
    ``stop_steps`` (batch, C) the Adam step each channel stopped at, ``stopped`` (batch, C) whether
    it stopped early, ``residual`` (batch, C) the final mean squared residual."""

    fitted: torch.Tensor
    stop_steps: torch.Tensor
    stopped: torch.Tensor
    residual: torch.Tensor
    work: int = 0


def fit_tiles(targets: torch.Tensor, noise_sigma: float, config: INRConfig, *,
              progress_bar=None) -> TileFit:
    """Fit one INR per tile to ``targets`` (batch, C, h, w) and stop at the noise level.

    ``noise_sigma`` is the noise standard deviation in the targets' units ([0, 1] scale). Each
    network fits its tile's deviation from the tile's mean colour. A channel (per tile) is frozen
    at the first step whose residual MSE over the whole tile is <= ``stop_ratio * noise_sigma**2``
    and drops out of the loss; a tile whose channels are all frozen leaves the batch, and the fit
    ends when none is left or after ``max_steps``. With ``pixels_per_step`` below the tile's pixel
    count each step sees a random subset of pixels (an unbiased estimate of the loss); a subset
    estimate below the threshold triggers an exact whole-tile check (at most one per
    ``CHECK_INTERVAL`` steps) before a channel is frozen. With ``weight_average`` the stop is
    decided on the trained networks as above, and what is returned for a frozen channel is the
    output of the running average of the weights at that step (``residual`` is that output's).
    """
    batch, channels, height, width = targets.shape
    device = targets.device
    generator = torch.Generator().manual_seed(config.seed)
    model = FourierFeatureMLP(batch, channels, config, generator).to(device)
    optimizer = _adam(model, config)
    features = model.encode(height, width).to(compute_dtype(config, device))
    target = targets.reshape(batch, channels, -1).transpose(1, 2)  # (batch, n, C)
    offset = target.mean(dim=1, keepdim=True)
    target = (target - offset).contiguous()  # each network fits its tile's deviation from the mean colour
    pixels = target.shape[1]
    subset = config.pixels_per_step if config.pixels_per_step and config.pixels_per_step < pixels else None
    order = torch.randperm(pixels, generator=generator).to(device) if subset else None
    cursor = 0
    threshold = config.stop_ratio * noise_sigma ** 2
    beta = config.weight_average
    averaged = None  # (weights, biases) of the running average, when one is kept
    if beta:
        averaged = ([w.detach().clone() for w in model.weights], [b.detach().clone() for b in model.biases])
    fitted = torch.zeros_like(target)
    frozen = torch.zeros(batch, channels, dtype=torch.bool, device=device)
    stop_steps = torch.full((batch, channels), config.max_steps, dtype=torch.long, device=device)
    residual = torch.zeros(batch, channels, device=device)
    active = torch.arange(batch, device=device)  # tiles still fitted; row i of the model is tile active[i]
    active_target, active_frozen = target, frozen.clone()
    next_check = 0  # with subsets: no exact check before this step (after a failed one)
    work = 0  # pixels through a training step, summed over tiles; a whole-tile check counts 1/3
    for step in range(1, config.max_steps + 1):
        if subset:
            if cursor + subset > pixels:
                order = torch.randperm(pixels, generator=generator).to(device)
                cursor = 0
            index = order[cursor:cursor + subset]
            cursor += subset
            prediction = model(features[index])
            mse = ((prediction - active_target[:, index]) ** 2).mean(dim=1)  # (active, C), estimated
            work += len(active) * subset
        else:
            prediction = model(features)
            mse = ((prediction - active_target) ** 2).mean(dim=1)  # (active, C), exact
            work += len(active) * pixels
        with torch.no_grad():
            estimate = mse.detach()
            if (config.early_stopping and (subset is None or step >= next_check)
                    and bool(_reached(estimate, threshold, config)[~active_frozen].any())):
                if subset is None:
                    whole, exact = prediction.detach(), estimate
                else:
                    whole = model(features)
                    exact = ((whole - active_target) ** 2).mean(dim=1)
                    next_check = step + CHECK_INTERVAL
                    work += len(active) * pixels // 3
                newly = _reached(exact, threshold, config) & ~active_frozen
                if bool(newly.any()):
                    rows = newly.any(dim=1).nonzero().squeeze(1)  # rows of the batch with a new stop
                    if beta:  # return the averaged networks, not the last iterate
                        output = model(features, ([w[rows] for w in averaged[0]], [b[rows] for b in averaged[1]]))
                        output_mse = ((output - active_target[rows]) ** 2).mean(dim=1)
                        work += len(rows) * pixels // 3
                    else:
                        output, output_mse = whole[rows], exact[rows]
                    tiles, new = active[rows], newly[rows]
                    fitted[tiles] = torch.where(new[:, None, :], output, fitted[tiles])
                    residual[tiles] = torch.where(new, output_mse, residual[tiles])
                    stop_steps[tiles] = torch.where(new, step, stop_steps[tiles])
                    active_frozen = active_frozen | newly
                    frozen[active] = active_frozen
        if progress_bar is not None:
            residual[active] = torch.where(active_frozen, residual[active], estimate)
            progress_bar.update(1)
            progress_bar.set_postfix(rms_255=f"{math.sqrt(float(residual.mean())) * 255:.2f}",
                                     done=f"{int(frozen.sum())}/{frozen.numel()}", refresh=False)
        if bool(active_frozen.all()):
            if progress_bar is not None:
                progress_bar.update(config.max_steps - step)
            break
        loss = (mse * (~active_frozen)).sum() / channels  # each tile as if fitted alone
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if beta:
            with torch.no_grad():
                for mean, live in zip(averaged[0] + averaged[1], list(model.weights) + list(model.biases)):
                    mean.lerp_(live, 1 - beta)
        finished = active_frozen.all(dim=1)
        if bool(finished.any()):  # drop finished tiles so no step is spent on them
            keep = ~finished
            optimizer = _keep_rows(model, optimizer, keep, config)
            active, active_frozen = active[keep], active_frozen[keep]
            active_target = target[active]
            if beta:
                averaged = ([w[keep] for w in averaged[0]], [b[keep] for b in averaged[1]])
    else:
        with torch.no_grad():
            final = model(features, averaged)  # the fit after the last update (averaged, if so set)
            left = ~frozen[active]
            residual[active] = torch.where(left, ((final - target[active]) ** 2).mean(dim=1), residual[active])
            fitted[active] = torch.where(left[:, None, :], final, fitted[active])
    fitted = fitted + offset
    return TileFit(fitted=fitted.transpose(1, 2).reshape(batch, channels, height, width),
                   stop_steps=stop_steps.cpu(), stopped=frozen.cpu(), residual=residual.cpu(), work=work)


def _adam(model: FourierFeatureMLP, config: INRConfig) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay on the last ``decay_layers`` layers only (AdamW groups)."""
    return torch.optim.AdamW(selective_decay_groups(model, config.selective_decay, config.decay_layers),
                             lr=config.learning_rate, fused=_fused_adam(model))


def _fused_adam(model: FourierFeatureMLP) -> bool | None:
    """The fused AdamW kernel where torch has one (one pass over the weights per step)."""
    return True if model.frequencies.device.type in ("cpu", "cuda") else None


def compute_dtype(config: INRConfig, device: torch.device) -> torch.dtype:
    """The dtype of the network's matrix products (see ``INRConfig.compute_dtype``)."""
    if config.compute_dtype != "auto":
        return getattr(torch, config.compute_dtype)
    if device.type == "cpu" and native_cpu_bfloat16():
        return torch.bfloat16
    return torch.float32


def native_cpu_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(cpu, name)() for name in checks if hasattr(cpu, name))
    except RuntimeError:
        return False


def _keep_rows(model: FourierFeatureMLP, optimizer: torch.optim.Optimizer, keep: torch.Tensor,
               config: INRConfig) -> torch.optim.Optimizer:
    """Keep only networks ``keep`` (bool over the batch) in ``model`` and in the Adam moments."""
    old_params = list(model.parameters())
    old_batch = old_params[0].shape[0]
    states = [optimizer.state.get(p, {}) for p in old_params]
    for parameters in (model.weights, model.biases):
        for i, parameter in enumerate(parameters):
            parameters[i] = nn.Parameter(parameter.detach()[keep].clone())
    new_optimizer = _adam(model, config)
    for parameter, state in zip(model.parameters(), states):
        if state:
            new_optimizer.state[parameter] = {
                key: (value[keep] if value.ndim and value.shape[0] == old_batch else value).clone()
                if torch.is_tensor(value) else value
                for key, value in state.items()}
    return new_optimizer


def _reached(mse: torch.Tensor, threshold: float, config: INRConfig) -> torch.Tensor:
    """Which (tile, channel) residuals have reached the stopping threshold."""
    if config.per_channel_stopping:
        return mse <= threshold
    return (mse.mean(dim=1, keepdim=True) <= threshold).expand_as(mse)


def tile_starts(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Start offsets of equal tiles of at most ``tile`` pixels covering ``length`` with at least
    ``overlap`` pixels shared by neighbours; returns (starts, tile length actually used)."""
    if length <= tile:
        return [0], length
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    step = (length - size) / (count - 1)
    return [round(i * step) for i in range(count)], size


def _ramp(size: int, overlap: int, device) -> torch.Tensor:
    """Blend weights along one tile side: rising linearly over ``overlap`` pixels at both ends, > 0."""
    index = torch.arange(size, device=device, dtype=torch.float32)
    distance = torch.minimum(index + 1, size - index)
    return (distance / (overlap + 1)).clamp(max=1.0)


class ZeroShotINRDenoiser(nn.Module):
    """The ``inr-zeroshot`` model: ``forward(x)`` denoises each image of a batch by fitting an INR.

    ``x``: float NCHW in [0, 1] (noisy values may exceed it), C = 3 (RGB), 1 (grey) or 4 (RGBA:
    the alpha channel is passed through). Returns the same shape; fitted images are clamped to
    [0, 1]. Works under ``torch.inference_mode`` (the fit runs with autograd re-enabled on a copy of
    the input). Runs on the input's device. After each call ``last_report`` describes the last
    image (see :meth:`denoise`), ``reports`` all images of the batch. Set ``progress = True`` for a
    progress bar.
    """

    def __init__(self, config: INRConfig | None = None):
        super().__init__()
        self.config = config or INRConfig()
        self.progress = False
        self.last_report: dict | None = None
        self.reports: list[dict] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ZooError(f"expected an NCHW batch, got shape {tuple(x.shape)}", "add a batch dimension")
        outputs, self.reports = [], []
        for image in x:
            restored, report = self.denoise(image)
            outputs.append(restored)
            self.reports.append(report)
            self.last_report = report
        return torch.stack(outputs)

    def denoise(self, image: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Denoise one CHW image; returns (image, report).

        report: ``noise_sigma`` (estimate, 0-255 scale), ``status`` ("denoised", or "clean" when
        the estimate is below ``clean_sigma`` and the input is returned unchanged),
        ``stop_iteration`` (mean Adam step at which tiles/channels stopped), ``max_stop_iteration``,
        ``stopped_early`` (all of them reached the noise level before ``max_steps``),
        ``stopped_fraction`` (the share of tile channels that did), ``residual`` (RMS difference
        between output and input, 0-255 scale; near ``noise_sigma`` when stopped early),
        ``fit_seconds``, ``tiles``, ``pixel_steps`` (pixels through a training step, summed over
        tiles and steps, whole-tile checks counting a third: the work, independent of the machine).
        """
        start = time.perf_counter()
        with torch.inference_mode(False), torch.enable_grad():
            image = image.detach().clone()  # a normal tensor even when called under inference_mode
            restored, report = self._denoise(image)
        report["fit_seconds"] = round(time.perf_counter() - start, 3)
        return restored, report

    def _denoise(self, image: torch.Tensor) -> tuple[torch.Tensor, dict]:
        config = self.config
        if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
            raise ZooError(f"expected a CHW image with 1, 3 or 4 channels, got shape {tuple(image.shape)}",
                           "pass RGB, greyscale or RGBA images")
        if not image.is_floating_point():
            raise ZooError(f"expected a float image in [0, 1], got {image.dtype}", "convert with .float() / 255")
        alpha = image[3:] if image.shape[0] == 4 else None
        colour = image[:3].float()
        grey = colour.shape[0] == 3 and bool((colour[0] == colour[1]).all() and (colour[0] == colour[2]).all())
        if grey:
            colour = colour[:1]  # a grey photo stored as RGB: fit one channel, copy it back
        sigma = estimate_noise_sigma(colour)  # also refuses tiny and NaN images
        report = {"noise_sigma": round(sigma * 255, 3), "tiles": 0, "stop_iteration": 0,
                  "max_stop_iteration": 0, "stopped_early": True, "stopped_fraction": 1.0, "residual": 0.0,
                  "pixel_steps": 0, "status": "clean"}
        if sigma * 255 < config.clean_sigma:
            return image, report
        if colour.shape[0] == 3:
            to_fit = torch.einsum("oc,chw->ohw", OPPONENT_FROM_RGB.to(colour.device), colour)
        else:
            to_fit = colour
        fitted, tiles_report = self._fit_tiled(to_fit, sigma)
        if colour.shape[0] == 3:
            fitted = torch.einsum("oc,ohw->chw", OPPONENT_FROM_RGB.to(colour.device), fitted)
        fitted = fitted.clamp(0, 1)
        if grey:
            fitted = fitted.expand(3, -1, -1)
        residual = math.sqrt(float(((fitted - image[:3]) ** 2).mean())) * 255
        report.update(tiles_report, residual=round(residual, 3), status="denoised")
        restored = fitted if alpha is None else torch.cat([fitted, alpha])
        return restored.detach().to(image.dtype), report

    def _fit_tiled(self, image: torch.Tensor, sigma: float) -> tuple[torch.Tensor, dict]:
        """Fit overlapping tiles of ``image`` (C, H, W) in batches and blend them back together."""
        config = self.config
        channels, height, width = image.shape
        row_starts, tile_h = tile_starts(height, config.tile_size, config.tile_overlap)
        col_starts, tile_w = tile_starts(width, config.tile_size, config.tile_overlap)
        boxes = [(top, left) for top in row_starts for left in col_starts]
        per_batch = config.tiles_per_batch or (256 if image.device.type == "cuda" else 32)
        weight = (_ramp(tile_h, config.tile_overlap, image.device)[:, None]
                  * _ramp(tile_w, config.tile_overlap, image.device)[None, :])
        total = torch.zeros_like(image)
        weight_sum = torch.zeros(1, height, width, device=image.device)
        stop_steps, stopped = [], []
        work = 0
        bar = None
        if self.progress:
            from tqdm import tqdm

            batches = math.ceil(len(boxes) / per_batch)
            bar = tqdm(total=batches * config.max_steps, desc=f"inr fit ({len(boxes)} tiles)", unit="step",
                       leave=False)
        try:
            for first in range(0, len(boxes), per_batch):
                chunk = boxes[first:first + per_batch]
                targets = torch.stack([image[:, t:t + tile_h, l:l + tile_w] for t, l in chunk])
                result = fit_tiles(targets, sigma, config, progress_bar=bar)
                for (top, left), fitted in zip(chunk, result.fitted.detach()):
                    total[:, top:top + tile_h, left:left + tile_w] += fitted * weight
                    weight_sum[:, top:top + tile_h, left:left + tile_w] += weight
                stop_steps.append(result.stop_steps)
                stopped.append(result.stopped)
                work += result.work
        finally:
            if bar is not None:
                bar.close()
        steps = torch.cat(stop_steps).float()
        stopped = torch.cat(stopped)
        report = {"tiles": len(boxes), "stop_iteration": round(float(steps.mean()), 1),
                  "max_stop_iteration": int(steps.max()), "stopped_early": bool(stopped.all()),
                  "stopped_fraction": round(float(stopped.float().mean()), 4),
                  "pixel_steps": work}
        return total / weight_sum, report


def build_inr_zeroshot(config: INRConfig | None = None) -> ZeroShotINRDenoiser:
    """A fresh ``inr-zeroshot`` model (eval mode) with ``config`` or the defaults."""
    return ZeroShotINRDenoiser(config).eval()


def config_as_dict(config: INRConfig) -> dict:
    """The config as a plain dict (for JSON reports)."""
    return asdict(config)


register(ModelCard(
    name="inr-zeroshot",
    family="inr",
    task="blind-denoise",
    variant="fourier-mlp",
    summary="zero-shot blind denoiser: fits a Fourier-feature MLP to each photo, stops at the estimated noise level",
    builder=build_inr_zeroshot,
    architecture=ZeroShotINRDenoiser,
    weights=None,
    tile=None,
    zero_shot=True,
    paper="Kim, Lee, Shin: Zero-shot Blind Image Denoising via Implicit Neural Representations, arXiv:2204.02405 (2022)",
    notes=(
        "No weights and no training data: every photo is denoised by fitting a new network to it (hundreds of Adam "
        "steps), stopped when the residual reaches the noise level estimated from the photo (Chen et al., ICCV 2015).",
        "Not exportable to ExecuTorch/Core ML/TFLite: it is a per-image optimisation with autograd, not a fixed "
        "network; use a trained denoiser (e.g. hinet) on device.",
        "Large photos are fitted in overlapping tiles of about 48x48 pixels (bounded memory: 1.6 GB for 12 "
        "megapixels); expect 4-6 minutes per megapixel on 2 CPU cores with AVX512-BF16 (about 1.7x that without "
        "bfloat16), far less on a GPU.",
        "A photo whose estimated noise sigma is below 3 (0-255 scale) is returned unchanged.",
    ),
))

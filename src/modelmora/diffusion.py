"""Text-to-image diffusion on ONNX Runtime with numpy: schedulers and the denoising loop.

A Stable-Diffusion-style artifact is three graphs (``text_encoder``, ``unet``,
``vae_decoder``, as optimum exports them) plus the pipeline's tokenizer and scheduler
configuration. This module runs them without torch: the validation gate compares it with
the diffusers PyTorch pipeline at a fixed seed and step count, the benchmark times it, and
serving runs it one denoising step at a time (so a request's progress is visible and a
cancelled one stops within a step).

Schedulers are the ones Stable Diffusion checkpoints ship, re-implemented from diffusers'
definitions: DDIM, Euler (discrete) and PNDM (PLMS, ``skip_prk_steps``). Anything else in
``scheduler_config.json`` is refused when the artifact is read, naming the setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelmora.fsutil import JsonObjectError, read_json_object

__all__ = [
    "COMPONENTS",
    "DiffusionConfig",
    "DiffusionError",
    "Generation",
    "PromptTokenizer",
    "Scheduler",
    "generate",
    "make_scheduler",
    "open_sessions",
    "prompt_embeddings",
    "to_uint8",
]

COMPONENTS = ("text_encoder", "unet", "vae_decoder")
"""The graphs of a text-to-image artifact, each ``<component>/model.onnx``."""
SCHEDULERS = ("DDIMScheduler", "EulerDiscreteScheduler", "PNDMScheduler")


class DiffusionError(ValueError):
    """An artifact or request this pipeline cannot run (the message names the setting)."""


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except JsonObjectError as exc:
        raise DiffusionError(str(exc)) from None


# -- schedulers ---------------------------------------------------------------------------
def _alphas_cumprod(cfg: Mapping[str, Any]) -> np.ndarray:
    n = int(cfg.get("num_train_timesteps", 1000))
    start, end = float(cfg.get("beta_start", 0.0001)), float(cfg.get("beta_end", 0.02))
    schedule = cfg.get("beta_schedule", "linear")
    if cfg.get("trained_betas") is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float32)
    elif schedule == "linear":
        betas = np.linspace(start, end, n, dtype=np.float32)
    elif schedule == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, n, dtype=np.float32) ** 2
    else:
        raise DiffusionError(f"beta_schedule {schedule!r} is not supported (linear, scaled_linear)")
    if cfg.get("rescale_betas_zero_snr"):
        raise DiffusionError("rescale_betas_zero_snr is not supported")
    return np.cumprod(1.0 - betas, dtype=np.float32)


def _spaced(cfg: Mapping[str, Any], steps: int, *, dtype: Any) -> np.ndarray:
    """The inference timesteps, descending (``timestep_spacing`` as diffusers defines it)."""
    n = int(cfg.get("num_train_timesteps", 1000))
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing == "linspace":
        return np.linspace(0, n - 1, steps).round()[::-1].astype(dtype)
    if spacing == "leading":
        ratio = n // steps
        return (np.arange(0, steps) * ratio).round()[::-1].astype(dtype) + int(
            cfg.get("steps_offset", 0)
        )
    if spacing == "trailing":
        return np.round(np.arange(n, 0, -n / steps)).astype(dtype) - 1
    raise DiffusionError(f"timestep_spacing {spacing!r} is not supported")


@dataclass
class Scheduler:
    """One denoising run's timesteps and update rule (a fresh one per request)."""

    cfg: Mapping[str, Any]
    steps: int
    acp: np.ndarray = field(init=False)
    timesteps: np.ndarray = field(init=False)
    init_noise_sigma: float = field(init=False, default=1.0)

    def __post_init__(self) -> None:
        self.acp = _alphas_cumprod(self.cfg)
        self.prediction = self.cfg.get("prediction_type", "epsilon")
        if self.prediction not in ("epsilon", "v_prediction"):
            raise DiffusionError(f"prediction_type {self.prediction!r} is not supported")
        self.final_acp = 1.0 if self.cfg.get("set_alpha_to_one", True) else float(self.acp[0])
        self.stride = int(self.cfg.get("num_train_timesteps", 1000)) // self.steps

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return sample

    def step(self, output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _acp(self, t: int) -> float:
        return float(self.acp[t]) if t >= 0 else self.final_acp


class DDIM(Scheduler):
    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cfg.get("clip_sample") or self.cfg.get("thresholding"):
            raise DiffusionError("DDIM with clip_sample or thresholding is not supported")
        self.timesteps = _spaced(self.cfg, self.steps, dtype=np.int64)

    def step(self, output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        t = int(self.timesteps[index])
        a_t, a_prev = self._acp(t), self._acp(t - self.stride)
        b_t = 1.0 - a_t
        if self.prediction == "epsilon":
            x0 = (sample - b_t**0.5 * output) / a_t**0.5
            eps = output
        else:
            x0 = a_t**0.5 * sample - b_t**0.5 * output
            eps = a_t**0.5 * output + b_t**0.5 * sample
        return np.asarray((a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps), dtype=np.float32)


class Euler(Scheduler):
    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
            if self.cfg.get(key):
                raise DiffusionError(f"Euler with {key} is not supported")
        if self.cfg.get("interpolation_type", "linear") != "linear":
            raise DiffusionError("Euler with interpolation_type other than linear is not supported")
        self.timesteps = _spaced(self.cfg, self.steps, dtype=np.float32)
        full = ((1 - self.acp) / self.acp) ** 0.5
        sigmas = np.interp(self.timesteps, np.arange(len(full)), full)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        top = float(self.sigmas.max())
        spacing = self.cfg.get("timestep_spacing", "leading")
        self.init_noise_sigma = top if spacing in ("linspace", "trailing") else (top**2 + 1) ** 0.5

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return np.asarray((sample / ((self.sigmas[index] ** 2 + 1) ** 0.5)), dtype=np.float32)

    def step(self, output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        sigma = self.sigmas[index]
        if self.prediction == "epsilon":
            x0 = sample - sigma * output
        else:
            x0 = output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        derivative = (sample - x0) / sigma
        return np.asarray(
            (sample + derivative * (self.sigmas[index + 1] - sigma)), dtype=np.float32
        )


class PNDM(Scheduler):
    """PLMS steps only (``skip_prk_steps``, what Stable Diffusion checkpoints set)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.cfg.get("skip_prk_steps"):
            raise DiffusionError("PNDM is supported with skip_prk_steps: true only")
        base = _spaced(self.cfg, self.steps, dtype=np.int64)[::-1]
        self.timesteps = np.concatenate([base[:-1], base[-2:-1], base[-1:]])[::-1].copy()
        self.ets: list[np.ndarray] = []
        self.counter = 0
        self.cur_sample: np.ndarray | None = None

    def step(self, output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        t = int(self.timesteps[index])
        prev_t = t - self.stride
        if self.counter != 1:
            self.ets = [*self.ets[-3:], output]
        else:
            prev_t, t = t, t + self.stride
        ets = self.ets
        if len(ets) == 1 and self.counter == 0:
            self.cur_sample = sample
        elif len(ets) == 1 and self.counter == 1:
            assert self.cur_sample is not None
            output, sample, self.cur_sample = (output + ets[-1]) / 2, self.cur_sample, None
        elif len(ets) == 2:
            output = (3 * ets[-1] - ets[-2]) / 2
        elif len(ets) == 3:
            output = (23 * ets[-1] - 16 * ets[-2] + 5 * ets[-3]) / 12
        else:
            output = (55 * ets[-1] - 59 * ets[-2] + 37 * ets[-3] - 9 * ets[-4]) / 24
        self.counter += 1
        a_t, a_prev = self._acp(t), self._acp(prev_t)
        b_t, b_prev = 1 - a_t, 1 - a_prev
        if self.prediction == "v_prediction":
            output = a_t**0.5 * output + b_t**0.5 * sample
        denominator = a_t * b_prev**0.5 + (a_t * b_t * a_prev) ** 0.5
        prev = (a_prev / a_t) ** 0.5 * sample - (a_prev - a_t) * output / denominator
        return np.asarray(prev, dtype=np.float32)


_SCHEDULERS: dict[str, type[Scheduler]] = {
    "DDIMScheduler": DDIM,
    "EulerDiscreteScheduler": Euler,
    "PNDMScheduler": PNDM,
}


def make_scheduler(cfg: Mapping[str, Any], steps: int) -> Scheduler:
    kind = str(cfg.get("_class_name", ""))
    if kind not in _SCHEDULERS:
        raise DiffusionError(
            f"scheduler {kind or '(none)'} is not supported; supported: {', '.join(SCHEDULERS)}"
        )
    if steps < 1:
        raise DiffusionError("steps must be at least 1")
    return _SCHEDULERS[kind](cfg, steps)


# -- the pipeline -------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffusionConfig:
    """What an artifact's files say about its pipeline."""

    scheduler: dict[str, Any]
    vae_scale: int
    """Pixels per latent along each side (``2 ** (len(block_out_channels) - 1)``)."""
    scaling_factor: float
    shift_factor: float
    latent_channels: int
    sample_size: int
    """The UNet's native latent side; the native image side is this × ``vae_scale``."""
    max_tokens: int
    """The text encoder's context (prompts are padded to it)."""

    @classmethod
    def read(cls, root: Path) -> DiffusionConfig:
        scheduler = _read(root / "scheduler" / "scheduler_config.json")
        make_scheduler(scheduler, 1)  # refuse an unsupported scheduler when the model is read
        vae = _read(root / "vae_decoder" / "config.json")
        unet = _read(root / "unet" / "config.json")
        tok = _read(root / "tokenizer" / "tokenizer_config.json")
        sample = unet.get("sample_size", 64)
        return cls(
            scheduler=scheduler,
            vae_scale=2 ** (len(vae.get("block_out_channels") or [0]) - 1),
            scaling_factor=float(vae.get("scaling_factor", 0.18215)),
            shift_factor=float(vae.get("shift_factor") or 0.0),
            latent_channels=int(vae.get("latent_channels", 4)),
            sample_size=int(sample[0] if isinstance(sample, list) else sample),
            max_tokens=int(tok.get("model_max_length") or 77),
        )

    @property
    def native_size(self) -> int:
        return self.sample_size * self.vae_scale


@dataclass
class Generation:
    """One request's denoising run, advanced with :meth:`step` (one UNet call each).

    ``prompt_embeds`` is ``[2, T, D]`` (unconditional, conditional) for classifier-free
    guidance, or ``[1, T, D]`` without it; ``n`` images share them.
    """

    config: DiffusionConfig
    scheduler: Scheduler
    prompt_embeds: np.ndarray
    latents: np.ndarray
    guidance: float
    done: int = 0

    @classmethod
    def start(
        cls,
        config: DiffusionConfig,
        prompt_embeds: np.ndarray,
        noise: np.ndarray,
        *,
        steps: int,
        guidance: float,
    ) -> Generation:
        """``noise`` is the unscaled initial latent noise, ``[n, C, h, w]``."""
        scheduler = make_scheduler(config.scheduler, steps)
        latents = (noise * scheduler.init_noise_sigma).astype(np.float32)
        return cls(config, scheduler, prompt_embeds.astype(np.float32), latents, guidance)

    @property
    def steps(self) -> int:
        return len(self.scheduler.timesteps)

    @property
    def finished(self) -> bool:
        return self.done >= self.steps

    def step(self, unet: Any) -> None:
        """One denoising step with the ``unet`` ORT session."""
        i, n = self.done, self.latents.shape[0]
        guided = self.prompt_embeds.shape[0] == 2
        embeds = np.repeat(self.prompt_embeds, n, axis=0)
        sample = np.concatenate([self.latents] * 2) if guided else self.latents
        sample = self.scheduler.scale_model_input(sample, i)
        t = np.asarray(self.scheduler.timesteps[i], dtype=np.float32)
        (noise,) = unet.run(
            None, {"sample": sample, "timestep": t, "encoder_hidden_states": embeds}
        )
        if guided:
            uncond, cond = noise[:n], noise[n:]
            noise = uncond + self.guidance * (cond - uncond)
        self.latents = self.scheduler.step(noise, i, self.latents)
        self.done += 1

    def decode(self, vae_decoder: Any) -> np.ndarray:
        """``[n, H, W, 3]`` float images in [0, 1] (diffusers' ``output_type="np"``)."""
        latents = self.latents / self.config.scaling_factor + self.config.shift_factor
        (image,) = vae_decoder.run(None, {"latent_sample": latents.astype(np.float32)})
        return np.asarray(np.clip(image / 2 + 0.5, 0.0, 1.0).transpose(0, 2, 3, 1), np.float32)


class PromptTokenizer:
    """The pipeline's tokenizer (``tokenizer/tokenizer.json``, ``tokenizers`` only): prompts
    padded to the text encoder's context, as diffusers pads them; a longer prompt is refused
    (diffusers would cut it silently)."""

    def __init__(self, root: Path, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        directory = root / "tokenizer"
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.max_tokens = max_tokens
        special = _read_optional(directory / "special_tokens_map.json")
        pad = special.get("pad_token") or _read_optional(directory / "tokenizer_config.json").get(
            "pad_token"
        )
        if isinstance(pad, dict):
            pad = pad.get("content")
        pad_id = self.tokenizer.token_to_id(str(pad)) if pad else None
        self.pad_id = 0 if pad_id is None else pad_id

    def encode(self, prompt: str, *, what: str = "prompt") -> np.ndarray:
        ids = self.tokenizer.encode(prompt).ids
        if len(ids) > self.max_tokens:
            raise DiffusionError(
                f"{what} has {len(ids)} tokens; the text encoder takes at most {self.max_tokens}"
            )
        return np.asarray(ids + [self.pad_id] * (self.max_tokens - len(ids)), dtype=np.int64)


def _read_optional(path: Path) -> dict[str, Any]:
    return _read(path) if path.is_file() else {}


def open_sessions(root: Path, providers: list[str], options: Any = None) -> dict[str, Any]:
    """One ONNX Runtime session per component, keyed by component name."""
    import onnxruntime as ort

    return {
        c: ort.InferenceSession(str(root / c / "model.onnx"), options, providers=providers)
        for c in COMPONENTS
    }


def generate(
    root: Path,
    sessions: Mapping[str, Any],
    prompt: str,
    noise: np.ndarray,
    *,
    steps: int,
    guidance: float = 7.5,
) -> tuple[np.ndarray, np.ndarray]:
    """A whole run: ``(final latents, images [n, H, W, 3] in [0, 1])``."""
    config = DiffusionConfig.read(root)
    tokenizer = PromptTokenizer(root, config.max_tokens)
    negative = tokenizer.encode("") if guidance > 1 else None
    embeds = prompt_embeddings(sessions["text_encoder"], tokenizer.encode(prompt), negative)
    run = Generation.start(config, embeds, noise, steps=steps, guidance=guidance)
    while not run.finished:
        run.step(sessions["unet"])
    return run.latents, run.decode(sessions["vae_decoder"])


def prompt_embeddings(
    text_encoder: Any, prompt_ids: np.ndarray, negative_ids: np.ndarray | None
) -> np.ndarray:
    """``[2, T, D]`` (negative or empty prompt first) with guidance, else ``[1, T, D]``."""
    ids = prompt_ids[None] if negative_ids is None else np.stack([negative_ids, prompt_ids])
    (hidden, *_) = text_encoder.run(None, {"input_ids": ids.astype(np.int64)})
    return np.asarray(hidden, dtype=np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """diffusers' ``numpy_to_pil`` rounding: ``(x * 255).round()``."""
    return (images * 255).round().astype(np.uint8)

"""The minimax-h3 engine: diffusers' ``MiniMaxH3ModularPipeline`` (``ref2va``) loaded once, many videos.

MiniMax-H3 makes the video and its stereo soundtrack in one pass: up to 9 reference images, labelled
``<Picture k>`` in the prompt, 24 fps. The pipeline is modular (a graph of blocks, no step callback), so
progress and stops come from blocks of ours inserted into that graph before it is built: one after each
denoising step, and one before each of the prompt encoding, reference encoding and decoding stages. The
request mapping (canvas, frame count, labels, trimming) is in :mod:`videosynth.engines.minimax_h3.plan`.

One engine process per GPU, as for wan-vace: the pipeline serves one request at a time.
"""

from __future__ import annotations

import gc
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import ComponentsManager, MiniMaxH3Blocks, MiniMaxH3ModularPipeline
from diffusers.modular_pipelines import InputParam, ModularPipelineBlocks
from diffusers.modular_pipelines.minimax_h3.references import MiniMaxH3ImageReference
from PIL import Image
from transformers.utils.import_utils import is_torchvision_available

from videosynth.engines.base import Audio, Frames, GenerationRequest, ProgressCallback, ReferenceImage
from videosynth.engines.minimax_h3 import plan
from videosynth.engines.minimax_h3.options import WATERMARK_TEXT, check, text_encoder_device
from videosynth.errors import EngineError, EngineOutOfMemory
from videosynth.media.images import load_reference
from videosynth.media.validate import decode_failure
from videosynth.media.watermark import Watermark

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
INDEX = "modular_model_index.json"
WORKFLOW = "ref2va"
# The call input our blocks read: the request's progress reporter (per call, so thread-safe).
PROGRESS_INPUT = "videosynth_progress"
# Stages reported before the block of the same position runs (the denoising loop reports its own steps).
STAGES = (("text_encoder", "encoding_prompt"), ("vae_encoder", "encoding_references"), ("decode", "decoding"))

Reporter = Callable[[int, int, str], None]


class _Interrupt(BaseException):
    """What the progress reporter raised (a stop, :class:`videosynth.errors.Canceled`), carried out of the
    pipeline. diffusers catches every ``Exception`` in its blocks to log an error traceback before raising it
    again; a stop is not an error, so it travels as a ``BaseException`` (like ``KeyboardInterrupt``) and the
    engine raises the original again once the pipeline is left."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _progress_input() -> Any:
    description = "callable(done, total, stage); raises to stop"
    return InputParam(PROGRESS_INPUT, description=description)  # type: ignore[no-untyped-call]


def _reporter(on_progress: ProgressCallback) -> Reporter:
    def report(done: int, total: int, stage: str) -> None:
        try:
            on_progress(done, total, stage)
        except Exception as exc:
            raise _Interrupt(exc) from exc

    return report


class StageStep(ModularPipelineBlocks):
    """A block that reports the start of ``stage`` (0 of 1 done); a stop raised there ends the call."""

    model_name = "minimax-h3"

    def __init__(self, stage: str) -> None:
        self.stage = stage
        super().__init__()  # type: ignore[no-untyped-call]

    @property
    def description(self) -> str:
        return f"Reports the {self.stage} stage to `{PROGRESS_INPUT}(done, total, stage)`, which may stop the call."

    @property
    def inputs(self) -> list[Any]:
        return [_progress_input()]

    def __call__(self, components: Any, state: Any) -> tuple[Any, Any]:
        report = getattr(self.get_block_state(state), PROGRESS_INPUT, None)  # type: ignore[attr-defined]
        if report is not None:
            report(0, 1, self.stage)
        return components, state


class DenoisingStep(ModularPipelineBlocks):
    """The last block of each denoising iteration: reports ``step`` of ``total`` (transformer evaluations,
    ``steps - 1``); a stop raised there ends the loop before the next step and before any decoding."""

    model_name = "minimax-h3"

    @property
    def description(self) -> str:
        return f"Reports each finished denoising step to `{PROGRESS_INPUT}`, which may stop the loop."

    @property
    def inputs(self) -> list[Any]:
        return [_progress_input()]

    def __call__(self, components: Any, block_state: Any, i: int, t: Any) -> tuple[Any, Any]:
        report = getattr(block_state, PROGRESS_INPUT, None)
        if report is not None:
            report(i + 1, len(block_state.timesteps), "denoising")
        return components, block_state


def build_blocks() -> Any:
    """MiniMax-H3's blocks with ours inserted: they must be in place before the pipeline is built, which
    prunes (copies) the graph to the ``ref2va`` workflow."""
    blocks: Any = MiniMaxH3Blocks()  # type: ignore[no-untyped-call]
    loop = blocks.sub_blocks["denoise"].sub_blocks[WORKFLOW].sub_blocks["denoise"]
    loop.sub_blocks.insert("report_step", DenoisingStep(), len(loop.sub_blocks))  # type: ignore[no-untyped-call]
    loop.set_progress_bar_config(disable=True)
    for before, stage in STAGES:
        position = list(blocks.sub_blocks).index(before)
        blocks.sub_blocks.insert(f"report_{stage}", StageStep(stage), position)
    return blocks


class H3Pipeline(MiniMaxH3ModularPipeline):
    """``MiniMaxH3ModularPipeline`` taking every request duration (3 to 15 s: 73 to 362 frames), and, when
    the text encoder lives on a device of its own, running everything else on ``main_device``."""

    main_device: torch.device | None = None

    @property
    def min_duration(self) -> float:
        return plan.duration_bounds()[0]

    @property
    def max_duration(self) -> float:
        return plan.duration_bounds()[1]

    @property
    def _execution_device(self) -> torch.device:
        # diffusers takes the first component's device, which is the text encoder's.
        if self.main_device is not None:
            return self.main_device
        device: torch.device = super()._execution_device  # type: ignore[misc]
        return device


@contextmanager
def _quiet_weight_norm() -> Iterator[None]:
    # The audio VAE's weight_norm layers warn once per layer at every load (torch deprecated the function,
    # diffusers 0.42.1 still uses it); nothing here can act on it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        yield


def load_pipeline(model_dir: Path, dtype: torch.dtype, manager: Any = None) -> Any:
    """The ``ref2va`` pipeline of a diffusers modular directory, from local files only, every component
    loaded (``load_components`` only logs a component it cannot load: a missing one is an EngineError)."""
    if not (model_dir / INDEX).is_file():
        raise EngineError(
            f"model_dir {model_dir} has no {INDEX}: it must be a diffusers modular layout"
            " (MiniMaxAI/MiniMax-H3 downloaded beforehand, or what save_pretrained writes)"
        )
    try:
        pipe: Any = H3Pipeline(  # type: ignore[no-untyped-call]
            blocks=build_blocks(),
            pretrained_model_name_or_path=str(model_dir),
            components_manager=manager,
            workflow=WORKFLOW,
            local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read the pipeline in {model_dir}: {exc}") from exc
    names = list(pipe.pretrained_component_names)
    with _quiet_weight_norm():
        if "processor" in names and not is_torchvision_available():
            names.remove("processor")
            _load_image_only_processor(pipe)
        pipe.load_components(names=names, dtype=dtype)
    missing = [name for name in pipe.pretrained_component_names if getattr(pipe, name, None) is None]
    if missing:
        raise EngineError(
            f"model_dir {model_dir}: cannot load {', '.join(missing)} (missing or unreadable; the log has why)"
        )
    return pipe


def _load_image_only_processor(pipe: Any) -> None:
    """Qwen3VLProcessor needs torchvision (for videos, which the engine never sends): without it, load the
    same files as images and text only."""
    from videosynth.engines.minimax_h3.compat import ImageOnlyQwen3VLProcessor

    spec = pipe.get_component_spec("processor")
    try:
        processor = ImageOnlyQwen3VLProcessor.from_pretrained(
            spec.pretrained_model_name_or_path, subfolder=spec.subfolder or "", local_files_only=True
        )
    except (OSError, ValueError, TypeError) as exc:
        log.warning("minimax-h3: cannot load the processor: %s", exc)
        return
    pipe.update_components(processor=processor)


def fuse_lora(pipe: Any, path: Path, scale: float) -> None:
    """Fuse a LoRA (a turbo one) into ``transformer_ref``, the partition ``ref2va`` denoises with: no
    per-step cost."""
    if not path.exists():
        raise EngineError(f"lora_path {path} does not exist")
    source = path.parent if path.is_file() else path
    weight_name = path.name if path.is_file() else None
    try:
        pipe.load_lora_weights(
            str(source),
            weight_name=weight_name,
            adapter_name="turbo",
            load_into_transformer_ref=True,
            local_files_only=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise EngineError(f"cannot load the LoRA {path}: {exc}") from exc
    if "turbo" not in getattr(pipe.transformer_ref, "peft_config", {}):
        # the loader only warns about a file with no layer it recognises
        raise EngineError(f"the LoRA {path} has no layers for MiniMax-H3's transformer")
    pipe.fuse_lora(lora_scale=scale, components=["transformer_ref"])
    pipe.unload_lora_weights()


class MiniMaxH3Engine:
    """:class:`videosynth.engines.base.FrameEngine` running MiniMax-H3 reference-to-video-and-audio."""

    name = "minimax-h3"

    def __init__(
        self,
        *,
        model_dir: str,
        steps: int = 50,
        max_area: int = 0,
        flow_shift: float = 0.0,
        audio_flow_shift: float = 0.0,
        lora_path: str = "",
        lora_scale: float = 1.0,
        offload: str = "none",
        device: str = "cuda",
        dtype: str = "bfloat16",
        cpu_threads: int = 0,
        watermark_text: str = WATERMARK_TEXT,
        pipeline_factory: Callable[[Any], Any] | None = None,
    ) -> None:
        """``pipeline_factory(manager)``: builds the pipeline instead of loading ``model_dir`` (the GPU bench
        builds full-size random weights in memory; a models file cannot pass it). ``manager`` is the
        ``ComponentsManager`` the pipeline must be built with (``offload = "model"``), or None."""
        values = dict(locals())
        del values["self"], values["pipeline_factory"]
        check(values)
        self.steps, self.max_area = steps, max_area
        self.watermark_text = watermark_text
        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.device = torch.device(device)
        other = text_encoder_device(offload)
        for wanted in (self.device, torch.device(other or device)):
            if wanted.type == "cuda" and not torch.cuda.is_available():
                raise EngineError(
                    'no CUDA device here; minimax-h3 needs one (device = "cpu" runs it, slowly)'
                )
        manager: Any = ComponentsManager() if offload == "model" else None  # type: ignore[no-untyped-call]
        self.pipe = (
            pipeline_factory(manager)
            if pipeline_factory is not None
            else load_pipeline(Path(model_dir), DTYPES[dtype], manager)
        )
        if flow_shift:
            self.pipe.update_components(scheduler=_shifted(self.pipe.scheduler, flow_shift))
        if audio_flow_shift:
            self.pipe.update_components(audio_scheduler=_shifted(self.pipe.audio_scheduler, audio_flow_shift))
        if lora_path:
            fuse_lora(self.pipe, Path(lora_path), lora_scale)
        if manager is not None:
            manager.enable_auto_cpu_offload(device=self.device)
        elif other is None:
            self.pipe.to(self.device)
        else:
            _place_text_encoder_apart(self.pipe, self.device, torch.device(other))

    @property
    def canvas(self) -> tuple[int, int]:
        """The checkpoint's canvas: ``(short edge, max pixels)``."""
        config = self.pipe.config
        return int(config.canvas_short_edge), int(config.canvas_max_pixels)

    def warm_up(self) -> None:
        """One step of the shortest video on the smallest canvas: the kernels, the text encoder and both
        VAEs run once before a task."""
        reference = MiniMaxH3ImageReference(image=Image.new("RGB", (64, 64), (128, 128, 128)))
        self.pipe(
            prompt="<Picture 1> warms up.",
            references=[reference],
            num_frames=plan.MIN_FRAMES,
            height=plan.CANVAS_MULTIPLE,
            width=plan.CANVAS_MULTIPLE,
            num_inference_steps=2,
            output_type="pt",
        )

    def frames(self, request: GenerationRequest, on_progress: ProgressCallback) -> Frames:
        """Generate ``request``'s video and soundtrack, then hand the frames to the encoder at the request's
        size. Progress: ``encoding_prompt``, ``encoding_references``, ``denoising`` per step, ``decoding``;
        a stop raised by ``on_progress`` ends the work within one step.

        Running out of accelerator memory is :class:`EngineOutOfMemory`, after the memory is freed, so the
        next task runs in the same process."""
        out_of_memory = False
        try:
            video, audio, sample_rate = self._generate(request, on_progress)
        except torch.OutOfMemoryError:
            out_of_memory = True
        except RuntimeError as exc:
            if "can't allocate memory" not in str(exc):  # the CPU allocator's way of saying the same
                raise
            out_of_memory = True
        if out_of_memory:  # outside the handler: the traceback's frames, holding the tensors, are gone
            self._free_memory()
            raise EngineOutOfMemory(
                f"The GPU ran out of memory for {request.resolution} {request.ratio}, {request.duration} s,"
                f" {len(request.references)} reference images; try a shorter duration or fewer reference images."
            )
        watermark = (
            Watermark(request.width, request.height, self.watermark_text) if request.watermark else None
        )
        samples = plan.trim_audio(audio, plan.audio_samples(request.duration, sample_rate))
        return Frames(
            plan.output_frames(video, request.width, request.height, request.num_frames, watermark),
            audio=Audio(samples=samples, sample_rate=sample_rate),
        )

    def _generate(
        self, request: GenerationRequest, on_progress: ProgressCallback
    ) -> tuple[np.ndarray, np.ndarray, int]:
        references = sorted(request.references, key=lambda ref: ref.index)
        if [ref.index for ref in references] != list(range(1, len(references) + 1)):
            raise EngineError(
                f"reference indices must be 1..{len(references)}, got {[r.index for r in references]}"
            )
        if not 1 <= len(references) <= plan.MAX_REFERENCES:
            raise EngineError(
                f"minimax-h3 takes 1 to {plan.MAX_REFERENCES} reference images, got {len(references)}"
            )
        short_edge, max_pixels = self.canvas
        width, height = plan.canvas_size(request.width, request.height, short_edge, max_pixels, self.max_area)
        num_frames = plan.model_frames(request.num_frames)
        reference_edge = int(self.pipe.config.reference_image_short_edge)
        images = [MiniMaxH3ImageReference(image=_reference_image(ref, reference_edge)) for ref in references]
        log.info(
            "minimax-h3: %dx%d, %d frames, %d steps, %d references",
            width, height, num_frames, self.steps, len(images),
        )  # fmt: skip
        try:
            state = self.pipe(
                prompt=plan.rewrite_prompt(request.prompt, len(references)),
                references=images,
                num_frames=num_frames,
                height=height,
                width=width,
                num_inference_steps=self.steps,
                generator=torch.Generator("cpu").manual_seed(request.seed),
                output_type="pt",
                **{PROGRESS_INPUT: _reporter(on_progress)},
            )
        except _Interrupt as stop:
            raise stop.error from None
        except ValueError as exc:  # the pipeline's own checks of its inputs
            raise EngineError(f"minimax-h3 cannot make this video: {exc}") from exc
        videos, audio = state.get("videos"), state.get("audio")
        # (1, frames, 3, h, w) in [0, 1] -> uint8 (frames, h, w, 3), on the device, only the frames kept
        pixels = (videos[0, : request.num_frames].clamp(0, 1) * 255).round().to(torch.uint8)
        video = pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        waveform = audio[0].float().cpu().numpy()
        on_progress(1, 1, "decoding")
        return video, waveform, int(state.get("sampling_rate"))

    def _free_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            log.warning(
                "minimax-h3: out of GPU memory; %.1f GiB still allocated after freeing",
                torch.cuda.memory_allocated(self.device) / 2**30,
            )


def _shifted(scheduler: Any, shift: float) -> Any:
    return type(scheduler).from_config(scheduler.config, shift=shift)


def _place_text_encoder_apart(pipe: Any, device: torch.device, text_device: torch.device) -> None:
    """The Qwen3-VL conditioner on ``text_device``, everything else on ``device`` (each moved once from the
    CPU: two 60 GB models never meet on one card)."""
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            component.to(text_device if name == "text_encoder" else device)
    pipe.main_device = device

    # The blocks hand the conditioner its inputs on the main device (and move its output back there).
    def to_text_device(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        def move(value: Any) -> Any:
            return value.to(text_device) if isinstance(value, torch.Tensor) else value

        return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}

    pipe.text_encoder.model.register_forward_pre_hook(to_text_device, with_kwargs=True)


def _reference_image(ref: ReferenceImage, short_edge: int) -> Image.Image:
    try:
        pixels = load_reference(ref.path, *plan.reference_box(ref.width, ref.height, short_edge))
    except MemoryError:
        raise
    except Exception as exc:  # the worker checked the header only; bad pixel data shows up here
        raise decode_failure(ref.format, ref.width, ref.height, exc, index=ref.index) from exc
    return Image.fromarray(plan.fit_reference_aspect(pixels))

"""A tiny random MiniMax-H3 ``ref2va`` pipeline, built offline from configs and saved like real weights.

Every component is built from a config (``shared/reference/minimax-h3.md``, section 2 and its appendix): a
byte-level tokenizer with the four Qwen vision tokens, a Qwen3-VL conditioner with the 51 text layers the
blocks need (they read ``hidden_states[50]``), and a transformer, video VAE and audio VAE that keep the
released geometry (16x spatial and 4x temporal compression with 17-frame chunks, so ``17n + 5`` frames and
32-pixel canvases; 32 kHz audio at 40 latents a second) with tiny widths. ``save_pretrained`` writes the
layout of the released repository (``modular_model_index.json`` and one folder per component), so the
engine loads it through the production code path.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLMiniMaxH3,
    AutoencoderKLMiniMaxH3Audio,
    MiniMaxH3Blocks,
    MiniMaxH3ModularPipeline,
    MiniMaxH3Scheduler,
    MiniMaxH3Transformer3DModel,
)
from tokenizers import pre_tokenizers
from transformers import (
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from videosynth.engines.minimax_h3.compat import ImageOnlyQwen3VLProcessor

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
# The pipeline configs saved in modular_model_index.json: a 32x32 (1:1) to 32x64 canvas, small references.
CANVAS_SHORT_EDGE, CANVAS_MAX_PIXELS, REFERENCE_SHORT_EDGE = 32, 32 * 64, 64
# The released repository names the stock processor; the saved one names the class that saved it.
PROCESSOR = ["transformers", "Qwen3VLProcessor"]


def tiny_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE without merges (every byte is a token) plus the vision tokens the blocks look up."""
    vocab = {"<|endoftext|>": 0}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    return tokenizer


def _text_encoder(tokenizer: Qwen2Tokenizer) -> Qwen3VLForConditionalGeneration:
    start, end, image_pad, video_pad = tokenizer.convert_tokens_to_ids(VISION_TOKENS)
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=51,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                             "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4, temporal_patch_size=2,
            spatial_merge_size=2, out_hidden_size=32, num_position_embeddings=64, deepstack_visual_indexes=[1],
        ),
        image_token_id=image_pad, video_token_id=video_pad, vision_start_token_id=start,
        vision_end_token_id=end,
    )  # fmt: skip
    return Qwen3VLForConditionalGeneration(config).eval()


def _transformer() -> MiniMaxH3Transformer3DModel:
    return MiniMaxH3Transformer3DModel(
        num_attention_heads=2, attention_head_dim=16, hidden_size=32, num_layers=2, num_refiner_layers=1,
        ffn_dim=64, in_channels=4, audio_in_channels=8, patch_size=(1, 2, 2), text_dim=32, freq_dim=32,
        time_embed_hidden_dim=32, time_embed_dim=16, rope_freq_dim=2,
    )  # fmt: skip


def build_tiny_pipeline(path: Path, seed: int = 0) -> Path:
    """Build the tiny pipeline with random weights and save it to ``path`` (replaced); returns ``path``."""
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=4, merge_size=2, temporal_patch_size=2, size={"shortest_edge": 256, "longest_edge": 1024}
    )
    transformer_ref = _transformer()
    vae = AutoencoderKLMiniMaxH3(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        spatial_downsample_factors=(2, 2, 2, 2), temporal_downsample_factors=(1, 2, 2, 1), norm_num_groups=4,
        decoder_num_layers=1, decoder_num_attention_heads=2, decoder_attention_head_dim=8,
        decoder_num_register_tokens=1, decoder_ffn_mult=2, latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    )  # fmt: skip
    with warnings.catch_warnings():  # its weight_norm layers use the deprecated torch function
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning)
        audio_vae = AutoencoderKLMiniMaxH3Audio(
            encoder_dim=2, encoder_rates=(2, 4, 4, 5, 5), latent_dim=16, latent_channels=8,
            num_attention_heads=2, decoder_dim=128, decoder_rates=(5, 5, 2, 2, 2, 2, 2),
            decoder_kernel_sizes=(9, 9, 4, 4, 4, 4, 4), resblock_kernel_sizes=(3,),
            resblock_dilation_sizes=((1,),), sampling_rate=32000, latents_mean=[0.0] * 8, latents_std=[1.0] * 8,
        )  # fmt: skip
    pipe = MiniMaxH3ModularPipeline(blocks=MiniMaxH3Blocks())
    pipe.update_components(
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        processor=ImageOnlyQwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer),
        transformer_ref=transformer_ref,
        vae=vae,
        audio_vae=audio_vae,
        scheduler=MiniMaxH3Scheduler(shift=12.0),
        audio_scheduler=MiniMaxH3Scheduler(shift=3.0),
        canvas_short_edge=CANVAS_SHORT_EDGE,
        canvas_max_pixels=CANVAS_MAX_PIXELS,
        reference_image_short_edge=REFERENCE_SHORT_EDGE,
    )
    shutil.rmtree(path, ignore_errors=True)
    pipe.save_pretrained(str(path), overwrite_modular_index=True)
    _name_the_stock_processor(path)
    return path


def _name_the_stock_processor(path: Path) -> None:
    index_path = path / "modular_model_index.json"
    index = json.loads(index_path.read_text())
    index["processor"][0:2] = PROCESSOR
    index["processor"][2]["type_hint"] = PROCESSOR
    index_path.write_text(json.dumps(index, indent=2))
    for name in ("processor_config.json", "tokenizer_config.json"):
        config_path = path / "processor" / name
        config = json.loads(config_path.read_text())
        config["processor_class"] = PROCESSOR[1]
        config_path.write_text(json.dumps(config, indent=2))


def save_lora(directory: Path, seed: int = 1, rank: int = 4) -> Path:
    """A random LoRA on the transformer's attention projections, saved as published H3 LoRAs are: for the
    ``transformer.`` partition (the engine loads it into ``transformer_ref``)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer = _transformer()
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    )
    MiniMaxH3ModularPipeline.save_lora_weights(
        directory, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return directory / "pytorch_lora_weights.safetensors"

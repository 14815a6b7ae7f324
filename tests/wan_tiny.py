"""A tiny random Wan VACE pipeline, built offline from configs and saved like real weights.

The component configs are diffusers' own test configs (``tests/pipelines/wan/test_wan_vace.py``); the text
encoder and tokenizer, which those tests download, are built here from a config and a word list
(``shared/reference/engines.md`` section 2.4). ``save_pretrained`` writes the same layout as a real
``*-diffusers`` weights directory, so the engine loads it through the production code path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

WORDS = (
    "a the cat dog man woman girl reference image 1 2 3 4 5 6 7 8 9 [ ] , . walks runs in on with and park "
    "beach street fan red close-up wide shot 参考图"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in WORDS.split():
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=512,
    )


def _transformer() -> WanVACETransformer3DModel:
    return WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96,
    )  # fmt: skip


def build_pipeline(seed: int = 0, two_experts: bool = False) -> WanVACEPipeline:
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=64, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        )
    )  # fmt: skip
    torch.manual_seed(seed)
    transformer = _transformer()
    transformer_2 = _transformer() if two_experts else None
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    return WanVACEPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        transformer_2=transformer_2,
        boundary_ratio=0.9 if two_experts else None,
    )


def save_pipeline(directory: Path, seed: int = 0, two_experts: bool = False) -> Path:
    build_pipeline(seed, two_experts).save_pretrained(directory)
    return directory


def save_lora(directory: Path, seed: int = 1, rank: int = 4) -> Path:
    """A random LoRA on the transformer's attention projections, saved as diffusers saves trained ones."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    transformer = _transformer()
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    transformer.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    )
    WanVACEPipeline.save_lora_weights(
        directory, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return directory / "pytorch_lora_weights.safetensors"

"""A tiny random StableDiffusionPipeline saved like a real one (model_index.json, safetensors, tokenizer).

Built from small configs (the `get_dummy_components()` pattern of diffusers' own tests): a CLIP text
encoder, a two-block UNet, a two-block VAE, a DDIM scheduler and a BPE tokenizer trained in-process
with CLIP's start/end markers and a 77-token limit. Its images are meaningless; it exercises the real
loading, tokenizing, batching and denoising code on a CPU in about a second.
"""

from __future__ import annotations

from pathlib import Path

SENTENCES = [
    "a portrait of a woman in soft window light, muted colours",
    "a teal landscape with mountains at sunset, film grain",
    "street photography at night, neon signs, high contrast",
    "a striped cat on a polka dot blanket, pastel tones",
    "architecture of a gothic cathedral, dramatic shadows",
] * 4
START, END, PAD = "<|startoftext|>", "<|endoftext|>", "<pad>"


def save_tiny_sd(folder: Path, *, seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=PAD))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[START, END, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(SENTENCES, trainer)
    bpe.decoder = decoders.ByteLevel()
    start_id, end_id = bpe.token_to_id(START), bpe.token_to_id(END)
    bpe.post_processor = processors.TemplateProcessing(single=f"{START} $A {END}",
                                                       special_tokens=[(START, start_id), (END, end_id)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=START, eos_token=END, pad_token=PAD,
                                        unk_token=PAD, model_max_length=77)

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, bos_token_id=start_id, eos_token_id=end_id, pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=2)
    vae = AutoencoderKL(
        block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    folder.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder

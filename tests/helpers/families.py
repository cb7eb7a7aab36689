"""Tiny random instances of the model families transformers ships, built from their config classes (no download).

Each family gets the same small sizes under its own argument names; a few get the feature that
makes them differ from Llama (a sliding window, a logits scale, a soft-cap, an attention chunk).
"""

from __future__ import annotations

import torch
import transformers

VOCAB = 48
HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE, POSITIONS = 32, 2, 4, 2, 64, 128

LLAMA_LIKE = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": INTERMEDIATE,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "max_position_embeddings": POSITIONS,
}
MOE = {"num_local_experts": 4, "num_experts_per_tok": 2}
GEMMA = {**LLAMA_LIKE, "head_dim": 8}

# family: (config class, model class, config arguments)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", LLAMA_LIKE),
    "mistral_sliding_window": ("MistralConfig", "MistralForCausalLM", {**LLAMA_LIKE, "sliding_window": 20}),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {**LLAMA_LIKE, **MOE}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", LLAMA_LIKE),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**LLAMA_LIKE, "head_dim": 8}),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {**LLAMA_LIKE, "head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    ),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", GEMMA),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {**GEMMA, "sliding_window": 12}),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {**GEMMA, "sliding_window": 12, "final_logit_softcapping": 5.0},
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**LLAMA_LIKE, "pad_token_id": 0}),
    "phi": ("PhiConfig", "PhiForCausalLM", LLAMA_LIKE),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"vocab_size": VOCAB, "n_embd": HIDDEN, "n_layer": LAYERS, "n_head": HEADS},
    ),
    "gpt_neox_pythia": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {k: v for k, v in LLAMA_LIKE.items() if k != "num_key_value_heads"},
    ),
    "opt": (
        "OPTConfig",
        "OPTForCausalLM",
        {
            "vocab_size": VOCAB,
            "hidden_size": HIDDEN,
            "ffn_dim": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "word_embed_proj_dim": HIDDEN,
            "max_position_embeddings": POSITIONS,
        },
    ),
    "falcon": (
        "FalconConfig",
        "FalconForCausalLM",
        {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS},
    ),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {**LLAMA_LIKE, "logits_scaling": 8.0}),
    "granite_moe": (
        "GraniteMoeConfig",
        "GraniteMoeForCausalLM",
        {**LLAMA_LIKE, **MOE, "logits_scaling": 8.0},
    ),
    "cohere": ("CohereConfig", "CohereForCausalLM", {**LLAMA_LIKE, "logit_scale": 0.25}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", LLAMA_LIKE),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", LLAMA_LIKE),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", {**LLAMA_LIKE, "sliding_window": 24}),
    "bloom": (
        "BloomConfig",
        "BloomForCausalLM",
        {"vocab_size": VOCAB, "hidden_size": HIDDEN, "n_layer": LAYERS, "n_head": HEADS},
    ),
    "gpt_neo_local": (
        "GPTNeoConfig",
        "GPTNeoForCausalLM",
        {
            "vocab_size": VOCAB,
            "hidden_size": HIDDEN,
            "num_layers": LAYERS,
            "num_heads": HEADS,
            "attention_types": [[["global", "local"], 1]],
            "window_size": 10,
            "max_position_embeddings": POSITIONS,
        },
    ),
    "llama4_chunked": (
        "Llama4TextConfig",
        "Llama4ForCausalLM",
        {**LLAMA_LIKE, "head_dim": 8, "attention_chunk_size": 12, "intermediate_size_mlp": INTERMEDIATE},
    ),
}


def build(family: str, attention: str = "sdpa", seed: int = 0) -> torch.nn.Module:
    """A tiny random ``family`` model in eval mode, in float32, with the given attention implementation."""
    config_name, model_name, arguments = FAMILIES[family]
    config = getattr(transformers, config_name)(**arguments)
    config._attn_implementation = attention
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).float().eval()
    with torch.no_grad():  # peaked next-token distributions, so log-probs and KLs are not all alike
        model.get_input_embeddings().weight.mul_(4.0)
    return model

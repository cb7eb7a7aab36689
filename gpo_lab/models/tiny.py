"""Tiny randomly initialised models built in code, sized for CPU tests and the embedded default."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, T5Config, T5ForConditionalGeneration


def tiny_causal_lm(
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """A randomly initialised Llama-style model sized for CPU tests (initialised from the global seed)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        attention_dropout=0.0,
    )
    config._attn_implementation = attn_implementation
    return LlamaForCausalLM(config)


def tiny_seq2seq_lm(
    tokenizer,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    d_ff: int | None = None,
    relative_attention_num_buckets: int = 32,
    attn_implementation: str = "eager",
) -> PreTrainedModel:
    """A randomly initialised T5 sized for CPU tests (initialised from the global seed).

    Eager attention by default: on CPU, SDPA picks different kernels with and without autograd,
    so the policy and its frozen copy would differ in the last bits at step 0.
    """
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff or 4 * d_model,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        relative_attention_num_buckets=relative_attention_num_buckets,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    config._attn_implementation = attn_implementation
    return T5ForConditionalGeneration(config)

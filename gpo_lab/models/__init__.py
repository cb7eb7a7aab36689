"""Models: the policy (Hugging Face, tiny built in code, GGUF, LoRA), tokenizers, and the frozen
reference with its log-prob cache."""

from gpo_lab.models.hf import DTYPES, disable_dropout, hf_causal_lm, hf_seq2seq_lm, hf_tokenizer
from gpo_lab.models.tiny import tiny_causal_lm, tiny_seq2seq_lm

__all__ = [
    "DTYPES",
    "disable_dropout",
    "hf_causal_lm",
    "hf_seq2seq_lm",
    "hf_tokenizer",
    "tiny_causal_lm",
    "tiny_seq2seq_lm",
]

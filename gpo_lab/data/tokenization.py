"""From (prompt, chosen, rejected) to token ids, with the truncation policy of the common trainers.

The prompt is cut from the left (its end, next to the response, matters most) to
``max_prompt_length``; responses are cut from the right so prompt + response fits ``max_length``.
A response with no tokens left is not a preference: the pair is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gpo_lab.errors import ConfigError

Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class Truncation:
    max_length: int = 512
    max_prompt_length: int | None = 256

    def __post_init__(self):
        if self.max_length < 2:
            raise ConfigError(f"data.max_length must be >= 2, got {self.max_length}.")
        if self.max_prompt_length is not None and not 1 <= self.max_prompt_length < self.max_length:
            raise ConfigError(
                f"data.max_prompt_length={self.max_prompt_length} must be >= 1 and below "
                f"data.max_length={self.max_length}, to leave room for a response."
            )


def is_conversation(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value)


def render_texts(prompt: Any, chosen: Any, rejected: Any, tokenizer) -> tuple[str, str, str]:
    """Plain strings pass through; conversations go through the tokenizer's chat template.

    A response given as messages (or as one message dict) is rendered after the prompt and the
    prompt's rendering is cut off, which keeps the template's own separators exact.
    """
    if not (is_conversation(prompt) or is_conversation(chosen) or isinstance(chosen, dict)):
        return prompt, chosen, rejected
    messages = prompt if is_conversation(prompt) else [{"role": "user", "content": prompt}]
    prompt_text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def response_text(response: Any) -> str:
        if isinstance(response, str):
            return response
        turns = [response] if isinstance(response, dict) else response
        full = tokenizer.apply_chat_template(messages + list(turns), tokenize=False)
        if not full.startswith(prompt_text):
            raise ValueError("The chat template does not render the prompt as a prefix of prompt + response.")
        return full[len(prompt_text) :]

    return prompt_text, response_text(chosen), response_text(rejected)


def prompt_start_token(tokenizer) -> tuple[int, bool]:
    """The token a prompt starts with, and whether every prompt gets it or only an empty one.

    Models trained with BOS (Llama) expect it in front of every prompt; for the others (GPT-2,
    T5) it is only needed so that an empty prompt still predicts the first response token.
    """
    ids = tokenizer("a")["input_ids"]
    bos = tokenizer.bos_token_id
    always = bos is not None and bool(ids) and ids[0] == bos
    return (bos if bos is not None else tokenizer.eos_token_id), always


def encode_pair(
    prompt: str, chosen: str, rejected: str, tokenizer, truncation: Truncation, start: tuple[int, bool]
) -> dict | None:
    """Token ids of a pair after truncation, or None when a response ends up empty."""
    return encode_pairs([prompt], [chosen], [rejected], tokenizer, truncation, start)[0]


def encode_pairs(
    prompts: list[str],
    chosen: list[str],
    rejected: list[str],
    tokenizer,
    truncation: Truncation,
    start: tuple[int, bool],
) -> list[dict | None]:
    """:func:`encode_pair` of every pair, with one tokenizer call per column (the fast tokenizers
    encode a list at once, several times faster than text by text)."""
    start_id, always = start
    prompt_ids = []
    for ids in _token_ids(tokenizer, prompts):
        if not ids or (always and ids[0] != start_id):
            ids = [start_id, *ids]
        prompt_ids.append(ids[-truncation.max_prompt_length :] if truncation.max_prompt_length is not None else ids)
    return encode_responses(prompt_ids, chosen, rejected, tokenizer, truncation)


def encode_responses(
    prompt_ids: list[list[int]], chosen: list[str], rejected: list[str], tokenizer, truncation: Truncation
) -> list[dict | None]:
    """Pairs of response texts on encoded prompts: EOS appended, cut to what ``truncation.max_length``
    leaves after the prompt; None where a response is empty or has no room. Offline pairs
    (:func:`encode_pairs`) and the pairs drawn online are encoded by this one function."""
    eos, encoded = tokenizer.eos_token_id, []
    for prompt, chosen_ids, rejected_ids in zip(
        prompt_ids, _token_ids(tokenizer, chosen), _token_ids(tokenizer, rejected)
    ):
        budget = truncation.max_length - len(prompt)
        if not chosen_ids or not rejected_ids or budget < 1:
            encoded.append(None)
            continue
        encoded.append(
            {
                "prompt_ids": list(prompt),
                "chosen_ids": (chosen_ids + [eos])[:budget],
                "rejected_ids": (rejected_ids + [eos])[:budget],
            }
        )
    return encoded


def _token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

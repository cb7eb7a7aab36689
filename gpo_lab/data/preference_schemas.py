"""Published preference-data schemas, each mapped onto prompt/chosen/rejected by its adapter.

An adapter takes a raw ``datasets.Dataset`` and returns one with exactly the columns ``prompt``,
``chosen`` and ``rejected``, holding text or chat messages (``[{"role": ..., "content": ...}]``;
a response in messages form is the assistant turn(s) that follow the prompt). Which adapter a
dataset gets, by name or from its columns, is :mod:`gpo_lab.data.formats`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import datasets

from gpo_lab.data.sources import DataError

# The summarize-from-feedback query format of OpenAI's release, as cleanrl's TL;DR SFT models
# were trained on it and as TRL builds trl-lib/tldr-preference.
TLDR_TEMPLATE = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
CNNDM_TEMPLATE = "Article:\n{article}\n\nTL;DR:"
# The Alpaca prompt (also that of the instruction data of LLMs-from-scratch, chapter 7).
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)
ALPACA_RESPONSE = "\n\n### Response:\n"
HH_HUMAN, HH_ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "content" in m for m in value)


def _convert(data: datasets.Dataset, row_fn: Callable[[dict, int], dict], name: str) -> datasets.Dataset:
    """Map every row through ``row_fn(row, index)``, keeping only prompt/chosen/rejected."""
    return data.map(row_fn, with_indices=True, remove_columns=data.column_names, desc=f"format {name}")


def _text(value: Any, field: str, index: int, schema: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{schema}: row {index} has {type(value).__name__} in {field!r}; expected text.")
    return value


# ----------------------------------------------------------------------------- TL;DR
def tldr_comparisons(
    data: datasets.Dataset,
    template: str = TLDR_TEMPLATE,
    include_cnndm: bool = False,
    collapse_blank_lines: bool = False,
) -> datasets.Dataset:
    """OpenAI's summarize-from-feedback comparisons: ``info`` {post, title, subreddit, ...},
    ``summaries`` [{text, ...}, {text, ...}] and ``choice`` (the index of the preferred summary).

    The prompt is ``template`` filled from ``info``; each response is its summary with exactly one
    leading space (the summaries follow "TL;DR:"). Rows without a Reddit post (the CNN/DM articles
    of the validation split) are dropped unless ``include_cnndm``, which formats them as
    "Article:\\n{article}\\n\\nTL;DR:". ``collapse_blank_lines`` turns the post's blank lines into
    single newlines, as trl-lib/tldr-preference does (cleanrl's SFT data keeps them).
    """
    if not include_cnndm:
        data = data.filter(
            lambda info: bool(info) and info.get("post") is not None, input_columns="info", desc="keep Reddit posts"
        )

    def row_fn(row: dict, index: int) -> dict:
        info, summaries, choice = row["info"] or {}, row["summaries"] or [], row["choice"]
        if choice not in (0, 1) or len(summaries) != 2:
            raise DataError(
                f"tldr_comparisons: row {index} has choice={choice!r} and {len(summaries)} summaries; "
                "a comparison has two summaries and a choice of 0 or 1."
            )
        if info.get("post") is None:
            article = _text(info.get("article"), "info.article", index, "tldr_comparisons")
            prompt = CNNDM_TEMPLATE.format(article=article)
        else:
            post = info["post"].replace("\n\n", "\n") if collapse_blank_lines else info["post"]
            prompt = template.format(subreddit=info.get("subreddit"), title=info.get("title"), post=post)
        texts = [" " + _text(s.get("text"), "summaries.text", index, "tldr_comparisons").strip() for s in summaries]
        return {"prompt": prompt, "chosen": texts[choice], "rejected": texts[1 - choice]}

    return _convert(data, row_fn, "tldr_comparisons")


# ----------------------------------------------------------------------------- implicit prompt (HH-RLHF)
def split_transcripts(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen response, rejected response) of two full transcripts.

    The prompt is their common prefix, cut back to the end of its last "\\n\\nAssistant:"; the
    responses are what follows it (they keep their leading space, as the tokenizers expect).
    """
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    end = chosen.rfind(HH_ASSISTANT, 0, common)
    if end < 0:
        return "", chosen, rejected
    cut = end + len(HH_ASSISTANT)
    return chosen[:cut], chosen[cut:], rejected[cut:]


def transcript_messages(transcript: str) -> list[dict[str, str]]:
    """ "\\n\\nHuman: ...\\n\\nAssistant: ..." as chat messages (the last, empty assistant turn dropped)."""
    parts = re.split(r"(\n\nHuman:|\n\nAssistant:)", transcript)
    messages = []
    for marker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if marker == HH_HUMAN else "assistant"
        if content.strip() or role == "user":
            messages.append({"role": role, "content": content.strip()})
    return messages


def hh_rlhf(data: datasets.Dataset, chat: bool = False) -> datasets.Dataset:
    """Full transcripts in ``chosen`` and ``rejected`` (Anthropic HH-RLHF): the prompt is their
    common prefix up to the last assistant turn. Conversational pairs (chosen/rejected as
    messages) split the same way, at the last message they share.

    ``chat`` turns text transcripts into messages, to be rendered by the model's chat template.
    """

    def row_fn(row: dict, index: int) -> dict:
        chosen, rejected = row["chosen"], row["rejected"]
        if _is_messages(chosen) and _is_messages(rejected):
            shared = 0
            while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
                shared += 1
            while shared > 0 and chosen[shared - 1].get("role") == "assistant":
                shared -= 1  # the responses start at an assistant turn
            if shared == 0:
                raise DataError(
                    f"hh_rlhf: row {index}: the two conversations share no prompt before their assistant turns."
                )
            return {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}
        chosen = _text(chosen, "chosen", index, "hh_rlhf")
        prompt, chosen_response, rejected_response = split_transcripts(
            chosen, _text(rejected, "rejected", index, "hh_rlhf")
        )
        if not prompt:
            raise DataError(
                f"hh_rlhf: row {index} has no common '\\n\\nAssistant:' turn before chosen and rejected "
                f"differ; HH-RLHF transcripts alternate '\\n\\nHuman:' and '\\n\\nAssistant:' turns. "
                f"Start of chosen: {chosen[:80]!r}"
            )
        if chat:
            return {
                "prompt": transcript_messages(prompt),
                "chosen": [{"role": "assistant", "content": chosen_response.strip()}],
                "rejected": [{"role": "assistant", "content": rejected_response.strip()}],
            }
        return {"prompt": prompt, "chosen": chosen_response, "rejected": rejected_response}

    return _convert(data, row_fn, "hh_rlhf")


# ----------------------------------------------------------------------------- instruction data
def alpaca_prompt(instruction: str, input: str | None = None) -> str:
    """The Alpaca prompt, ending where the response starts."""
    text = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}"
    if input:
        text += f"\n\n### Input:\n{input}"
    return text + ALPACA_RESPONSE


def instruction(data: datasets.Dataset, chat: bool = False) -> datasets.Dataset:
    """``instruction`` with an optional ``input``, and ``chosen``/``rejected`` answers.

    By default the prompt is the Alpaca template (for base models); ``chat`` makes it one user
    turn (instruction, a blank line, input) and the answers assistant turns, for chat models.
    """

    def row_fn(row: dict, index: int) -> dict:
        task = _text(row["instruction"], "instruction", index, "instruction")
        extra = row.get("input") or ""
        chosen = _text(row["chosen"], "chosen", index, "instruction")
        rejected = _text(row["rejected"], "rejected", index, "instruction")
        if chat:
            content = f"{task}\n\n{extra}" if extra else task
            return {
                "prompt": [{"role": "user", "content": content}],
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        return {"prompt": alpaca_prompt(task, extra), "chosen": chosen, "rejected": rejected}

    return _convert(data, row_fn, "instruction")


# ----------------------------------------------------------------------------- ShareGPT
def sharegpt_message(turn: dict, index: int) -> dict[str, str]:
    speaker = turn.get("from")
    if speaker not in SHAREGPT_ROLES:
        raise DataError(
            f"sharegpt: row {index} has a turn from {speaker!r}; known speakers are "
            f"{sorted(SHAREGPT_ROLES)} (mapped to {SHAREGPT_ROLES})."
        )
    return {"role": SHAREGPT_ROLES[speaker], "content": _text(turn.get("value"), "value", index, "sharegpt")}


def sharegpt(data: datasets.Dataset) -> datasets.Dataset:
    """ShareGPT-style pairs: ``conversations`` [{from, value}, ...] is the prompt; ``chosen`` and
    ``rejected`` are one {from, value} turn each (or a list of turns). Speakers map human -> user,
    gpt -> assistant, system -> system."""

    def turns(value: Any, index: int) -> list[dict[str, str]]:
        return [sharegpt_message(t, index) for t in (value if isinstance(value, list) else [value])]

    def row_fn(row: dict, index: int) -> dict:
        return {
            "prompt": turns(row["conversations"], index),
            "chosen": turns(row["chosen"], index),
            "rejected": turns(row["rejected"], index),
        }

    return _convert(data, row_fn, "sharegpt")


# ----------------------------------------------------------------------------- prompt/chosen/rejected
def prompt_chosen_rejected(data: datasets.Dataset) -> datasets.Dataset:
    """Explicit pairs, as text or as chat messages, passed through.

    A conversational response that repeats the prompt's messages in front of its own (the
    "implicit prompt" layout of some TRL datasets) is cut to the turns after the prompt.
    """

    def response(prompt: Any, value: Any) -> Any:
        if _is_messages(prompt) and _is_messages(value) and value[: len(prompt)] == prompt and len(value) > len(prompt):
            return value[len(prompt) :]
        return value

    def row_fn(row: dict, index: int) -> dict:
        prompt = row["prompt"]
        return {
            "prompt": prompt,
            "chosen": response(prompt, row["chosen"]),
            "rejected": response(prompt, row["rejected"]),
        }

    return _convert(data, row_fn, "prompt_chosen_rejected")

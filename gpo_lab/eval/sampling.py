"""Samples from the policy and the reference on held-out prompts, scored for the KL estimators.

Sampling is ancestral at temperature 1 with no top-k or top-p truncation: the KL of interest
is that of the true distributions. Encoder-decoder models sample and score through
:mod:`gpo_lab.eval.seq2seq_sampling`. A response ends at EOS (which belongs to it, as in the
training pairs) or after ``max_new_tokens``. Every random draw comes from a private stream per
prompt (:mod:`gpo_lab.eval.draw`), so evaluating never changes the training run's random stream,
and a prompt's samples are the same in any batch and on any number of ranks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from gpo_lab.data.tokenization import is_conversation, prompt_start_token, render_texts
from gpo_lab.eval.draw import POLICY_STREAM, REFERENCE_STREAM, draw_next, prompt_uniforms
from gpo_lab.eval.seq2seq_sampling import sample_seq2seq_responses, score_seq2seq_responses
from gpo_lab.models.hf import cache_keyword, cache_of, is_encoder_decoder
from gpo_lab.parallel.ranks import gather_objects, shard_bounds
from gpo_lab.scoring.batches import PlainPairs
from gpo_lab.scoring.logprobs import position_ids_from_mask, response_token_terms, row_sums


def mean_and_se(values) -> tuple[float, float]:
    """The mean of per-prompt values and its standard error (sample std / sqrt(n))."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = values.numel()
    if n == 0:
        raise ValueError("mean of no values")
    return values.mean().item(), (values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else 0.0)


def encode_prompts(tokenizer, prompts: list) -> list[list[int]]:
    """Token ids of prompts exactly as the preference data module encodes them (chat template included)."""
    if not prompts:
        return []
    texts = [render_texts(p, "", "", tokenizer)[0] if is_conversation(p) else p for p in prompts]
    start_id, always = prompt_start_token(tokenizer)
    encoded = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        if not ids or (always and ids[0] != start_id):
            ids = [start_id, *ids]
        encoded.append(list(ids))
    return encoded


@torch.no_grad()
def sample_responses(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_token_id: int,
    uniforms: torch.Tensor,
    pad_token_id: int = 0,
    batch_size: int = 64,
    progress: str | None = None,
) -> list[list[int]]:
    """One response per prompt, drawn token by token from softmax(logits) with a KV cache, at the
    prompt's row of ``uniforms`` (:func:`gpo_lab.eval.draw.prompt_uniforms`).

    Prompts are left-padded with explicit position ids, so padding never changes a distribution.
    """
    device = next(model.parameters()).device
    responses: list[list[int]] = []
    bar = tqdm(total=len(prompts), desc=progress, leave=False, disable=progress is None, dynamic_ncols=True)
    for start in range(0, len(prompts), batch_size):
        chunk, chunk_uniforms = prompts[start : start + batch_size], uniforms[start : start + batch_size]
        prompts_only = PlainPairs.from_rows([(prompt, []) for prompt in chunk], pad_token_id, side="left").to(device)
        input_ids, mask = prompts_only.input_ids, prompts_only.attention_mask
        positions = position_ids_from_mask(mask)
        output = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True)
        keyword = cache_keyword(model)
        next_position = positions[:, -1:] + 1
        finished = torch.zeros(len(chunk), dtype=torch.bool, device=device)
        lengths = torch.full((len(chunk),), max_new_tokens, dtype=torch.long, device=device)
        tokens = []
        for step in range(max_new_tokens):
            token = draw_next(
                output.logits[:, -1], chunk_uniforms[:, step], finished, lengths, step, pad_token_id, eos_token_id
            )
            tokens.append(token)
            if bool(finished.all()) or step + 1 == max_new_tokens:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            output = model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=next_position,
                use_cache=True,
                **{keyword: cache_of(output)},
            )
            next_position = next_position + 1
        drawn = torch.stack(tokens, dim=1).cpu()
        responses.extend(drawn[i, :n].tolist() for i, n in enumerate(lengths.tolist()))
        bar.update(len(chunk))
    bar.close()
    return responses


@torch.no_grad()
def score_responses(
    policy, reference, prompts: list[list[int]], responses: list[list[int]], pad_token_id: int, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Per response: log pi(y|x), log pi_ref(y|x), and the sum over its tokens of the exact
    next-token KL(pi || pi_ref) given the prefix (one value per sequence, float64 on the CPU)."""
    device = next(policy.parameters()).device
    out = {"policy_logps": [], "reference_logps": [], "token_kl": []}
    for start in range(0, len(prompts), batch_size):
        rows = list(zip(prompts[start : start + batch_size], responses[start : start + batch_size]))
        batch = PlainPairs.from_rows(rows, pad_token_id).to(device)
        terms = response_token_terms(policy, reference, batch.input_ids, batch.attention_mask, batch.response_mask)
        for key, values in zip(("policy_logps", "reference_logps", "token_kl"), terms[:3]):
            out[key].append(row_sums(values, terms[3], len(rows), torch.float64).cpu())
    return {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in out.items()}


@dataclass
class SampleBank:
    """One evaluation's samples: a policy and a reference response for each held-out prompt.

    ``policy_logps``, ``reference_logps`` and ``token_kl`` describe the policy samples (what the
    KL estimators need); the reference samples serve as the opponents of the win rate.
    """

    step: int
    prompts: list
    prompt_ids: list[list[int]]
    policy_ids: list[list[int]]
    reference_ids: list[list[int]]
    policy_texts: list[str]
    reference_texts: list[str]
    policy_logps: torch.Tensor
    reference_logps: torch.Tensor
    token_kl: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def policy_lengths(self) -> torch.Tensor:
        return torch.tensor([len(r) for r in self.policy_ids], dtype=torch.float64)


def decode(tokenizer, responses: list[list[int]]) -> list[str]:
    return tokenizer.batch_decode(responses, skip_special_tokens=True)


def generate_bank(
    policy,
    reference,
    tokenizer,
    prompts: list,
    prompt_ids: list[list[int]],
    max_new_tokens: int,
    seed: int,
    batch_size: int = 64,
    step: int = 0,
    progress: bool = True,
    reference_ids: list[list[int]] | None = None,
    ranks: tuple[int, int] = (0, 1),
) -> SampleBank:
    """Sample the policy and the reference once each per prompt, each prompt from its own two streams.

    With ``ranks = (rank, world size)`` every rank draws and scores its contiguous share of the
    prompts and the shares are gathered (a collective), so every rank holds the whole bank, the
    same as one process's: a prompt's streams do not depend on who draws it. The reference is frozen,
    so the whole bank's reference samples may be passed in from an earlier evaluation
    (``reference_ids``): they are what the same streams would draw again.
    """
    rank, size = ranks
    lo, hi = shard_bounds(len(prompt_ids), rank, size)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    common = dict(
        max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad, batch_size=batch_size
    )
    encoder_decoder = is_encoder_decoder(policy)  # T5-style: the prompt goes to the encoder
    sample = sample_seq2seq_responses if encoder_decoder else sample_responses

    def draw(model, stream: int, what: str) -> list[list[int]]:
        uniforms = prompt_uniforms(seed, stream, range(lo, hi), max_new_tokens)
        shown = f"sampling {what}" if progress and rank == 0 else None
        return sample(model, prompt_ids[lo:hi], uniforms=uniforms, progress=shown, **common)

    share: dict = {"policy_ids": draw(policy, POLICY_STREAM, "policy")}
    if reference_ids is None:
        share["reference_ids"] = draw(reference, REFERENCE_STREAM, "reference")
    if encoder_decoder:
        scores = score_seq2seq_responses(
            policy, reference, prompt_ids[lo:hi], share["policy_ids"], pad, tokenizer.eos_token_id, batch_size
        )
    else:
        scores = score_responses(policy, reference, prompt_ids[lo:hi], share["policy_ids"], pad, batch_size)
    share |= scores
    if size > 1:
        shares = gather_objects(share)
        share = {key: _concatenate([s[key] for s in shares]) for key in share}
    policy_ids = share.pop("policy_ids")
    reference_ids = share.pop("reference_ids", reference_ids)
    assert reference_ids is not None
    return SampleBank(
        step=step,
        prompts=list(prompts),
        prompt_ids=prompt_ids,
        policy_ids=policy_ids,
        reference_ids=reference_ids,
        policy_texts=decode(tokenizer, policy_ids),
        reference_texts=decode(tokenizer, reference_ids),
        **share,
    )


def _concatenate(parts: list):
    return torch.cat(parts) if isinstance(parts[0], torch.Tensor) else [item for part in parts for item in part]

"""Samples from an encoder-decoder (T5-style) policy or reference, scored for the KL estimators.

The same draw as for causal models (ancestral, temperature 1, no truncation, a response ends at EOS
or after ``max_new_tokens``, a private stream per prompt), but the prompt goes to the encoder, which runs
once; the decoder then extends the response with a KV cache. Every row of the decoder starts at
the decoder start token, so no padding enters it; the encoder's right padding is masked. Scoring
uses the encoder-decoder log-prob path of training (:mod:`gpo_lab.scoring.seq2seq`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gpo_lab.eval.draw import draw_next
from gpo_lab.models.hf import cache_keyword, cache_of
from gpo_lab.scoring.logprobs import row_sums, summed_logprobs
from gpo_lab.scoring.seq2seq import Seq2SeqPairs, seq2seq_response_logits


@torch.no_grad()
def sample_seq2seq_responses(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_token_id: int,
    uniforms: torch.Tensor,
    pad_token_id: int = 0,
    batch_size: int = 64,
    progress: str | None = None,
) -> list[list[int]]:
    """One response per prompt, drawn token by token from softmax(logits) of the decoder, at the prompt's
    row of ``uniforms``."""
    device = next(model.parameters()).device
    start = model.config.decoder_start_token_id
    keyword = cache_keyword(model)
    responses: list[list[int]] = []
    bar = tqdm(total=len(prompts), desc=progress, leave=False, disable=progress is None, dynamic_ncols=True)
    for first in range(0, len(prompts), batch_size):
        chunk, chunk_uniforms = prompts[first : first + batch_size], uniforms[first : first + batch_size]
        encoder = Seq2SeqPairs.from_rows([(prompt, []) for prompt in chunk], pad_token_id, eos_token_id).to(device)
        token = torch.full((len(chunk),), start, dtype=torch.long, device=device)
        output = model(
            input_ids=encoder.input_ids, attention_mask=encoder.attention_mask, decoder_input_ids=token[:, None]
        )
        encoded = (output.encoder_last_hidden_state,)  # the encoder runs once per chunk
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
            output = model(
                encoder_outputs=encoded,
                attention_mask=encoder.attention_mask,
                decoder_input_ids=token[:, None],
                use_cache=True,
                **{keyword: cache_of(output)},
            )
        drawn = torch.stack(tokens, dim=1).cpu()
        responses.extend(drawn[i, :n].tolist() for i, n in enumerate(lengths.tolist()))
        bar.update(len(chunk))
    bar.close()
    return responses


@torch.no_grad()
def score_seq2seq_responses(
    policy,
    reference,
    prompts: list[list[int]],
    responses: list[list[int]],
    pad_token_id: int,
    eos_token_id: int,
    batch_size: int = 64,
) -> dict[str, torch.Tensor]:
    """Per response: log pi(y|x), log pi_ref(y|x), and the sum over its tokens of the exact
    next-token KL(pi || pi_ref) given the prefix, from the decoder's logits (float64 on the CPU)."""
    device = next(policy.parameters()).device
    out = {"policy_logps": [], "reference_logps": [], "token_kl": []}
    for first in range(0, len(prompts), batch_size):
        rows = list(zip(prompts[first : first + batch_size], responses[first : first + batch_size]))
        batch = Seq2SeqPairs.from_rows(rows, pad_token_id, eos_token_id).to(device)
        tensors = (batch.input_ids, batch.attention_mask, batch.response_ids, batch.response_mask)
        logits_p, targets, row_of = seq2seq_response_logits(policy, *tensors)
        logits_q, _, _ = seq2seq_response_logits(reference, *tensors)
        log_p, log_q = F.log_softmax(logits_p.float(), dim=-1), F.log_softmax(logits_q.float(), dim=-1)
        for key, log_probs in (("policy_logps", log_p), ("reference_logps", log_q)):
            out[key].append(
                summed_logprobs(log_probs, targets, row_of, len(rows), normalized=True, dtype=torch.float64).cpu()
            )
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        out["token_kl"].append(row_sums(kl, row_of, len(rows), torch.float64).cpu())
    return {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float64) for k, v in out.items()}

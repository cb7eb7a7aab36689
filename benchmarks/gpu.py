"""One GPU's training throughput, model FLOP utilisation, memory, largest batch and sample-bank time.

    python benchmarks/gpu.py            # Pythia-1B-shaped policy, bf16-mixed, one CUDA device
    python benchmarks/gpu.py --tiny     # the same code on the CPU with a tiny model, in seconds

The policy is a GPT-NeoX model with Pythia-1B's shape (hidden 2048, 16 layers, 8 heads, MLP 8192,
vocabulary 50304, untied head; 1.01B parameters), built in code with random weights: nothing is
downloaded. The pairs have TL;DR's shape (prompts 400 tokens +-25%, responses 40 +-50%, random
token ids). The run path is gpo_lab's own: the reference (a frozen copy of the initial policy) fills
the reference log-prob cache in the training layout (packed pairs, run flat) under the run's
precision, then lives on the CPU; ``GPOModule`` scores the packed batches with the cached values and
the logistic loss, and AdamW steps, under ``bf16-mixed`` (as ``trainer=gpu``: fp32 weights, bf16
autocast) or ``--precision bf16-true``. The sample bank is ``gpo_lab.eval.sampling.generate_bank``,
as the evaluation callback runs it (policy and reference samples, then their scores and token KL).

FLOPs are counted, not measured: per step, 6 x (non-embedding parameters) x (tokens in the packed
rows) for the layers, 6 x d x V x (scored response positions) for the head (only response positions
are projected), and 12 x layers x d x (sum over pairs of (prompt + chosen)^2 + rejected x (prompt +
rejected)) for attention scores and values (the blocks each pair's attention calls take in the flat
layout, causal halves counted whole as in PaLM's MFU); backward = 2 x forward; the logits''
recomputation in chunks is not counted. MFU = those FLOPs per second / the peak (``--peak-tflops``,
H100 SXM bf16 dense: 989). The largest batch is searched by doubling until the GPU runs out of
memory; what fits in 80 GB is extrapolated from the two largest batches that fit (peak = a + b x
batch). The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import random
import resource
import time

import torch

from gpo_lab.eval.sampling import generate_bank
from gpo_lab.losses.gpo import GPOLoss
from gpo_lab.models.reference_logps import compute_reference_logps, placed_on
from gpo_lab.models.tokenizers import word_tokenizer
from gpo_lab.scoring.packing import CHOSEN, PAD, PROMPT, REJECTED, PackedPairs
from gpo_lab.scoring.precision import MIXED
from gpo_lab.training.gpo_module import GPOModule

PYTHIA_1B = dict(
    hidden_size=2048, num_hidden_layers=16, num_attention_heads=8, intermediate_size=8192, vocab_size=50304
)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, vocab_size=1028)
SPECIALS = 4  # <pad>, <s>, </s>, <unk> of the word tokenizer
FIELDS = (
    "device",
    "model",
    "parameters",
    "precision",
    "batch_size",
    "timed_steps",
    "seconds_per_step",
    "pairs_per_s",
    "tokens_per_s",
    "model_tflops_per_s",
    "mfu",
    "peak_memory_gb",
    "largest_batch",
    "largest_batch_peak_memory_gb",
    "batch_search",
    "batch_at_80gb",
    "sample_bank_prompts",
    "sample_bank_new_tokens",
    "sample_bank_s",
    "reference_cache_s",
)


def build_policy(shape: dict, seed: int):
    """A GPT-NeoX causal LM of ``shape`` with random weights (fp32), sdpa attention."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        **shape,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config._attn_implementation = "sdpa"
    return GPTNeoXForCausalLM(config)


def tldr_shaped_pairs(count: int, prompt: int, response: int, vocab: int, seed: int) -> list[tuple]:
    """(prompt, chosen, rejected) token ids: prompts prompt +-25%, responses response +-50%, no special tokens."""
    rng = random.Random(seed)

    def ids(low: int, high: int) -> list[int]:
        return [rng.randrange(SPECIALS, vocab) for _ in range(rng.randint(low, high))]

    return [
        (
            ids(prompt * 3 // 4, prompt * 5 // 4),
            ids(response // 2, response * 3 // 2),
            ids(response // 2, response * 3 // 2),
        )
        for _ in range(count)
    ]


def step_flops(policy, batch: PackedPairs) -> float:
    """Model FLOPs of one training step (forward + backward) on a packed batch (see the module docstring)."""
    config = policy.config
    d, vocab, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    embeddings = policy.get_input_embeddings().weight.numel() + policy.get_output_embeddings().weight.numel()
    body = sum(p.numel() for p in policy.parameters()) - embeddings
    tokens = int((batch.segment_ids != PAD).sum())
    scored = int(batch.response_lengths().sum())
    prompt, chosen, rejected = ((batch.segment_ids == part).sum(-1) for part in (PROMPT, CHOSEN, REJECTED))
    blocks = int(((prompt + chosen) ** 2 + rejected * (prompt + rejected)).sum())
    attention = 2 * 2 * layers * d * blocks  # QK^T and AV, forward
    return 3 * (2 * body * tokens + 2 * d * vocab * scored + attention)


class Trainer:
    """gpo_lab's training step outside Lightning: GPOModule's log-probs and loss, backward, AdamW."""

    def __init__(self, policy, reference, precision: str, device: torch.device, lr: float = 1e-6):
        optimizer = functools.partial(torch.optim.AdamW, lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
        self.module = GPOModule(policy, reference, GPOLoss("logistic"), beta=0.1, optimizer=optimizer)
        self.optimizer = self.module.configure_optimizers()["optimizer"]
        self.precision, self.device = precision, device
        self.module.policy.train()

    def step(self, batch: PackedPairs) -> float:
        batch = batch.to(self.device)
        mixed = MIXED.get(self.precision)
        autocast = torch.autocast(self.device.type, dtype=mixed or torch.bfloat16, enabled=mixed is not None)
        with autocast:
            loss = self.module.per_example_loss(self.module.batch_logprobs(batch)).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


def batches(pairs: list[tuple], values: torch.Tensor, size: int) -> list[PackedPairs]:
    """Packed batches of ``size`` pairs with their cached reference log-probs (chosen first, then rejected)."""
    out = []
    for start in range(0, len(pairs) - size + 1, size):
        cached = values[start : start + size]
        out.append(PackedPairs.from_pairs(pairs[start : start + size], pad_id=0, reference_logps=cached.T.reshape(-1)))
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory since the last reset: allocated GPU memory, or the process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def largest_batch(trainer: Trainer, pairs, values, start: int, limit: int, device) -> tuple[list[dict], int | None]:
    """Batch sizes doubled from ``start`` until out of memory (or ``limit``): their peaks, and the largest that fit."""
    tried: list[dict] = []
    size = start
    while size <= limit and size <= len(pairs):
        reset_peak(device)
        try:
            trainer.step(batches(pairs[:size], values[:size], size)[0])
            synchronize(device)
            tried.append({"batch_size": size, "fits": True, "peak_memory_gb": peak_memory_gb(device)})
        except torch.cuda.OutOfMemoryError:
            trainer.optimizer.zero_grad(set_to_none=True)
            tried.append({"batch_size": size, "fits": False})
            break
        size *= 2
    fits = [t for t in tried if t["fits"]]
    return tried, (fits[-1]["batch_size"] if fits else None)


def at_80gb(tried: list[dict]) -> int | None:
    """The batch whose peak a + b x batch, through the two largest that fit, reaches 80 GB."""
    fits = [t for t in tried if t["fits"]]
    if len(fits) < 2:
        return None
    (b1, m1), (b2, m2) = ((t["batch_size"], t["peak_memory_gb"]) for t in fits[-2:])
    slope = (m2 - m1) / (b2 - b1)
    return int((80 - (m1 - slope * b1)) / slope) if slope > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on the CPU, in seconds (CI)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--prompt-length", type=int, default=400)
    parser.add_argument("--response-length", type=int, default=40)
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "bf16-true", "32-true"])
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense peak (H100 bf16: 989)")
    parser.add_argument("--max-batch", type=int, default=1024, help="the batch search stops here")
    parser.add_argument("--bank-prompts", type=int, default=512)
    parser.add_argument("--bank-tokens", type=int, default=64)
    parser.add_argument("--bank-batch-size", type=int, default=64, help="callbacks.sample_bank.batch_size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.tiny:
        shape, device = TINY, torch.device("cpu")
        args.batch_size, args.steps, args.warmup = min(args.batch_size, 2), min(args.steps, 2), 1
        args.prompt_length, args.response_length, args.max_batch = 24, 6, 8
        args.bank_prompts, args.bank_tokens, args.bank_batch_size = 8, 4, 4
    else:
        if not torch.cuda.is_available():
            raise SystemExit("No CUDA device: run on a GPU, or pass --tiny for the CPU check.")
        shape, device = PYTHIA_1B, torch.device("cuda")

    policy = build_policy(shape, args.seed)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    if args.precision == "bf16-true":
        policy = policy.to(torch.bfloat16)
    policy.to(device)
    vocab = shape["vocab_size"]
    tokenizer = word_tokenizer([f"w{i}" for i in range(vocab - SPECIALS)])
    total = max((args.warmup + args.steps) * args.batch_size, args.max_batch if not args.tiny else 8)
    pairs = tldr_shaped_pairs(total, args.prompt_length, args.response_length, vocab, args.seed)
    columns = {name: [p[i] for p in pairs] for i, name in enumerate(("prompt_ids", "chosen_ids", "rejected_ids"))}

    started = time.perf_counter()
    with placed_on(reference, device):  # the first job of a sweep fills the cache; training reads it
        values = compute_reference_logps(reference, columns, 0, 16, packing=True, precision=args.precision)
    reference_cache_s = time.perf_counter() - started

    trainer = Trainer(policy, reference, args.precision, device)
    steps = batches(pairs, values, args.batch_size)[: args.warmup + args.steps]
    for batch in steps[: args.warmup]:
        trainer.step(batch)
    synchronize(device)
    reset_peak(device)
    started = time.perf_counter()
    for batch in steps[args.warmup :]:
        trainer.step(batch)
    synchronize(device)
    seconds = time.perf_counter() - started
    peak = peak_memory_gb(device)
    timed = steps[args.warmup :]
    tokens = sum(int((b.segment_ids != PAD).sum()) for b in timed)
    flops = sum(step_flops(policy, b) for b in timed) / seconds

    tried, largest = largest_batch(trainer, pairs, values, args.batch_size, args.max_batch, device)

    prompts = [p for p, _, _ in tldr_shaped_pairs(args.bank_prompts, args.prompt_length, 0, vocab, args.seed + 1)]
    reset_peak(device)
    synchronize(device)
    started = time.perf_counter()
    with placed_on(reference, device), torch.inference_mode():
        generate_bank(
            policy,
            reference,
            tokenizer,
            [f"prompt {i}" for i in range(len(prompts))],
            prompts,
            max_new_tokens=args.bank_tokens,
            seed=args.seed,
            batch_size=args.bank_batch_size,
            progress=False,
        )
    synchronize(device)
    bank_s = time.perf_counter() - started

    parameters = sum(p.numel() for p in policy.parameters())
    fits = {t["batch_size"]: t for t in tried if t["fits"]}
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": "tiny GPT-NeoX" if args.tiny else "GPT-NeoX, Pythia-1B shape",
        "parameters": parameters,
        "precision": args.precision,
        "batch_size": args.batch_size,
        "timed_steps": len(timed),
        "seconds_per_step": seconds / len(timed),
        "pairs_per_s": len(timed) * args.batch_size / seconds,
        "tokens_per_s": tokens / seconds,
        "model_tflops_per_s": flops / 1e12,
        "mfu": flops / (args.peak_tflops * 1e12),
        "peak_memory_gb": peak,
        "largest_batch": largest,
        "largest_batch_peak_memory_gb": fits[largest]["peak_memory_gb"] if largest else None,
        "batch_search": tried,
        "batch_at_80gb": at_80gb(tried),
        "sample_bank_prompts": len(prompts),
        "sample_bank_new_tokens": args.bank_tokens,
        "sample_bank_s": bank_s,
        "reference_cache_s": reference_cache_s,
    }
    assert tuple(result) == FIELDS
    for name in FIELDS:
        if name != "batch_search":
            print(f"{name}: {result[name]}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Padded prefix-shared rows against flat packing, side by side in one process.

The policy step of ``throughput.py`` (its tiny Llama, fp32, sdpa, one thread) on the same batches in
both layouts: forward and backward of ``PackedPairs.score_shared`` (one pair per row, padded to the
batch's longest, dense 4D mask) and of ``PackedPairs.score_flat`` (one unpadded row, attention pair
by pair). The two take turns, each timed at its best of ``--repeats``, and their summed log-probs are compared.

    python benchmarks/layouts.py              # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from throughput import MODEL, SHARED_DATA, SHAREGPT, VOCAB_SIZE
from transformers import LlamaConfig, LlamaForCausalLM

from gpo_lab.scoring.packing import PackedPairs, supports_flat_packing


def sharegpt_lengths(path: Path, count: int) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token counts of throughput.py's ShareGPT pairs (a word is a token, plus EOS)."""
    rows = json.loads(path.read_text())[:count]
    lengths = []
    for row in rows:
        prompt = sum(1 + len(turn["value"].split()) for turn in row["conversations"])
        chosen, rejected = (min(128, len(row[side]["value"].split())) for side in ("chosen", "rejected"))
        if chosen and rejected:
            lengths.append((min(384, prompt), chosen + 1, rejected + 1))
    return lengths


def tldr_lengths(count: int, seed: int) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(300, 500), rng.randint(20, 60) + 1, rng.randint(20, 60) + 1) for _ in range(count)]


def batches(lengths, size: int):
    """Length-grouped batches, as the data module groups them: sorted by pair length, cut into ``size``."""
    ordered = sorted(lengths, key=sum)
    return [ordered[i : i + size] for i in range(0, len(ordered) - size + 1, size)]


def best_times(steps: dict, repeats: int) -> dict[str, float]:
    """Each step's best time over ``repeats`` rounds, the steps taking turns within a round."""
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=48, help="pairs per data shape")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB_SIZE, num_key_value_heads=MODEL["num_attention_heads"], **MODEL)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    if not supports_flat_packing(model):
        raise SystemExit("flat packing was switched off for this model; see the log above")
    shapes = {"tldr-shaped": tldr_lengths(args.pairs, seed=0)}
    if (SHARED_DATA / SHAREGPT).exists():
        shapes["sharegpt-dpo-en"] = sharegpt_lengths(SHARED_DATA / SHAREGPT, args.pairs)
    generator = torch.Generator().manual_seed(1)
    print("| data | batches | padded-row tokens | real tokens | padded rows (s) | flat (s) | speed-up | log-prob gap |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, lengths in shapes.items():
        totals = {"rows": 0.0, "flat": 0.0, "padded": 0, "real": 0, "gap": 0.0}
        groups = batches(lengths, args.batch_size)
        for group in groups:
            ids = [[torch.randint(4, VOCAB_SIZE, (n,), generator=generator).tolist() for n in pair] for pair in group]
            batch = PackedPairs.from_pairs(ids, pad_id=0)
            totals["padded"] += batch.input_ids.numel()
            totals["real"] += sum(map(sum, group))
            with torch.no_grad():
                gap = (batch.score_flat(model) - batch.score_shared(model)).abs().max().item()
            totals["gap"] = max(totals["gap"], gap)
            layouts = {"rows": batch.score_shared, "flat": batch.score_flat}
            steps = {key: (lambda score=score: score(model).sum().backward()) for key, score in layouts.items()}
            for layout, seconds in best_times(steps, args.repeats).items():
                totals[layout] += seconds
        print(
            f"| {name} | {len(groups)} | {totals['padded']} | {totals['real']} | {totals['rows']:.2f} "
            f"| {totals['flat']:.2f} | {totals['rows'] / totals['flat']:.2f}x | {totals['gap']:.1e} |"
        )


if __name__ == "__main__":
    main()

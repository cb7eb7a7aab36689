"""Training throughput of gpo_lab against TRL's DPOTrainer, side by side in one invocation.

    python benchmarks/throughput.py            # TL;DR-shaped pairs, then ../shared/data/ when present

Both sides train the same tiny Llama (hidden 256, 4 layers, vocabulary 8000, 8.3M parameters,
fp32, sdpa attention) from the same initial weights, on the same pairs in the same batches, with
the logistic loss (TRL: loss_type sigmoid), the same beta, AdamW at the same constant learning
rate, no gradient clipping and no gradient checkpointing. Each side runs in its own subprocess,
so its peak RSS is its own:

- gpo_lab: ``python -m gpo_lab`` (the real CLI and training path) with prefix-shared packed
  batches, length-grouped batching and the reference log-prob cache, which a separate process
  fills first (like the first job of a sweep; its one-time cost is reported apart).
- TRL: ``DPOTrainer`` with its defaults otherwise (the reference model runs at every step).

The table gives pairs/s and tokens/s over the timed steps (after the warm-up steps), peak RSS,
the model FLOP/s each side executes against the machine's fp32 matmul peak measured in the same
run, and the first-step loss of each side (log 2 at initialisation). The last line printed is one
JSON object. TRL is an optional dependency: ``pip install trl``.

Memory is split in two: the weights and optimizer state (counted: every weight, and the gradient
and two AdamW moments of every trained one; TRL also holds its reference), and the activations:
the most the process's resident memory rose during a timed step's forward and backward pass above
what it held when the step began (its peak reset there), not counting gradients that were not yet
allocated then. gpo_lab also trains once more with ``logprob_chunk=0`` (its one-piece projection)
for the same figures. ``--vocab`` sets the vocabulary (Llama 3: 128256, Qwen 2.5: 152064);
``--memory-table`` runs gpo_lab at 8000, 128256 and 152064 in one invocation (TRL too with
``--with-trl``) and prints the activation ratios; its processes map every allocation of 128 KiB or
more on its own (``MALLOC_MMAP_THRESHOLD_``), so the figures repeat from run to run.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SHAREGPT = "sharegpt-dpo-en-300.json"
VOCAB_SIZE = 8000  # the default vocabulary (--vocab)
MEMORY_TABLE_VOCABS = (8000, 128256, 152064)
SPECIALS = 4  # <pad>, <s>, </s>, <unk> of gpo_lab.models.tokenizers.word_tokenizer
MODEL = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)
NO_TRUNCATION = ("data.max_length=4096", "data.max_prompt_length=4000")  # the pairs are cut to size when generated


# ----------------------------------------------------------------------------------- data
def tldr_shaped_pairs(count: int, prompt_length: int, response_length: int, seed: int, vocab: int = VOCAB_SIZE):
    """Pairs of pseudo-words with TL;DR's shape: prompts prompt_length +-25%, responses response_length +-50%."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab - SPECIALS)]

    def text(low, high):
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    pairs = []
    for _ in range(count):
        prompt = text(int(prompt_length * 0.75), int(prompt_length * 1.25))
        pairs.append(
            {
                "prompt": prompt,
                "chosen": " " + text(response_length // 2, response_length * 3 // 2),
                "rejected": " " + text(response_length // 2, response_length * 3 // 2),
            }
        )
    return pairs, words


def sharegpt_pairs(path: Path, count: int, max_prompt_words: int, max_response_words: int, vocab: int = VOCAB_SIZE):
    """Real conversations: the prompt is the rendered dialogue, the vocabulary its 7,996 most frequent words
    (with unused pseudo-words up to a larger ``vocab``)."""
    rows = json.loads(path.read_text())[:count]

    def words_of(text):
        return text.split()

    raw = []
    for row in rows:
        prompt = [w for turn in row["conversations"] for w in [f"{turn['from']}:", *words_of(turn["value"])]]
        raw.append(
            (
                prompt[-max_prompt_words:],
                words_of(row["chosen"]["value"])[:max_response_words],
                words_of(row["rejected"]["value"])[:max_response_words],
            )
        )
    frequency = collections.Counter(w for triple in raw for part in triple for w in part)
    vocabulary = [w for w, _ in frequency.most_common(VOCAB_SIZE - SPECIALS)]
    known = set(vocabulary)
    vocabulary += [f"<unused{i}>" for i in range(vocab - SPECIALS - len(vocabulary))]

    def text(words):
        return " ".join(w if w in known else "<unk>" for w in words)

    pairs = [{"prompt": text(p), "chosen": " " + text(c), "rejected": " " + text(r)} for p, c, r in raw if c and r]
    return pairs, vocabulary


def write_task(work: Path, pairs: list[dict], words: list[str], validation: int, seed: int) -> None:
    """The model (initial weights), the tokenizer and the pairs, saved where both sides read them."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from gpo_lab.models.tokenizers import word_tokenizer

    tokenizer = word_tokenizer(words)
    vocab = len(words) + SPECIALS
    assert len(tokenizer) == vocab, len(tokenizer)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        num_key_value_heads=MODEL["num_attention_heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **MODEL,
    )
    LlamaForCausalLM(config).save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    (work / "pairs").mkdir()
    for name, part in (("train", pairs[validation:]), ("validation", pairs[:validation])):
        with open(work / "pairs" / f"{name}.jsonl", "w") as handle:
            handle.writelines(json.dumps(pair) + "\n" for pair in part)


# ----------------------------------------------------------------------------------- the machine
def matmul_peak(threads: int, size: int = 2048, repeats: int = 6) -> float:
    """Best fp32 matmul rate (FLOP/s) of a few large products."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def run_child(command: list[str], env: dict, log_path: Path) -> tuple[float, float]:
    """Run one side to completion; its wall time and peak RSS (MB, from the kernel's accounting of that child)."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log_path.read_text()[-4000:]
        raise RuntimeError(f"{' '.join(command[:4])} ... failed (exit {process.returncode}); its log ends:\n{tail}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


# ----------------------------------------------------------------------------------- memory
def resident_mb() -> dict[str, float]:
    """This process's resident memory now (VmRSS) and its peak since the last reset (VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


class StepMemory:
    """Activations of the timed steps: the rise of resident memory during forward and backward.

    At a timed step's start the allocator returns the free memory it kept (``malloc_trim``), the
    kernel's peak-RSS mark is reset (``/proc/self/clear_refs``) and the resident memory is read;
    before the optimizer step the peak is read. The rise, less the gradients that did not exist at
    the start (they are optimizer-side state), is the step's activations; the largest over the timed
    steps is reported. Weights and optimizer state are counted, not measured.
    """

    def __init__(self, warmup: int):
        self.warmup, self.activations, self.start, self.absent = warmup, [], 0.0, 0.0

    def step_start(self, step: int, parameters) -> None:
        if step < self.warmup:
            return
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # free memory the allocator kept is not the step's
        Path("/proc/self/clear_refs").write_text("5")
        self.start = resident_mb()["VmRSS"]
        trained = [p for p in parameters if p.requires_grad]
        self.absent = sum(p.numel() * p.element_size() for p in trained if p.grad is None) / 2**20

    def before_optimizer(self, step: int) -> None:
        if step >= self.warmup:
            self.activations.append(resident_mb()["VmHWM"] - self.start - self.absent)

    @staticmethod
    def state_mb(trained, frozen) -> float:
        """Every weight, and the gradient and the two AdamW moments of every trained one (MB)."""
        size = sum(p.numel() * p.element_size() for p in trained)
        return (4 * size + sum(p.numel() * p.element_size() for p in frozen)) / 2**20

    def record(self, trained, frozen=()) -> dict:
        return {"activations_mb": max(self.activations), "state_mb": self.state_mb(list(trained), list(frozen))}


# ----------------------------------------------------------------------------------- gpo_lab side
def gpo_lab_overrides(work: Path, args, steps: int, chunk: str = "auto") -> list[str]:
    """The command line of the gpo_lab side (without the timer and run directory)."""
    return [
        "model=hf",
        f"model.name={work / 'model'}",
        "model.policy.attn_implementation=sdpa",
        "data=hf",
        f"data.dataset.path={work / 'pairs'}",
        "data.val_split=validation",
        *NO_TRUNCATION,
        f"data.batch_size={args.batch_size}",
        f"data.eval_batch_size={args.batch_size}",
        "data.packing=true",
        "data.group_by_length=true",
        f"loss={args.loss}",
        *args.loss_overrides,
        f"beta={args.beta}",
        "optim=adamw",
        f"optim.lr={args.lr}",
        "optim.warmup_steps=0",
        f"seed={args.seed}",
        "logger=none",
        "callbacks.checkpoint=null",
        "callbacks.progress=null",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "+trainer.enable_progress_bar=false",
        "+trainer.enable_checkpointing=false",
        f"reference_cache.dir={work / 'reference_cache'}",
        f"logprob_chunk={chunk}",
    ]


def step_timer(path: str, warmup: int = 1):
    """A Lightning callback recording step end times, batch shapes, the batch order and the first step's loss.

    Built by name from the command line (``+callbacks.timer._target_=throughput.step_timer``); Lightning
    is imported here, not at the top, so that the TRL side's process never loads it.
    """
    import pytorch_lightning as pl
    import torch

    from gpo_lab.scoring.packing import CHOSEN, PAD, PROMPT, REJECTED, supports_flat_packing

    class StepTimer(pl.Callback):
        def __init__(self):
            self.ends, self.shapes, self.losses, self.first, self.order = [], [], [], {}, None
            self.memory = StepMemory(warmup)

        def on_train_start(self, trainer, pl_module):
            self.order = trainer.train_dataloader.batch_sampler.batches(0)

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.memory.step_start(trainer.global_step, pl_module.policy.parameters())
            segments = batch.segment_ids
            scored = ((segments == CHOSEN) | (segments == REJECTED)).sum().item()
            self.shapes.append(
                {
                    "rows": segments.shape[0],
                    "width": segments.shape[1],
                    "scored": scored,
                    "tokens": (segments != PAD).sum().item(),
                    "pairs": torch.stack([(segments == s).sum(-1) for s in (PROMPT, CHOSEN, REJECTED)], -1).tolist(),
                    "flat": supports_flat_packing(pl_module.policy),
                }
            )

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.memory.before_optimizer(trainer.global_step)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(time.perf_counter())
            self.losses.append(float(outputs["loss"]))
            if not self.first:
                self.first = {
                    "loss": float(outputs["loss"]),
                    "logps_chosen": float(trainer.callback_metrics["train/logps/chosen"]),
                }

        def on_train_end(self, trainer, pl_module):
            Path(path).write_text(
                json.dumps(
                    {
                        "ends": self.ends,
                        "shapes": self.shapes,
                        "losses": self.losses,
                        "first": self.first,
                        "order": self.order,
                        "layout": layout(pl_module.policy),
                        "reference_loaded": bool(getattr(pl_module.reference, "is_loaded", True)),
                        "memory": self.memory.record(pl_module.policy.parameters()),
                    }
                )
            )

    return StepTimer()


def layout(policy) -> str:
    """How the gpo_lab side ran its packed batches (each fast path was checked against plain rows)."""
    from gpo_lab.scoring.packing import supports_flat_packing, supports_prefix_sharing

    if supports_flat_packing(policy):
        return "flat (one unpadded row, attention pair by pair)"
    return "prefix-shared padded rows" if supports_prefix_sharing(policy) else "plain rows"


def fill_reference_cache(work: Path, overrides: list[str]) -> dict:
    """What the first job of a sweep does before training: compute the reference log-probs once."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import gpo_lab.__main__  # noqa: F401  (registers the config resolvers)
    from gpo_lab.models.reference_cache import ReferenceLogpCache, attach_reference_logps

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    tokenizer = instantiate(cfg.model.tokenizer)
    datamodule = instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed)
    datamodule.setup("fit")
    policy = instantiate(cfg.model.policy, tokenizer=tokenizer)
    reference = instantiate(cfg.reference, policy=policy, tokenizer=tokenizer)
    start = time.perf_counter()
    outcome = attach_reference_logps(
        datamodule, reference, ReferenceLogpCache(cfg.reference_cache.dir), cfg.reference_cache.batch_size
    )
    return {
        "seconds": time.perf_counter() - start,
        "outcome": outcome,
        "pairs": len(datamodule.train_set) + len(datamodule.val_set),
    }


# ----------------------------------------------------------------------------------- TRL side
def run_trl(work: Path, args, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32, attn_implementation="sdpa")
    rows = [json.loads(line) for line in open(work / "pairs" / "train.jsonl")]
    order = json.loads((work / "gpo_lab.json").read_text())["order"]
    ordered = Dataset.from_list([rows[i] for batch in order for i in batch])  # gpo_lab's batches, in its order
    record = {"ends": [], "shapes": [], "losses": [], "first": {}}
    memory = StepMemory(args.warmup)

    class Timer(TrainerCallback):
        def on_step_begin(self, train_args, state, control, **kwargs):
            memory.step_start(state.global_step, model.parameters())

        def on_pre_optimizer_step(self, train_args, state, control, **kwargs):
            memory.before_optimizer(state.global_step)

        def on_step_end(self, train_args, state, control, **kwargs):
            record["ends"].append(time.perf_counter())

    class RecordingDPOTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.model.training:
                mask = inputs["attention_mask"]
                record["shapes"].append(
                    {
                        "rows": mask.shape[0],
                        "width": mask.shape[1],
                        "scored": mask.shape[0] * (mask.shape[1] - 1),
                        "tokens": (mask.sum().item() + inputs["completion_mask"].sum().item()) // 2,
                    }
                )
                value = loss[0] if isinstance(loss, tuple) else loss
                record["losses"].append(value.item())
                if not record["first"]:
                    record["first"] = {"loss": value.item(), "logps_chosen": self._metrics["train"]["logps/chosen"][-1]}
            return loss

    config = DPOConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=args.batch_size,
        max_steps=steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        optim="adamw_torch",
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=0.0,
        max_grad_norm=0.0,
        beta=args.beta,
        loss_type=[args.trl_loss_type],
        label_smoothing=args.label_smoothing,
        max_length=None,
        bf16=False,
        fp16=False,
        gradient_checkpointing=args.trl_gradient_checkpointing,
        train_sampling_strategy="sequential",
        use_cpu=True,
        seed=args.seed,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = RecordingDPOTrainer(
        model=model, args=config, train_dataset=ordered, processing_class=tokenizer, callbacks=[Timer()]
    )
    expected = [
        (tokenizer(r["prompt"])["input_ids"], tokenizer(r["chosen"])["input_ids"] + [tokenizer.eos_token_id])
        for r in ordered
    ]
    encoded = trainer.train_dataset
    if [(p, c) for p, c in zip(encoded["prompt_ids"], encoded["chosen_ids"])] != expected:
        raise RuntimeError("TRL tokenized the pairs differently from gpo_lab: the comparison would not be fair.")
    trainer.train()
    reference = trainer.ref_model.parameters() if trainer.ref_model is not None else ()
    record["memory"] = memory.record(model.parameters(), reference)
    return record


# ----------------------------------------------------------------------------------- accounting
def step_flops(shape: dict, side: str, recompute: bool = False, vocab: int = VOCAB_SIZE) -> float:
    """Model FLOPs one training step executes: matmuls of the layers, attention scores and the vocabulary head.

    gpo_lab: forward + backward (3x a forward) of the packed rows, head on response tokens only; in the
    flat layout the linear layers run the real tokens only and attention the (prompt + chosen) square and
    the rejected response's (prompt + rejected) rectangle of each pair (the CPU kernel computes the whole
    causal square at these lengths).
    TRL: forward + backward of 2B prompt+response rows with the head at every position, and a
    forward of the reference on the same rows (and one more of the policy with gradient checkpointing).
    """
    h, i, layers = MODEL["hidden_size"], MODEL["intermediate_size"], MODEL["num_hidden_layers"]
    rows, width = shape["rows"], shape["width"]
    linear = 2 * rows * width * layers * (4 * h * h + 3 * h * i)
    attention = 4 * rows * width * width * h * layers
    if side == "gpo_lab" and shape.get("flat"):
        linear = 2 * shape["tokens"] * layers * (4 * h * h + 3 * h * i)
        attention = 4 * h * layers * sum((p + c) ** 2 + r * (p + r) for p, c, r in shape["pairs"])
    head = 2 * shape["scored"] * h * vocab
    forward = linear + attention + head
    return 3 * forward if side == "gpo_lab" else (5 if recompute else 4) * forward


def summarise(
    record: dict,
    side: str,
    warmup: int,
    batch_size: int,
    peak: float,
    rss_mb: float,
    recompute: bool = False,
    vocab: int = VOCAB_SIZE,
) -> dict:
    timed = len(record["ends"]) - warmup
    seconds = record["ends"][-1] - record["ends"][warmup - 1]
    shapes = record["shapes"][warmup : warmup + timed]
    flops = sum(step_flops(s, side, recompute, vocab) for s in shapes) / seconds
    return {
        "steps": timed,
        "seconds": seconds,
        "pairs_per_s": timed * batch_size / seconds,
        "tokens_per_s": sum(s["tokens"] for s in shapes) / seconds,
        "flops": flops,
        "peak_fraction": flops / peak,
        "peak_rss_mb": rss_mb,
        **record["memory"],
        "first_loss": record["first"]["loss"],
        "first_logps_chosen": record["first"]["logps_chosen"],
        "losses": record["losses"],
        "tokens": [s["tokens"] for s in record["shapes"]],
    }


def bench(
    name: str, pairs: list[dict], words: list[str], args, steps: int, peak: float, base: Path, trl: bool = True
) -> dict:
    """One dataset: write the task, fill the cache, train each side in its own process, compare (``trl``:
    TRL's side too)."""
    work = base / name
    work.mkdir(parents=True)
    total = args.warmup + steps
    needed = total * args.batch_size
    if len(pairs) < needed + args.batch_size:
        raise SystemExit(f"{name}: {len(pairs)} pairs, {needed + args.batch_size} needed; lower --steps.")
    write_task(work, pairs[: needed + args.batch_size], words, args.batch_size, args.seed)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # --memory-table: every allocation of 128 KiB or more is mapped on its own and unmapped when freed, so the
        # resident memory follows the live tensors and the activations repeat from run to run (the allocator
        # otherwise keeps some freed blocks, by an adaptive threshold, and the figure wanders by ~100 MB).
        **({"MALLOC_MMAP_THRESHOLD_": "131072"} if args.memory_table else {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
    }
    overrides = gpo_lab_overrides(work, args, total)
    child = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--work-dir",
        str(work),
        "--steps",
        str(steps),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--beta",
        str(args.beta),
        "--seed",
        str(args.seed),
        "--vocab",
        str(args.vocab),
        "--loss",
        args.loss,
        "--trl-loss-type",
        args.trl_loss_type,
        "--label-smoothing",
        str(args.label_smoothing),
        *(f"--loss-override={o}" for o in args.loss_overrides),
    ]
    if args.trl_gradient_checkpointing:
        child.append("--trl-gradient-checkpointing")

    print(f"[{name}] filling the reference cache ...", file=sys.stderr, flush=True)
    cache_wall, cache_rss = run_child([*child, "--child", "cache", "--", *overrides], env, work / "cache.log")
    cache = json.loads((work / "cache.json").read_text())

    def gpo_lab(run: str, chunk: str) -> tuple[float, float]:
        print(f"[{name}] {run} (logprob_chunk={chunk}): {total} steps ...", file=sys.stderr, flush=True)
        return run_child(
            [
                sys.executable,
                "-m",
                "gpo_lab",
                *gpo_lab_overrides(work, args, total, chunk),
                f"hydra.run.dir={work / run}",
                "+callbacks.timer._target_=throughput.step_timer",
                f"+callbacks.timer.path={work / run}.json",
                f"+callbacks.timer.warmup={args.warmup}",
            ],
            env,
            work / f"{run}.log",
        )

    gpo_wall, gpo_rss = gpo_lab("gpo_lab", "auto")
    one_piece_wall, one_piece_rss = gpo_lab("gpo_lab_unchunked", "0")
    gpo_record = json.loads((work / "gpo_lab.json").read_text())
    one_piece_record = json.loads((work / "gpo_lab_unchunked.json").read_text())
    summary = json.loads((work / "gpo_lab" / "summary.json").read_text())
    vocab = args.vocab
    gpo = summarise(gpo_record, "gpo_lab", args.warmup, args.batch_size, peak, gpo_rss, vocab=vocab)
    one_piece = summarise(one_piece_record, "gpo_lab", args.warmup, args.batch_size, peak, one_piece_rss, vocab=vocab)
    sides = {"gpo_lab": gpo, "gpo_lab_unchunked": one_piece}
    trl_wall, loss_gap, ratio = None, None, None
    if trl:
        print(f"[{name}] TRL: {total} steps ...", file=sys.stderr, flush=True)
        trl_wall, trl_rss = run_child([*child, "--child", "trl"], env, work / "trl.log")
        trl_record = json.loads((work / "trl_steps.json").read_text())
        sides["trl"] = summarise(
            trl_record, "trl", args.warmup, args.batch_size, peak, trl_rss, args.trl_gradient_checkpointing, vocab
        )
        loss_gap = max(abs(a - b) for a, b in zip(gpo["losses"], sides["trl"]["losses"]))
        ratio = gpo["pairs_per_s"] / sides["trl"]["pairs_per_s"]
    if len({json.dumps(side.pop("tokens")) for side in sides.values()}) != 1:
        raise RuntimeError(f"{name}: the two sides did not train on the same batches.")
    return {
        **sides,
        "vocab": vocab,
        "ratio": ratio,
        "max_loss_abs_diff": loss_gap,
        "reference_cache": {
            "seconds": cache["seconds"],
            "pairs": cache["pairs"],
            "peak_rss_mb": cache_rss,
            "first_job": cache["outcome"],
            "training_job": summary["data"].get("reference_logps_train"),
            "reference_loaded_during_training": gpo_record["reference_loaded"],
        },
        "layout": gpo_record["layout"],
        "pairs_per_step": args.batch_size,
        "timed_steps": steps,
        "mean_pair_tokens": sum(s["tokens"] for s in gpo_record["shapes"]) / (total * args.batch_size),
        "wall_s": {"cache": cache_wall, "gpo_lab": gpo_wall, "gpo_lab_unchunked": one_piece_wall, "trl": trl_wall},
    }


def table(results: dict, peak: float) -> str:
    lines = [
        f"fp32 matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s",
        "",
        "| data | vocab | side | pairs/s | tokens/s | peak RSS (MB) | weights + optimizer (MB) | activations (MB) "
        "| model GFLOP/s | % of peak | first-step loss |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        for side in (side for side in SIDES if side in result):
            r = result[side]
            lines.append(
                f"| {name} | {result['vocab']} | {SIDES[side]} | {r['pairs_per_s']:.2f} | "
                f"{r['tokens_per_s']:.0f} | {r['peak_rss_mb']:.0f} | {r['state_mb']:.0f} | {r['activations_mb']:.0f} | "
                f"{r['flops'] / 1e9:.1f} | {100 * r['peak_fraction']:.0f}% | {r['first_loss']:.6f} |"
            )
    lines.append("")
    for name, result in results.items():
        cache = result["reference_cache"]
        if result["ratio"] is None:
            continue
        lines.append(
            f"{name}: gpo_lab/TRL = {result['ratio']:.2f}x pairs/s over {result['timed_steps']} steps of "
            f"{result['pairs_per_step']} pairs ({result['mean_pair_tokens']:.0f} tokens per pair); reference "
            f"cache filled once in {cache['seconds']:.1f} s for {cache['pairs']} pairs (training job: "
            f"{cache['training_job']}; reference model loaded during training: "
            f"{cache['reference_loaded_during_training']}); layout: {result['layout']}; "
            f"largest gap between the two sides' losses over all {len(result['gpo_lab']['losses'])} steps: "
            f"{result['max_loss_abs_diff']:.1e}."
        )
    return "\n".join(lines)


SIDES = {"gpo_lab": "gpo_lab", "gpo_lab_unchunked": "gpo_lab, logprob_chunk=0", "trl": "TRL DPOTrainer"}


def memory_table(results: dict) -> tuple[str, dict]:
    """Activations at each vocabulary against the first (smallest) one, per side: the table and its numbers."""
    vocabs = sorted(results)
    base = results[vocabs[0]]
    sides = [side for side in SIDES if all(side in results[v] for v in vocabs)]
    lines = [
        "| vocab | " + " | ".join(f"{SIDES[side]}: activations MB (x vs {vocabs[0]})" for side in sides) + " |",
        "|---:|" + "---:|" * len(sides),
    ]
    ratios: dict = {side: {} for side in sides}
    for vocab in vocabs:
        cells = []
        for side in sides:
            value = results[vocab][side]["activations_mb"]
            ratios[side][vocab] = value / base[side]["activations_mb"]
            cells.append(f"{value:.0f} ({ratios[side][vocab]:.2f}x)")
        lines.append(f"| {vocab} | " + " | ".join(cells) + " |")
    return "\n".join(lines), ratios


def losses_of(result: dict) -> dict:
    """Both sides' per-step training losses and their largest gap (the loss check's line)."""
    return {
        "gpo_lab_losses": result["gpo_lab"]["losses"],
        "trl_losses": result["trl"]["losses"],
        "max_loss_abs_diff": result["max_loss_abs_diff"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per side")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompt-length", type=int, default=400, help="mean prompt tokens of the TL;DR-shaped pairs")
    parser.add_argument("--response-length", type=int, default=40, help="mean response tokens")
    parser.add_argument("--shared-steps", type=int, default=3, help="timed steps on ../shared/data (0: skip it)")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss", default="logistic", help="gpo_lab's loss=<name> (default logistic)")
    parser.add_argument("--trl-loss-type", default="sigmoid", help="TRL's loss_type for the same loss")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="TRL's label_smoothing")
    parser.add_argument(
        "--loss-override", dest="loss_overrides", action="append", default=[], help="e.g. loss.label_smoothing=0.1"
    )
    parser.add_argument("--shared-only", action="store_true", help="only the pairs of ../shared/data (a loss check)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of each side (one: on a shared machine a second OpenMP thread mostly "
        "waits for its descheduled sibling, which distorts the comparison)",
    )
    parser.add_argument(
        "--trl-gradient-checkpointing",
        action="store_true",
        help="TRL's own default; off by default here, as on the gpo_lab side",
    )
    parser.add_argument("--vocab", type=int, default=VOCAB_SIZE, help="vocabulary of the model (Qwen 2.5: 152064)")
    parser.add_argument(
        "--memory-table",
        action="store_true",
        help=f"TL;DR shape at each vocabulary of {MEMORY_TABLE_VOCABS}: gpo_lab's activations and their ratios",
    )
    parser.add_argument(
        "--with-trl", action="store_true", help="--memory-table: TRL's side too (slow: it projects every position)"
    )
    parser.add_argument("--work-dir", type=Path, default=None, help="kept afterwards when given")
    parser.add_argument("--child", choices=["cache", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be >= 1 (the timed steps start after a warm-up step).")

    if args.child == "cache":
        (args.work_dir / "cache.json").write_text(json.dumps(fill_reference_cache(args.work_dir, args.overrides)))
        return
    if args.child == "trl":
        record = run_trl(args.work_dir, args, args.warmup + args.steps)
        (args.work_dir / "trl_steps.json").write_text(json.dumps(record))
        return

    try:
        import trl  # noqa: F401
    except ImportError:
        raise SystemExit("TRL is not installed: pip install 'gpo_lab[bench]' (or pip install trl).") from None
    base = args.work_dir or Path(tempfile.mkdtemp(prefix="gpo_lab_bench_"))
    peak_before = matmul_peak(args.threads)
    results = {}
    total = (args.warmup + args.steps + 1) * args.batch_size
    if args.memory_table:
        for vocab in MEMORY_TABLE_VOCABS:
            args.vocab = vocab
            pairs, words = tldr_shaped_pairs(total, args.prompt_length, args.response_length, args.seed, vocab)
            name = f"tldr-shaped-{vocab}"
            results[vocab] = bench(name, pairs, words, args, args.steps, peak_before, base, args.with_trl)
        if args.work_dir is None:
            shutil.rmtree(base, ignore_errors=True)
        text, ratios = memory_table(results)
        print(table({f"tldr-shaped-{v}": r for v, r in results.items()}, peak_before))
        print()
        print(text)
        print(json.dumps({"batch_size": args.batch_size, "activation_ratios": ratios, "results": results}))
        return
    pairs, words = tldr_shaped_pairs(total, args.prompt_length, args.response_length, args.seed, args.vocab)
    if not args.shared_only:
        results["tldr-shaped"] = bench("tldr-shaped", pairs, words, args, args.steps, peak_before, base)
    if args.shared_steps > 0 and (SHARED_DATA / SHAREGPT).is_file():
        pairs, words = sharegpt_pairs(SHARED_DATA / SHAREGPT, 300, 384, 128, args.vocab)
        results["sharegpt-dpo-en"] = bench("sharegpt-dpo-en", pairs, words, args, args.shared_steps, peak_before, base)
    peak = max(peak_before, matmul_peak(args.threads))
    for result in results.values():  # the peak of the whole run, measured before and after
        for side in (side for side in SIDES if side in result):
            result[side]["peak_fraction"] = result[side]["flops"] / peak
    if args.work_dir is None:
        shutil.rmtree(base, ignore_errors=True)

    print(table(results, peak))
    if args.shared_only:
        print(json.dumps({name: losses_of(r) for name, r in results.items()}))
        return
    head = results["tldr-shaped"]
    line = {
        "gpo_lab_pairs_per_s": head["gpo_lab"]["pairs_per_s"],
        "trl_pairs_per_s": head["trl"]["pairs_per_s"],
        "ratio": head["ratio"],
        "gpo_lab_peak_rss_mb": head["gpo_lab"]["peak_rss_mb"],
        "trl_peak_rss_mb": head["trl"]["peak_rss_mb"],
        "vocab": args.vocab,
        "memory_mb": {
            side: {key: head[side][key] for key in ("peak_rss_mb", "state_mb", "activations_mb")} for side in SIDES
        },
        "gpo_lab_first_loss": head["gpo_lab"]["first_loss"],
        "trl_first_loss": head["trl"]["first_loss"],
        "first_loss_abs_diff": abs(head["gpo_lab"]["first_loss"] - head["trl"]["first_loss"]),
        "max_loss_abs_diff": head["max_loss_abs_diff"],
        "gpo_lab_losses": head["gpo_lab"]["losses"],
        "trl_losses": head["trl"]["losses"],
        "gpo_lab_tokens_per_s": head["gpo_lab"]["tokens_per_s"],
        "trl_tokens_per_s": head["trl"]["tokens_per_s"],
        "gpo_lab_flops": head["gpo_lab"]["flops"],
        "trl_flops": head["trl"]["flops"],
        "matmul_peak_flops": peak,
        "gpo_lab_first_logps_chosen": head["gpo_lab"]["first_logps_chosen"],
        "trl_first_logps_chosen": head["trl"]["first_logps_chosen"],
        "reference_cache_s": head["reference_cache"]["seconds"],
        "reference_cache_training_job": head["reference_cache"]["training_job"],
        "timed_steps": head["timed_steps"],
        "batch_size": args.batch_size,
        "threads": args.threads,
        "shared": {
            name: {
                "ratio": r["ratio"],
                "gpo_lab_pairs_per_s": r["gpo_lab"]["pairs_per_s"],
                "trl_pairs_per_s": r["trl"]["pairs_per_s"],
                "gpo_lab_peak_rss_mb": r["gpo_lab"]["peak_rss_mb"],
                "trl_peak_rss_mb": r["trl"]["peak_rss_mb"],
                "gpo_lab_first_loss": r["gpo_lab"]["first_loss"],
                "trl_first_loss": r["trl"]["first_loss"],
                "max_loss_abs_diff": r["max_loss_abs_diff"],
            }
            for name, r in results.items()
            if name != "tldr-shaped"
        },
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()

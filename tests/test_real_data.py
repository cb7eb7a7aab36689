"""The two real preference files of ../shared/data/ through the data configs, and a couple of
training steps on each with the tiny model (skipped, with the reason, when the folder is absent)."""

from __future__ import annotations

import json
import math

import pytest

from gpo_lab.data.formats import load
from tests.helpers.runs import run_training

INSTRUCTION = "instruction-preference-1100.json"
SHAREGPT = "sharegpt-dpo-en-300.json"
QUICK = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "data.batch_size=4",
    "data.eval_batch_size=16",
    "optim.lr=1e-3",
    "callbacks.progress=null",
]


def test_instruction_file_becomes_alpaca_prompts(shared_data):
    raw = json.loads((shared_data / INSTRUCTION).read_text())
    pairs = load(str(shared_data / INSTRUCTION))["train"]
    assert len(pairs) == len(raw) == 1100
    for row, pair in zip(raw[:50], pairs.select(range(50))):
        assert pair["prompt"].startswith("Below is an instruction that describes a task.")
        assert f"\n\n### Instruction:\n{row['instruction']}" in pair["prompt"]
        assert (f"\n\n### Input:\n{row['input']}" in pair["prompt"]) == bool(row["input"])
        assert pair["prompt"].endswith("\n\n### Response:\n")
        assert (pair["chosen"], pair["rejected"]) == (row["chosen"], row["rejected"])  # `output` is not a response


def test_sharegpt_file_becomes_chat_messages(shared_data):
    raw = json.loads((shared_data / SHAREGPT).read_text())
    pairs = load(str(shared_data / SHAREGPT))["train"]
    assert len(pairs) == 300
    assert sum(len(p) > 1 for p in pairs["prompt"]) == 186  # the multi-turn prompts the README counts
    assert {m["role"] for p in pairs["prompt"] for m in p} == {"system", "user", "assistant"}
    assert all(p[-1]["role"] == "user" for p in pairs["prompt"])
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": raw[0]["chosen"]["value"]}]


@pytest.mark.slow
@pytest.mark.parametrize(
    "data, path, extra",
    [
        ("instruction", INSTRUCTION, ["data.max_length=256", "data.max_prompt_length=192"]),
        (
            "instruction",
            INSTRUCTION,
            ["data.dataset.options.chat=true", "data.max_length=192", "data.max_prompt_length=128"],
        ),
        ("sharegpt", SHAREGPT, ["data.max_length=256", "data.max_prompt_length=128"]),
    ],
)
def test_real_pairs_train_with_the_tiny_model(data, path, extra, shared_data, tmp_path):
    summary = run_training([f"data={data}", f"data.dataset.path={shared_data / path}", *QUICK, *extra], tmp_path)
    assert summary["status"] == "completed", summary.get("error")
    stats = summary["data"]
    assert stats["train_pairs"] + stats["validation_pairs"] + stats["train_dropped_empty"] + stats[
        "validation_dropped_empty"
    ] == (1100 if data == "instruction" else 300)
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert math.isfinite(summary["final"]["val/loss"])

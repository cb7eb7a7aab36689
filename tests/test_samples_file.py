"""``samples.jsonl``: each evaluation's prompts, samples and judge scores as text, kept across a resume."""

from __future__ import annotations

import json
import time

import pytest
import torch

from gpo_lab.eval.samples_file import SamplesFile, read_samples, sample_rows
from gpo_lab.eval.sampling import SampleBank
from gpo_lab.tasks.synthetic import TopicTask
from tests.helpers.runs import TINY_STUDY, run_training
from tests.test_loggers import logged_tables, offline_run


def bank(step: int, n: int = 3) -> SampleBank:
    return SampleBank(
        step=step,
        prompts=[f"prompt {i}" for i in range(n)],
        prompt_ids=[[1, i] for i in range(n)],
        policy_ids=[[5] * (i + 1) for i in range(n)],
        reference_ids=[[6] * (i + 2) for i in range(n)],
        policy_texts=[f"policy {i}" for i in range(n)],
        reference_texts=[f"reference {i}" for i in range(n)],
        policy_logps=torch.zeros(n),
        reference_logps=torch.zeros(n),
        token_kl=torch.zeros(n),
    )


def test_rows_hold_texts_lengths_and_judge_scores():
    scores = {"policy_reward": torch.tensor([0.5, -1.0, 2.0]), "win": torch.tensor([1.0, 0.5, 0.0])}
    rows = sample_rows(bank(4), scores=scores)
    assert rows[1] == {
        "step": 4,
        "index": 1,
        "prompt": "prompt 1",
        "policy": "policy 1",
        "reference": "reference 1",
        "policy_length": 2,
        "reference_length": 3,
        "policy_reward": -1.0,
        "win": 0.5,
    }
    assert "win" not in sample_rows(bank(4))[0]  # no judge ran: no score invented


def test_a_step_written_again_replaces_itself_and_a_resume_drops_later_steps(tmp_path):
    writer = SamplesFile(tmp_path)
    for step in (2, 4, 6):
        writer.append(step, sample_rows(bank(step)))
    writer.append(6, sample_rows(bank(6, n=2)))  # the closing validation at the last step
    assert [r["step"] for r in read_samples(tmp_path)] == [2, 2, 2, 4, 4, 4, 6, 6]
    with writer.path.open("a") as handle:
        handle.write('{"step": 8, "index": 0, "pro')  # torn by a kill
    writer.keep_until(4)  # resumed from the checkpoint at step 4: its evaluation is not run again
    assert [r["step"] for r in read_samples(tmp_path)] == [2, 2, 2, 4, 4, 4]
    assert writer.path.read_text().endswith("}\n")
    writer.keep_until(0)  # a fresh start
    assert read_samples(tmp_path) == []


@pytest.mark.slow
def test_a_synthetic_job_writes_its_samples_as_words_and_to_its_wandb_group_and_a_resume_neither_loses_nor_repeats(
    tmp_path, monkeypatch
):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [beta=0.1, 'data.batch_size=8,16']\n")
    overrides = [
        *TINY_STUDY,  # data.batch_size=8 among them
        "beta=0.1",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "logger=wandb",
        f"hydra.sweep.dir={sweep}",
        f"synthetic.cache_dir={tmp_path / 'cache'}",
        f"reference_cache.dir={tmp_path / 'logps'}",
    ]
    run_dir = sweep / "job"  # a job of the sweep above
    with pytest.raises(RuntimeError, match="preempted at step 3"):
        run_training(
            [*overrides, "+callbacks.stop._target_=tests.helpers.faults.StopAt", "+callbacks.stop.step=3"], run_dir
        )
    assert sorted({r["step"] for r in read_samples(run_dir)}) == [2]
    summary = run_training(overrides, run_dir)
    wandb.finish()
    assert summary["status"] == "completed"
    rows = read_samples(run_dir)
    assert [r["step"] for r in rows] == [2] * 12 + [4] * 12
    assert [r["index"] for r in rows] == list(range(12)) * 2

    task = TopicTask()
    words = set(task.tokenizer().get_vocab())  # the closed vocabulary, special tokens included
    per_prompt = [json.loads(line) for line in (run_dir / "per_prompt.jsonl").read_text().splitlines()]
    wins = {r["step"]: r["win_rate"] for r in per_prompt if "win_rate" in r}
    for row in rows:
        assert set(row["prompt"].split()) <= words and set(row["policy"].split()) <= words
        assert row["policy_length"] >= len(row["policy"].split())  # EOS counts as a token, not a word
        assert row["policy_reward"] == pytest.approx(task.reward(row["prompt"], row["policy"]))  # the golden reward
        assert row["reference_reward"] == pytest.approx(task.reward(row["prompt"], row["reference"]))
        expected = 1.0 if row["policy_reward"] > row["reference_reward"] else 0.0
        assert row["win"] == (0.5 if row["policy_reward"] == row["reference_reward"] else expected)
        assert row["win"] == wins[row["step"]][row["index"]]  # the same judgement as the win rate's

    # Each attempt's wandb run: the sweep's group, a short name, the swept key as a column, the samples table.
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime((sweep / "multirun.yaml").stat().st_mtime))
    for attempt, step in ((0, 2), (1, 4)):
        found = offline_run(run_dir, attempt=attempt)
        assert found["run"].run_group == f"sweep-{stamp}"
        assert found["run"].display_name == "logistic-b0.1-lr0.001-s0-data.batch_size=8"
        assert found["config"]["data.batch_size"] == 8
        (table,) = logged_tables(found, "val/samples").items()
        assert table[0] == step
        logged = [dict(zip(table[1]["columns"], row)) for row in table[1]["data"]]
        assert logged == [{k: v for k, v in r.items() if k != "step"} for r in rows if r["step"] == step]

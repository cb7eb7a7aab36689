"""per_prompt.jsonl: the writer and reader of each evaluation's per-prompt values (no training)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from gpo_lab.store.per_prompt import PER_PROMPT_FILE, PerPromptFile, read_per_prompt, write_from_callback


def lines(run_dir):
    return [json.loads(line) for line in (run_dir / PER_PROMPT_FILE).read_text().splitlines()]


def test_two_writers_merge_by_step_and_a_torn_line_is_ignored(tmp_path):
    win, kl = PerPromptFile(tmp_path, ["win_rate"]), PerPromptFile(tmp_path, ["kl_seq", "kl_token"])
    for step in (10, 20):
        kl.append(step, {"kl_seq": [0.1 * step, 0.2], "kl_token": [0.3, 0.4]})
        win.append(step, {"win_rate": [1.0, 0.5]})
    with (tmp_path / PER_PROMPT_FILE).open("a") as handle:
        handle.write('{"step": 30, "win_rate": [1.0, ')  # a kill mid-write
    read = read_per_prompt(tmp_path)
    assert list(read) == [10, 20]
    assert read[20] == {"kl_seq": [2.0, 0.2], "kl_token": [0.3, 0.4], "win_rate": [1.0, 0.5]}


def test_a_resumed_run_writes_each_step_once(tmp_path):
    first = PerPromptFile(tmp_path, ["win_rate"])
    for step in (10, 20, 30):
        first.append(step, {"win_rate": [0.0, float(step)]})
    with (tmp_path / PER_PROMPT_FILE).open("a") as handle:
        handle.write('{"step": 40, "win_')  # killed at step 40, resumed from the checkpoint at step 10
    resumed = PerPromptFile(tmp_path, ["win_rate"])
    for step in (20, 30, 40):
        resumed.append(step, {"win_rate": [1.0, float(step)]})
    records = lines(tmp_path)  # every line parses: the torn one was dropped, not glued to
    assert [r["step"] for r in records] == [10, 20, 30, 40]
    assert [r["win_rate"][0] for r in records] == [0.0, 1.0, 1.0, 1.0]


def test_a_second_evaluation_at_one_step_replaces_the_first(tmp_path):
    writer = PerPromptFile(tmp_path, ["win_rate"])
    writer.append(50, {"win_rate": [0.0, 0.0]})
    writer.append(50, {"win_rate": [1.0, 1.0]})  # the closing trainer.validate at the last step
    assert lines(tmp_path) == [{"step": 50, "win_rate": [1.0, 1.0]}]


def test_only_global_rank_zero_writes_from_a_callback(tmp_path):
    callback = SimpleNamespace()
    for rank_zero, run_dir in ((False, tmp_path / "other"), (True, tmp_path / "zero")):
        trainer = SimpleNamespace(is_global_zero=rank_zero, default_root_dir=str(run_dir), global_step=7)
        write_from_callback(callback, trainer, ["kl_token"], {"kl_token": torch.tensor([0.5, float("nan")])})
    assert not (tmp_path / "other" / PER_PROMPT_FILE).exists()
    assert lines(tmp_path / "zero") == [{"step": 7, "kl_token": [0.5, None]}]


def test_a_restart_from_step_zero_and_a_rerun_move_the_file_aside(tmp_path):
    from gpo_lab.run.metrics_file import MetricsFileLogger
    from gpo_lab.run.resume import archive_previous_run, resume_point

    for name in ("metrics.jsonl", PER_PROMPT_FILE, "samples.jsonl"):
        (tmp_path / name).write_text('{"step": 10, "val/loss": 0.5}\n')
    assert resume_point(tmp_path, MetricsFileLogger(tmp_path)) == (None, 0)  # no checkpoint: from step 0
    (previous,) = tmp_path.glob("previous-*")
    for name in ("metrics.jsonl", PER_PROMPT_FILE, "samples.jsonl"):  # the earlier attempt's, kept together
        assert (previous / name).exists() and not (tmp_path / name).exists(), name
    rerun = tmp_path / "rerun"
    rerun.mkdir()
    (rerun / PER_PROMPT_FILE).write_text('{"step": 10, "win_rate": [1.0]}\n')
    archive = archive_previous_run(rerun)  # skip_completed=false on a completed run
    assert (archive / PER_PROMPT_FILE).exists() and not (rerun / PER_PROMPT_FILE).exists()

"""Bad input, damaged files and failed jobs: every case ends in one clear message and an honest exit code.

Four classes: the status command and the report on damaged or foreign files (5), data with nothing
to learn (6), common mistakes (7), and the exit codes of a sweep with a failed job (8).
"""

import json
import logging
import os

import pytest

from gpo_lab.data.datamodule import PreferenceDataModule
from gpo_lab.errors import ConfigError
from gpo_lab.models.tokenizers import byte_tokenizer
from gpo_lab.report.__main__ import main as report_main
from gpo_lab.run.summary import RunSummary
from gpo_lab.status import main as status_main
from tests.helpers import ROOT
from tests.helpers.cli import run_cli
from tests.helpers.permissions import as_other_user, run_without_override
from tests.helpers.runs import run_training
from tests.helpers.sweeps import write_job

HISTORY = [(5, {"val/loss": 0.6, "val/offline_reg": 1.0}), (10, {"val/loss": 0.5, "val/offline_reg": 2.0})]


def two_job_sweep(path):
    """A sweep with a good job and a second one whose files the test then damages."""
    good = write_job(path, loss="logistic", beta=0.1, history=HISTORY)
    bad = write_job(path, loss="hinge", beta=0.1, history=HISTORY)
    return good, bad


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def data_overrides(path, *extra):
    return ["+experiment=smoke", "data=hf", f"data.dataset.path={path}", "data.dataset.split=train", *extra]


def failing_run(tmp_path, overrides):
    """The ConfigError of a run that must fail at start-up; its summary.json says failed, with a bounded error."""
    with pytest.raises(ConfigError) as error:
        run_training(overrides, tmp_path / "run")
    path = tmp_path / "run" / "summary.json"
    summary = json.loads(path.read_text())
    assert summary["status"] == "failed" and str(error.value)[:200] in summary["error"]
    assert path.stat().st_size < 16_000
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any training
    return str(error.value)


# --------------------------------------------------------------------------- 5: damaged files
DAMAGE = {
    "garbage": lambda job: (job / "summary.json").write_text("{not json at all"),
    "not an object": lambda job: (job / "summary.json").write_text("[1, 2, 3]"),
    "a JSON string": lambda job: (job / "summary.json").write_text('"completed"'),
    "binary": lambda job: (job / "summary.json").write_bytes(b"\xff\xfe\x00\x81binary" * 50),
    "unreadable": lambda job: ((job / "summary.json").unlink(), (job / "summary.json").mkdir()),
}
EXPECTED = {
    "garbage": "summary.json is not valid JSON",
    "not an object": "summary.json holds list, not a JSON object",
    "a JSON string": "summary.json holds str, not a JSON object",
    "binary": "summary.json is not UTF-8 text",
    "unreadable": "summary.json cannot be read",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_status_lists_every_job_and_names_the_damaged_one(tmp_path, capsys, damage):
    good, bad = two_job_sweep(tmp_path)
    DAMAGE[damage](bad)
    assert status_main([str(tmp_path)]) == 1  # a damaged job is a problem CI must see
    out = capsys.readouterr().out
    assert any(line.startswith(good.name) and " completed " in line for line in out.splitlines())
    assert "1 completed, 1 damaged" in out
    assert f"{bad.name}: {EXPECTED[damage]}" in out and str(bad) in out
    assert status_main([str(tmp_path), "--json"]) == 1
    jobs = {job["dirname"]: job for job in map(json.loads, capsys.readouterr().out.splitlines())}
    assert jobs[good.name]["state"] == "completed" and jobs[good.name]["metrics"]["val/loss"] == 0.5
    assert jobs[bad.name]["state"] == "damaged" and EXPECTED[damage] in jobs[bad.name]["error"]


@pytest.mark.parametrize("damage", ["garbage", "not an object", "binary"])
def test_report_lists_every_job_and_names_the_damaged_one(tmp_path, capsys, damage):
    good, bad = two_job_sweep(tmp_path)
    DAMAGE[damage](bad)
    assert report_main([str(tmp_path), "--wandb", "off"]) == 3  # written; a damaged job leaves the sweep PARTIAL
    text = (tmp_path / "report.md").read_text()
    assert "## Damaged jobs" in text and f"`{bad.name}`: {EXPECTED[damage]}" in text
    assert f"`{good.name}`" in text.split("## Damaged jobs")[0]  # the good job is in the tables


@pytest.mark.parametrize("lines", ['[1, 2]\n"text"\n', "null\n7\n", '{"step": "five", "val/loss": "low"}\n'])
def test_metrics_lines_that_are_not_records_are_skipped(tmp_path, capsys, lines):
    good, bad = two_job_sweep(tmp_path)
    with (bad / "metrics.jsonl").open("a") as handle:
        handle.write(lines)
    assert status_main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 completed" in out and bad.name in out
    assert report_main([str(tmp_path), "--wandb", "off"]) == 0


@pytest.mark.slow
def test_a_sweep_another_user_owns_is_listed_and_reported_elsewhere(tmp_path):
    """A read-only sweep with one job private to its owner: status names it, the report says where to write."""
    sweep = tmp_path / "sweep"
    good, private = two_job_sweep(sweep)
    for path in [*sweep.rglob("*"), sweep]:
        as_other_user(path, 0o755 if path.is_dir() else 0o644)
    as_other_user(private, 0o700)
    env = {"PYTHONPATH": str(ROOT), "MPLCONFIGDIR": str(tmp_path / "mpl")}
    status = run_without_override(["-m", "gpo_lab.status", str(sweep)], cwd=tmp_path, env=env)
    assert status.returncode == 1, status.stderr[-2000:]
    assert good.name in status.stdout and f"{private.name}: summary.json cannot be read" in status.stdout
    report = run_without_override(["-m", "gpo_lab.report", str(sweep), "--wandb", "off"], cwd=tmp_path, env=env)
    assert report.returncode == 2 and "Traceback" not in report.stderr
    assert f"Cannot write the report into the sweep directory {sweep}" in report.stderr and "--out" in report.stderr
    out = tmp_path / "elsewhere"
    report = run_without_override(
        ["-m", "gpo_lab.report", str(sweep), "--out", str(out), "--wandb", "off"], cwd=tmp_path, env=env
    )
    assert report.returncode == 3, report.stderr[-2000:]  # written; the private job leaves the sweep PARTIAL
    assert str(out / "report.md") in report.stdout and private.name in (out / "report.md").read_text()
    assert not (sweep / "report.md").exists()


# --------------------------------------------------------------------------- 6: nothing to learn
def pairs_module(tmp_path, rows, fmt="jsonl"):
    import datasets

    if fmt == "csv":
        path = tmp_path / "pairs.csv"
        datasets.Dataset.from_list(rows).to_csv(path, index=False)
    else:
        path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_every_pair_identical_is_refused_with_the_count(tmp_path, fmt):
    rows = [{"prompt": f"q{i}", "chosen": "same answer", "rejected": "same answer"} for i in range(20)]
    path = pairs_module(tmp_path, rows, fmt)
    message = failing_run(tmp_path, data_overrides(path))
    assert "Every train pair (19 of 19 kept) has chosen == rejected: there is no preference to learn" in message


@pytest.mark.parametrize("identical,warned", [(6, True), (9, True), (3, False)])
def test_mostly_identical_data_is_warned_about(caplog, identical, warned):
    import datasets

    def rows(split, same):
        return [
            {"prompt": f"{split}{i}", "chosen": "same", "rejected": "same" if i < same else f"other {i}"}
            for i in range(10)
        ]

    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows("t", identical)), validation=datasets.Dataset.from_list(rows("v", 0))
    )
    module = PreferenceDataModule(
        splits, max_length=64, max_prompt_length=16, val_split="validation", tokenizer=byte_tokenizer()
    )
    with caplog.at_level(logging.WARNING, logger="gpo_lab.data.datamodule"):
        module.setup("fit")
    assert module.stats["train_identical"] == identical and module.stats["validation_identical"] == 0
    mostly = [r.getMessage() for r in caplog.records if "mostly degenerate" in r.getMessage()]
    assert mostly == (
        [
            f"train: {identical} of 10 pairs ({10 * identical}%, more than 50%) have chosen == rejected; "
            "the data is mostly degenerate. Check data.columns.chosen and data.columns.rejected."
        ]
        if warned
        else []
    )


# --------------------------------------------------------------------------- 7: common mistakes
@pytest.mark.parametrize(
    "name,content,expected",
    [
        ("empty.jsonl", b"", "empty.jsonl is empty: it holds no preference pairs"),
        ("blank.jsonl", b"\n  \n\n", "blank.jsonl holds no records"),
        ("empty.json", b"[]", "empty.json holds an empty list"),
        ("numbers.json", b"[1, 2, 3]", "numbers.json is a list of int, not of objects"),
        ("lists.jsonl", b"[1, 2]\n[3, 4]\n", "lists.jsonl, line 1: holds a JSON list, not an object"),
        ("binary.jsonl", os.urandom(2048) + b"\xff" * 84_000, "binary.jsonl is not UTF-8 text"),
        ("latin1.csv", "prompt,chosen,rejected\nq,caf\xe9,th\xe9\n".encode("latin-1"), "latin1.csv is not UTF-8 text"),
        ("garbage.parquet", b"\x00\x01not parquet" * 100, "garbage.parquet is not a Parquet file"),
    ],
)
def test_unusable_data_files_get_one_clear_message(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    message = failing_run(tmp_path, data_overrides(path))
    assert expected in message and len(message) < 2000


def test_a_file_without_extension_is_not_looked_up_on_the_hub(tmp_path):
    path = write_jsonl(tmp_path / "pairs", [{"prompt": "p", "chosen": "a", "rejected": "b"}] * 4)
    message = failing_run(tmp_path, data_overrides(path))
    assert "is a local file without a known extension" in message and ".jsonl" in message


@pytest.mark.parametrize("path", ["{tmp}/pairs.jsonl", "{tmp}/data.json"])
def test_a_directory_given_as_a_data_file(tmp_path, path):
    path = path.format(tmp=tmp_path)
    os.mkdir(path)
    message = failing_run(tmp_path, data_overrides(path))
    assert f"{path!r} (data.dataset.path) is a directory, not a" in message


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["+experiment=smoke", "loss=custom"], "loss.fn is not set: loss=custom needs your f"),
        (["+experiment=smoke", "data=hf"], "data.dataset.path is not set: data=hf needs its data"),
        (["+experiment=smoke", "beta=1e300"], "beta=1e+300 is too large"),
        (["+experiment=smoke", "beta=1e5"], "beta=100000.0 is too large"),
    ],
)
def test_unset_and_overflowing_values_are_refused_at_start_up(tmp_path, overrides, expected):
    assert expected in failing_run(tmp_path, overrides)


@pytest.mark.parametrize("val_size", ["20", "10", "1.5", "0.0", "0"])
def test_out_of_range_val_size_names_the_key(tmp_path, val_size):
    path = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(10)]
    )
    message = failing_run(tmp_path, data_overrides(path, f"data.val_size={val_size}"))
    assert f"data.val_size={val_size} cannot split the 10 pairs" in message and "from 1 to 9" in message


def test_a_file_where_the_checkpoint_folder_goes_is_refused_before_training(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("not a folder")
    with pytest.raises(ConfigError, match="checkpoints is a file, so no checkpoint can be written"):
        run_training(["+experiment=smoke"], run_dir)
    assert not (run_dir / "metrics.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("read_only", ["checkpoints", "run directory"])
def test_an_unwritable_run_directory_is_refused_before_training(tmp_path, read_only):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    as_other_user(run_dir / "checkpoints" if read_only == "checkpoints" else run_dir, 0o555)
    result = run_without_override(
        [
            "-m",
            "gpo_lab",
            "+experiment=smoke",
            f"hydra.run.dir={run_dir}",
            "hydra.output_subdir=null",
            "hydra/job_logging=stdout",
        ],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Cannot write into" in result.stderr and "Make it writable" in result.stderr
    assert "Traceback" not in result.stderr and not (run_dir / "metrics.jsonl").exists()


def test_error_text_in_summary_json_is_bounded(tmp_path):
    summary = RunSummary(tmp_path, {"name": "x"})
    try:
        raise ValueError("raw bytes " + "\\xff" * 40_000)
    except ValueError as error:
        summary.failed(error)
    text = (tmp_path / "summary.json").read_text()
    data = json.loads(text)
    assert len(text) < 16_000 and "characters cut" in data["error"] and data["error"].startswith("ValueError: raw")
    assert all(len(entry) <= 1100 for entry in data["traceback"])


# --------------------------------------------------------------------------- 8: exit codes
def test_status_exits_non_zero_when_a_job_failed(tmp_path, capsys):
    write_job(tmp_path, loss="logistic", beta=0.1, history=HISTORY)
    assert status_main([str(tmp_path)]) == 0
    write_job(tmp_path, loss="hinge", beta=0.1, history=HISTORY, status="failed", error="ConfigError: bad")
    assert status_main([str(tmp_path)]) == 1
    assert "loss=hinge,optim.lr=1e-05: ConfigError: bad" in capsys.readouterr().out
    write_job(tmp_path, loss="squared", beta=0.1, history=HISTORY, status="running")
    assert status_main([str(tmp_path), "--json"]) == 1  # an interrupted job is not a failure, the failed one is


SWEEP = ["-m", "+experiment=smoke", "trainer.max_steps=2", "trainer.val_check_interval=2"]
FAIL_HINGE = [
    "+callbacks.fail._target_=tests.helpers.faults.FailFor",
    "+callbacks.fail.loss=hinge",
    "+callbacks.fail.beta=0.5",
    "+callbacks.fail.run_loss=${loss.fn}",
    "+callbacks.fail.run_beta=${beta}",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "grid,failed",
    [
        (["loss=logistic", "beta=0.5,-1"], ("logistic", -1)),  # refused at start-up (a ConfigError)
        (["loss=logistic,hinge", "beta=0.5", *FAIL_HINGE], ("hinge", 0.5)),  # an error during training
        (["cluster=local", "loss=logistic,hinge", "beta=0.5", *FAIL_HINGE], ("hinge", 0.5)),  # submitit
    ],
    ids=["config-error", "runtime-error", "submitit-local"],
)
def test_a_sweep_with_a_failed_job_exits_non_zero_after_the_others_ran(tmp_path, grid, failed):
    result = run_cli([*SWEEP, *grid, f"hydra.sweep.dir={tmp_path}"], cwd=ROOT)
    assert result.returncode == 1, result.stderr[-3000:]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")}
    assert len(summaries) == 2
    failed_jobs = [name for name, s in summaries.items() if s["status"] == "failed"]
    assert [(summaries[name]["loss"], summaries[name]["beta"]) for name in failed_jobs] == [failed]
    assert "1 of the sweep's 2 jobs failed" in result.stderr and f"  {failed_jobs[0]}: " in result.stderr
    assert sum(s["status"] == "completed" for s in summaries.values()) == 1  # the other job ran to the end
    assert status_main([str(tmp_path)]) == 1


@pytest.mark.slow
def test_a_sweep_without_failures_exits_zero(tmp_path):
    result = run_cli([*SWEEP, "loss=logistic,hinge", "beta=0.5", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "failed" not in result.stderr

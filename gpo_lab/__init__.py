"""gpo_lab: offline preference optimization with the GPO family, swept with Hydra, trained with Lightning.

The packages, lowest layer first; a package imports only from the layers above it in this list
(``tests/test_layers.py`` checks it):

errors.py   errors a user can fix, reported as one clear message
config_dir.py  where the Hydra configs are (in the package when installed from a wheel)
store/      a run's files on disk: their names (RunFiles), atomic writes, locks, caches, records, per-prompt values
parallel/   the ranks of a run and the data-parallel strategies
losses/     GPO and the field's losses
scoring/    log pi(y|x) of a batch in every layout (plain, prefix-shared packed, encoder-decoder)
data/       preference data: sources, schemas, tokenization, the resumable length-grouped data module
models/     policies (Hugging Face, tiny, GGUF, LoRA), tokenizers, the reference and its log-prob cache
eval/       on-policy samples, judges, and the sample-bank / KL / win-rate callbacks
training/   the LightningModule, its optimizer, pair statistics and the non-finite guard
tasks/      language, synthetic, bandit: each builds (module, datamodule) from a config
run/        the life of one run: checks, directory, loggers, fit, summary, exit codes
status.py   ``python -m gpo_lab.status``: the state of every job of a sweep
report/     a sweep into tables and the paper's figures (``python -m gpo_lab.report``)
"""

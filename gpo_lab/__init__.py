"""gpo_lab: offline preference optimisation with the GPO family, swept with Hydra, trained with Lightning.

losses/  module.py  metrics.py     the objective: GPO and the field's losses, the LightningModule, pair statistics
optimisation.py                    the optimiser and its warm-up schedule, shared by every task's module
scoring/    log pi(y|x) of a batch in every layout (plain, prefix-shared packed, encoder-decoder)
models/     policies (Hugging Face, tiny, GGUF, LoRA), tokenizers, the reference and its log-prob cache
data/       preference data: sources, schemas, tokenization, the resumable length-grouped data module
tasks/      language, synthetic, bandit: each builds (module, datamodule) from a config
eval/       on-policy samples, judges, and the sample-bank / KL / win-rate callbacks
run/        a run's life (train), its files (summary, metrics, config), locks, caches, checks, status
report/     a sweep into tables and the paper's figures (``python -m gpo_lab.report``)
"""

from gpo_lab import _legacy

_legacy.install()

"""KL(pi_theta || pi_ref) on samples of the current policy, by two unbiased estimators.

For y ~ pi_theta(.|x):
- ``kl_seq``: the sequence log-ratio log pi_theta(y|x) - log pi_ref(y|x);
- ``kl_token``: the sum over the generated tokens of the exact next-token KL between the two
  models given the prefix (a Rao-Blackwellised form of the first, with lower variance).
Both are averaged over the held-out prompts, each with its standard error. Responses end at EOS or
are cut at ``max_new_tokens``, so this is the KL of the cut responses (``val/capped_fraction`` says how
often the cut bites).
"""

from __future__ import annotations

import pytorch_lightning as pl

from gpo_lab.eval.sample_bank import find_bank, log_value
from gpo_lab.eval.sampling import SampleBank, mean_and_se
from gpo_lab.store.per_prompt import write_from_callback


def kl_estimates(bank: SampleBank) -> dict[str, float]:
    seq, seq_se = mean_and_se(bank.policy_logps - bank.reference_logps)
    token, token_se = mean_and_se(bank.token_kl)
    return {"kl_seq": seq, "kl_seq_se": seq_se, "kl_token": token, "kl_token_se": token_se}


class KLCallback(pl.Callback):
    """Logs val/kl_seq, val/kl_token and their standard errors at every evaluation with a sample bank
    (test/... the same on the test bank, when there is one); each validation prompt's two estimates go
    to ``per_prompt.jsonl`` (:mod:`gpo_lab.store.per_prompt`)."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        banks = find_bank(trainer, "kl")
        bank = banks.current(trainer, pl_module)
        if bank is None:
            return
        for prefix, each in (("val", bank), ("test", banks.current_test(trainer, pl_module))):
            for name, value in (kl_estimates(each) if each is not None else {}).items():
                log_value(pl_module, f"{prefix}/{name}", value, len(each))
        per_prompt = {"kl_seq": bank.policy_logps - bank.reference_logps, "kl_token": bank.token_kl}
        write_from_callback(self, trainer, list(per_prompt), per_prompt)

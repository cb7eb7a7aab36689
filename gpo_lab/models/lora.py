"""LoRA policies (peft): any model config with trainable low-rank adapters.

Their reference is the same model with the adapters switched off
(:class:`gpo_lab.models.reference.AdaptersDisabled`), so no second copy of the weights is held.
"""

from __future__ import annotations

import torch
from hydra.utils import get_method

from gpo_lab.errors import ConfigError

INSTALL_HINT = "pip install 'gpo_lab[lora]' (or pip install peft)"


def _peft():
    try:
        import peft
    except ImportError:
        raise ConfigError(f"LoRA needs the peft package: {INSTALL_HINT}.") from None
    return peft


def is_lora_model(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def with_lora(
    tokenizer,
    base: str,
    r: int = 16,
    alpha: float = 32,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    bias: str = "none",
    modules_to_save: list[str] | None = None,
    **base_kwargs,
) -> torch.nn.Module:
    """The model built by the function ``base`` (an import path, called with ``tokenizer`` and
    ``base_kwargs``), with trainable LoRA adapters.

    Taking the builder's name and its keyword arguments lets a LoRA model config extend any other
    model config (its ``policy`` keys become ``base_kwargs``). The base weights are frozen; only
    the adapters (and ``modules_to_save``) train. The task type (causal or encoder-decoder) is
    read from the model.
    """
    peft = _peft()
    if r < 1 or alpha <= 0:
        raise ConfigError(
            f"LoRA needs r >= 1 and alpha > 0 (model.policy.r, model.policy.alpha), got r={r}, alpha={alpha}."
        )
    model = get_method(base)(tokenizer=tokenizer, **base_kwargs)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        bias=bias,
        target_modules=targets,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
        task_type=peft.TaskType.SEQ_2_SEQ_LM if seq2seq else peft.TaskType.CAUSAL_LM,
    )
    return peft.get_peft_model(model, config)

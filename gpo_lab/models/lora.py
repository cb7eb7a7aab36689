"""LoRA policies (peft): any model config with trainable low-rank adapters.

Their reference is the same model with the adapters switched off
(:class:`gpo_lab.models.reference.AdaptersDisabled`), so no second copy of the weights is held.
That reference is pi_ref only while the base weights stay those of the initial policy:
:func:`adapters_off_problems` names the peft options under which they do not (measured: trained
biases drift the reference by nats within a few steps; PiSSA and OLoRA rewrite the base weights
at start-up; ``init_lora_weights=False`` starts the adapters non-zero).
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


# init_lora_weights values (besides true) that leave the base weights alone and start the adapters at zero.
ZERO_INITS = ("gaussian", "orthogonal", "mica", "eva")
# Names of the trainable tensors that peft's disable_adapter switches off: the adapters, DoRA's magnitudes,
# the trained copies of ``modules_to_save`` (the original module is kept and used) and trainable token deltas.
ADAPTER_PARAMETERS = ("lora_", "modules_to_save.", "trainable_tokens_delta")


def adapters_off_problems(model: torch.nn.Module) -> list[str]:
    """Why the model with its adapters switched off is not the initial policy, one line per reason
    (none when it is). Checked at start-up, before anything trains."""
    problems = []
    for config in getattr(model, "peft_config", {}).values():
        bias = getattr(config, "bias", "none")
        if bias != "none":
            problems.append(
                f"bias={bias!r} trains the base model's biases, and switching the adapters off does not undo "
                "them (set model.policy.bias=none)"
            )
        init = getattr(config, "init_lora_weights", True)
        if not (init is True or (isinstance(init, str) and init in ZERO_INITS)):
            problems.append(
                f"init_lora_weights={init!r} "
                + (
                    "starts the adapters non-zero, so the initial policy is not the base model"
                    if init is False
                    else "rewrites the base weights at start-up, so the base model is not the initial policy"
                )
                + " (set model.policy.init_lora_weights=true or gaussian)"
            )
    trained_base = [
        name
        for name, parameter in model.named_parameters()
        if parameter.requires_grad and not any(part in name for part in ADAPTER_PARAMETERS)
    ]
    if trained_base and not any(p.startswith("bias=") for p in problems):
        shown = ", ".join(trained_base[:3]) + (f" and {len(trained_base) - 3} more" if len(trained_base) > 3 else "")
        problems.append(f"base weights train ({shown}), and switching the adapters off does not undo them")
    return problems


def with_lora(
    tokenizer,
    base: str,
    r: int = 16,
    alpha: float = 32,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    bias: str = "none",
    modules_to_save: list[str] | None = None,
    use_dora: bool = False,
    use_rslora: bool = False,
    init_lora_weights: bool | str = True,
    **base_kwargs,
) -> torch.nn.Module:
    """The model built by the function ``base`` (an import path, called with ``tokenizer`` and
    ``base_kwargs``), with trainable LoRA adapters.

    Taking the builder's name and its keyword arguments lets a LoRA model config extend any other
    model config (its ``policy`` keys become ``base_kwargs``). The base weights are frozen; only
    the adapters (and ``modules_to_save``) train. The task type (causal or encoder-decoder) is
    read from the model. ``use_dora``, ``use_rslora`` and ``init_lora_weights`` are peft's; the
    reference with the adapters switched off refuses the settings under which it would not be pi_ref
    (:func:`adapters_off_problems`).
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
        use_dora=use_dora,
        use_rslora=use_rslora,
        init_lora_weights=init_lora_weights,
        task_type=peft.TaskType.SEQ_2_SEQ_LM if seq2seq else peft.TaskType.CAUSAL_LM,
    )
    return peft.get_peft_model(model, config)

"""LoRA policies (peft) and their reference: the same model with the adapters switched off.

Only the adapters train, so pi_ref — the model before training — is the base model itself:
reading it with the adapters disabled gives exactly the reference log-probs without holding a
second copy of the weights (a frozen copy would double the memory of the largest part).
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Iterator

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


def with_lora(tokenizer, base: str, r: int = 16, alpha: float = 32, dropout: float = 0.0,
              target_modules: str | list[str] = "all-linear", bias: str = "none",
              modules_to_save: list[str] | None = None, **base_kwargs) -> torch.nn.Module:
    """The model built by the function ``base`` (an import path, called with ``tokenizer`` and
    ``base_kwargs``), with trainable LoRA adapters.

    Taking the builder's name and its keyword arguments lets a LoRA model config extend any other
    model config (its ``policy`` keys become ``base_kwargs``). The base weights are frozen; only
    the adapters (and ``modules_to_save``) train. The task type (causal or encoder-decoder) is
    read from the model.
    """
    peft = _peft()
    if r < 1 or alpha <= 0:
        raise ConfigError(f"LoRA needs r >= 1 and alpha > 0 (model.policy.r, model.policy.alpha), got r={r}, "
                          f"alpha={alpha}.")
    model = get_method(base)(tokenizer=tokenizer, **base_kwargs)
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, bias=bias, target_modules=targets,
                             modules_to_save=list(modules_to_save) if modules_to_save else None,
                             task_type=peft.TaskType.SEQ_2_SEQ_LM if seq2seq else peft.TaskType.CAUSAL_LM)
    return peft.get_peft_model(model, config)


class _AdaptersOff:
    """Calls a part of the policy (its decoder, its output layer) with the adapters switched off."""

    def __init__(self, reference: "AdaptersDisabled", part):
        self.reference, self.part = reference, part

    def __call__(self, *args, **kwargs):
        with self.reference.adapters_off():
            return self.part(*args, **kwargs)


class AdaptersDisabled(torch.nn.Module):
    """pi_ref for a LoRA policy: every call runs the policy's base model, adapters disabled,
    without gradients and in eval mode.

    The policy is held outside the module tree, so the reference owns no parameters (nothing is
    counted, saved or moved twice) and switching it to eval leaves the policy's mode alone.
    ``parameters()`` yields the shared weights, for device and dtype look-ups; freezing the
    reference (``requires_grad_(False)``) leaves them alone.
    """

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        if not is_lora_model(policy):
            raise ConfigError("reference=adapters_disabled needs a LoRA policy (model=lora); for a full model use "
                              "reference=copy.")
        self._policy = (policy,)
        base_forward = inspect.signature(policy.get_base_model().forward).parameters
        self._cache_keyword = "cache" if "cache" in base_forward else "past_key_values"

    @property
    def policy(self) -> torch.nn.Module:
        return self._policy[0]

    @property
    def config(self):
        return self.policy.config

    @contextmanager
    def adapters_off(self) -> Iterator[None]:
        policy = self.policy
        was_training = policy.training
        policy.eval()
        try:
            with torch.no_grad(), policy.disable_adapter():
                yield
        finally:
            policy.train(was_training)

    def forward(self, *args, cache=None, **kwargs):
        """The base model's forward. ``cache`` (the KV cache) is passed on under the name the
        model takes it by (``cache`` from transformers 5.2x on, ``past_key_values`` before)."""
        if cache is not None:
            kwargs[self._cache_keyword] = cache
        with self.adapters_off():
            return self.policy(*args, **kwargs)

    def get_decoder(self):
        return _AdaptersOff(self, self.policy.get_decoder())

    def get_output_embeddings(self):
        layer = self.policy.get_output_embeddings()
        return None if layer is None else _AdaptersOff(self, layer)

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]:
        return self.policy.parameters(recurse)

    def requires_grad_(self, requires_grad: bool = True) -> "AdaptersDisabled":
        """Nothing to freeze: the reference always runs without gradients, and the weights that
        ``parameters()`` shows are the policy's, whose adapters must keep training."""
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The gradients of the shared weights belong to the policy's optimizer step."""

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights this reference computes with (the base model's, adapters left out), e.g. to
        fingerprint it; its own ``state_dict()`` is empty, as it owns nothing."""
        return {name: tensor for name, tensor in self.policy.state_dict().items() if "lora_" not in name}


def adapters_disabled(policy: torch.nn.Module, tokenizer=None) -> AdaptersDisabled:
    """The ``reference`` factory for LoRA policies (conf/reference/adapters_disabled.yaml)."""
    return AdaptersDisabled(policy)

"""Muon for the transformer blocks' weight matrices, AdamW for everything else, as one Trainer optimizer.

Muon (Jordan et al. 2024; ``torch.optim.Muon`` since torch 2.9) orthogonalises each 2-D update with a few
Newton-Schulz iterations, so every direction of a weight matrix moves at the same rate; on small GPTs it
reaches a given loss in markedly fewer steps than AdamW (the nanoGPT speedruns). It is defined for hidden
weight matrices only: token/position embeddings, the output head, norm gains and biases stay with AdamW,
as in those speedruns and in Moonshot's "Muon is scalable" (Liu et al. 2025).

``Trainer`` steps, schedules and checkpoints a single optimizer, so `MuonWithAdamW` is one
``torch.optim.Optimizer`` whose ``param_groups`` are the two inner optimizers' groups (the same dicts: the
learning-rate scheduler's changes reach both) and whose state dict holds both states. Scripts pass it to
``Trainer`` through ``optimizer_cls_and_kwargs`` (`trainer_optimizer_kwargs`), Trainer's hook for
optimizers that need the model to split their parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from .arguments import ValidatedArguments
from .trainer import decay_parameter_names


@dataclass
class OptimizerArguments(ValidatedArguments):
    """Which optimizer trains the blocks' weight matrices (the rest always uses Trainer's ``--optim``)."""

    muon: bool = field(
        default=False,
        metadata={
            "help": "Train the transformer blocks' 2-D weight matrices with torch.optim.Muon; embeddings, "
            "the output head, norms and biases keep AdamW (--learning_rate, --adam_beta1/2, ...)."
        },
    )
    muon_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Muon's learning rate (default: --learning_rate). Muon's updates are scaled to AdamW's "
            "RMS (torch's adjust_lr_fn='match_rms_adamw'), so the same value is a sound start."
        },
    )
    muon_momentum: float = field(default=0.95, metadata={"help": "Muon's (Nesterov) momentum."})


def muon_parameter_names(model: nn.Module) -> list[str]:
    """The parameters Muon trains: 2-D weight matrices inside the blocks, not embeddings or output heads."""
    outside = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        outside.add(id(head.weight))
    return [
        name
        for name, param in model.named_parameters()
        if param.ndim == 2 and param.requires_grad and id(param) not in outside
    ]


class MuonWithAdamW(torch.optim.Optimizer):
    """``torch.optim.Muon`` on the blocks' weight matrices and AdamW (Trainer's ``--optim``) on the rest.

    ``param_groups`` lists Muon's groups, then AdamW's: a learning-rate scheduler sees (and scales) each
    group's own base rate. Weight decay: Muon's decoupled decay on its matrices; for AdamW's parameters the
    GPT rule of `decay_parameter_names` (matrices only, never embeddings, norms or biases).
    """

    def __init__(
        self,
        model: nn.Module,
        args: TrainingArguments,
        learning_rate: float | None = None,
        momentum: float = 0.95,
    ) -> None:
        muon_names = set(muon_parameter_names(model))
        decayed = set(decay_parameter_names(model))
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        adamw_cls, adamw_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        if not issubclass(adamw_cls, torch.optim.Optimizer) or "lr" not in adamw_kwargs:
            raise ValueError(f"--muon pairs Muon with an AdamW-style --optim; got --optim {args.optim}.")
        self.muon = torch.optim.Muon(
            [p for name, p in params if name in muon_names],
            lr=learning_rate or args.learning_rate,
            weight_decay=args.weight_decay,
            momentum=momentum,
            adjust_lr_fn="match_rms_adamw",
        )
        rest = [(name, p) for name, p in params if name not in muon_names]
        self.adamw = adamw_cls(
            [
                {"params": [p for name, p in rest if name in decayed], "weight_decay": args.weight_decay},
                {"params": [p for name, p in rest if name not in decayed], "weight_decay": 0.0},
            ],
            **adamw_kwargs,
        )
        # defaults["lr"] is --learning_rate, which schedules such as cosine_with_min_lr read as the base rate.
        super().__init__(self._inner_groups(), defaults={"lr": args.learning_rate})

    def _inner_groups(self) -> list[dict[str, Any]]:
        return [*self.muon.param_groups, *self.adamw.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        # Loading replaces the inner optimizers' group dicts: share the new ones again.
        self.param_groups = self._inner_groups()


class _MuonWithAdamWFactory:
    """What ``Trainer(optimizer_cls_and_kwargs=...)`` instantiates, then calls with the model."""

    def __call__(self, model: nn.Module, **kwargs: Any) -> MuonWithAdamW:
        return MuonWithAdamW(model, **kwargs)


def trainer_optimizer_kwargs(optim_args: OptimizerArguments, args: TrainingArguments) -> dict[str, Any]:
    """Keyword arguments for ``Trainer(...)``: Muon + AdamW with ``--muon``, else nothing (Trainer's own)."""
    if not optim_args.muon:
        return {}
    settings = {
        "args": args,
        "learning_rate": optim_args.muon_learning_rate,
        "momentum": optim_args.muon_momentum,
    }
    return {"optimizer_cls_and_kwargs": (_MuonWithAdamWFactory, settings)}


__all__ = ["MuonWithAdamW", "OptimizerArguments", "muon_parameter_names", "trainer_optimizer_kwargs"]

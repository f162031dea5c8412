"""`finetune`: the whole model trained on each domain in turn — the forgetting baseline."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dualmem.lm.model import window_losses
from dualmem.lm.text_learner import TextLearner


@dataclass(frozen=True)
class FinetuneConfig:
    """No hyperparameter beyond the shared lm.finetune settings."""


class TextFinetune(TextLearner):
    name = "finetune"
    Config = FinetuneConfig

    def observe(self, batch: torch.Tensor, domain: int) -> None:
        self.step(window_losses(self.model, batch).mean())

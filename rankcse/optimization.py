"""The optimiser side of a run: AdamW, the linear warm-up/decay schedule and the fp16 loss scaler, stepped as one."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from transformers import get_linear_schedule_with_warmup

from rankcse.config import TrainConfig


class Optimization:
    """What one optimisation step needs; ``parameters`` returns the trainable parameters (clipped each step)."""

    def __init__(
        self, parameters: Callable[[], Iterable[torch.nn.Parameter]], cfg: TrainConfig, total_steps: int, amp_dtype: torch.dtype | None
    ) -> None:
        self.parameters = parameters
        self.grad_clip = cfg.grad_clip
        self.optimizer = torch.optim.AdamW(parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, cfg.warmup_steps, total_steps)
        # Loss scaling only for fp16; a disabled scaler passes every call through, so there is one step path.
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self.scheduler.get_last_lr()[0]

    def parts(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.amp.GradScaler]:
        """``(optimizer, scheduler, scaler)``, as the resume checkpoint saves and restores them."""
        return self.optimizer, self.scheduler, self.scaler

    def step(self, loss: torch.Tensor) -> None:
        """Backward, optional gradient clipping, optimiser and schedule step (through the scaler, a no-op unless fp16)."""
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

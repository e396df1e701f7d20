"""Backbones made of an ordered list of stages (stem, blocks, last conv), so that training can freeze the early
stages or give them a smaller learning rate (train_pose: optim.early_stages, optim.early_lr_factor).

A frozen stage has requires_grad False and stays in eval mode (BatchNorm keeps its running statistics) whatever
`train()` is called with.
"""
from typing import List

import torch.nn as nn


class StagedBackbone(nn.Module):
    """Base class: subclasses implement `stages()` (input to output order)."""

    frozen_stages: int = 0

    def stages(self) -> List[nn.Module]:
        raise NotImplementedError

    def early_parameters(self, num_stages: int):
        """The parameters of the first `num_stages` stages."""
        return [p for stage in self.stages()[:num_stages] for p in stage.parameters()]

    def freeze_early_stages(self, num_stages: int) -> None:
        stages = self.stages()
        if not 0 <= num_stages <= len(stages):
            raise ValueError(f'num_stages must be in 0..{len(stages)}, got {num_stages}')
        for stage in stages[:num_stages]:
            for p in stage.parameters():
                p.requires_grad_(False)
        self.frozen_stages = int(num_stages)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for stage in self.stages()[:self.frozen_stages]:
            stage.eval()
        return self

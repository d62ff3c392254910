import os

import torch

# DeepSpeed (imported by a DeepSpeed run) looks for an accelerator and warns when it finds none; on a
# machine without one, the CPU is what we mean, so say so.
if not torch.cuda.is_available() and not torch.backends.mps.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from wrpo.training.config import WRPOConfig
from wrpo.training.run import train
from wrpo.training.schedules import alpha_at
from wrpo.training.trainer import WRPOTrainer

__all__ = ["WRPOConfig", "WRPOTrainer", "alpha_at", "train"]

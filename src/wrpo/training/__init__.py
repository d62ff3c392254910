from wrpo.training.config import WRPOConfig
from wrpo.training.run import train
from wrpo.training.schedules import alpha_at
from wrpo.training.trainer import WRPOTrainer

__all__ = ["WRPOConfig", "WRPOTrainer", "alpha_at", "train"]

"""wrpo: implicit model fusion by Weighted-Reward Preference Optimization (WRPO, ICLR 2025)."""

__version__ = "0.1.0"

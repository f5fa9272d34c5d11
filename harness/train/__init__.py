"""Training: SFT and SDFT on one shared accelerate loop (see `loop.py`)."""

from .config import TrainConfig

__all__ = ["TrainConfig"]

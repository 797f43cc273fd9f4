"""gptmini: a small GPT in PyTorch, built chapter by chapter in the book.

The public names are imported on first use, so ``import gptmini`` is quick and
``gptmini.data`` works without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "auto_device": "gptmini.device",
    "CharTokenizer": "gptmini.tokenizer",
    "BPETokenizer": "gptmini.tokenizer",
    "GPT": "gptmini.model",
    "GPTConfig": "gptmini.model",
    "generate": "gptmini.generate",
    "Trainer": "gptmini.train",
    "load_checkpoint": "gptmini.checkpoints",
    "TrainConfig": "gptmini.train",
}

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "GPT",
    "GPTConfig",
    "TrainConfig",
    "Trainer",
    "auto_device",
    "generate",
    "load_checkpoint",
]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:  # for editors and type checkers; at run time __getattr__ below does the work
    from gptmini.checkpoints import load_checkpoint
    from gptmini.device import auto_device
    from gptmini.generate import generate
    from gptmini.model import GPT, GPTConfig
    from gptmini.tokenizer import BPETokenizer, CharTokenizer
    from gptmini.train import TrainConfig, Trainer


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gptmini' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)

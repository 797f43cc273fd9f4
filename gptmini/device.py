"""Choosing where tensors live: CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import os

import torch

ENV_VAR = "GPTMINI_DEVICE"
_KNOWN = ("cpu", "cuda", "mps")


def _available(kind: str) -> bool:
    if kind == "cpu":
        return True
    if kind == "cuda":
        return torch.cuda.is_available()
    return torch.backends.mps.is_available()


def auto_device(preferred: str | None = None) -> torch.device:
    """Return the best available device: cuda > mps > cpu, unless told otherwise.

    ``preferred`` (or the ``GPTMINI_DEVICE`` environment variable) names one explicitly,
    e.g. ``"cpu"``, ``"cuda"`` or ``"cuda:1"``; the test configuration sets it to ``cpu`` so that
    every stored notebook output reproduces on any machine.
    """
    choice = preferred if preferred is not None else os.environ.get(ENV_VAR, "").strip()
    if not choice:
        for kind in ("cuda", "mps"):
            if _available(kind):
                return torch.device(kind)
        return torch.device("cpu")
    source = "argument" if preferred is not None else f"{ENV_VAR} environment variable"
    kind, _, index = choice.lower().partition(":")
    if kind not in _KNOWN or (index and not index.isdigit()):
        raise ValueError(
            f"unknown device {choice!r} (from the {source}); "
            f"allowed: 'cpu', 'cuda', 'cuda:N', 'mps', or unset for automatic choice"
        )
    if not _available(kind):
        raise ValueError(f"device {choice!r} (from the {source}) is not available on this machine")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise ValueError(
            f"device {choice!r} (from the {source}) does not exist: "
            f"this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return torch.device(choice.lower())

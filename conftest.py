"""Test-wide settings that notebook kernels started by nbval inherit through the environment."""

import os

# The reproducibility contract: validation runs on the CPU, whatever the machine has,
# with fixed hashing and thread counts so that stored outputs reproduce anywhere.
os.environ["GPTMINI_DEVICE"] = "cpu"
# One thread: how a reduction is split between threads changes its last bits, so the stored outputs
# must not depend on the core count (`make execute` stores them with the same setting).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("PYTHONHASHSEED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

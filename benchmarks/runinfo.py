"""What every benchmark records about how and where it ran, and how it saves its results.

Imported by the scripts in this folder (which Python puts on ``sys.path`` when one of them is run) and
by notebooks that add ``../benchmarks`` to ``sys.path``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys

import torch


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line() -> str:
    """The command as run: thread setting, nice, and the script's arguments."""
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    return env + ("nice " if os.nice(0) > 0 else "") + "python " + shlex.join(sys.argv)


def run_info() -> dict:
    """The command, and the machine: platform, CPU, core count, torch version and threads."""
    return {
        "command": command_line(),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    }


def write_json(path: str, result: dict) -> None:
    """Write ``result`` as indented JSON (creating the folder) and say where."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"wrote {path}")

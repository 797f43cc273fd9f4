"""Distributed data parallel on the CPU: two gloo processes take the step one process takes."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from gptmini.model import GPT, GPTConfig
from gptmini.train import TrainConfig, Trainer

WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    from gptmini.model import GPT, GPTConfig
    from gptmini.train import Trainer, TrainConfig
    import torch.distributed as dist

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=31, block_size=8, n_layer=1, n_head=2, n_embd=16))
    tokens = np.random.default_rng(0).integers(0, 31, 3000).astype(np.uint16)
    tc = TrainConfig(max_steps=2, batch_size=3, eval_interval=0, eval_iters=1, progress=False, device="cpu")
    trainer = Trainer(model, tokens, None, tc)
    trainer.train()
    if trainer.rank == 0:
        model.save(sys.argv[1])
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(script), str(tmp_path / "ddp")],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=31, block_size=8, n_layer=1, n_head=2, n_embd=16))
    tokens = np.random.default_rng(0).integers(0, 31, 3000).astype(np.uint16)
    tc = TrainConfig(max_steps=2, batch_size=6, eval_interval=0, eval_iters=1, progress=False, device="cpu")
    Trainer(model, tokens, None, tc).train()
    ddp = GPT.load(tmp_path / "ddp")
    for (name, a), b in zip(model.state_dict().items(), ddp.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=f"{name} differs")

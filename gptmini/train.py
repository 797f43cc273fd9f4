"""Pretraining: AdamW (or Muon), warmup + cosine decay, clipping, accumulation, evaluation, checkpoints, DDP.

Several processes (GPUs, or CPU processes with gloo) train one model with PyTorch's
DistributedDataParallel when started by ``torchrun``::

    torchrun --standalone --nproc_per_node=N -m gptmini train --config configs/shakespeare_char_gpu.toml

Each process reads RANK / WORLD_SIZE / LOCAL_RANK from the environment, draws the same global batch
and trains on its own slice of it; DDP averages the gradients, so N processes with ``batch_size`` B
take the same step as one process with batch N·B. Every rank evaluates (on its slice of the sampled
evaluation batches, or on the whole split when ``eval_iters`` is None); the losses recorded and printed
are rank 0's, and only rank 0 prints, logs and saves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from gptmini.checkpoints import (
    TOKENIZER_NAME,
    check_out_dir,
    load_tokenizer,
    recover_interrupted_save,
    replacing_directory,
    verified_checkpoint,
)
from gptmini.checks import check_field_types, sha256_of
from gptmini.data import eval_batches, get_batch
from gptmini.device import auto_device
from gptmini.model import GPT

SCHEDULES = ("cosine", "linear", "constant")
DTYPES = ("auto", "float32", "bfloat16", "float16")
OPTIMIZERS = ("adamw", "muon")


@dataclass
class TrainConfig:
    """Everything about a training run except the model and the data."""

    max_steps: int = 2000
    batch_size: int = 12  # sequences per micro-batch, per process
    grad_accum_steps: int = 1
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    lr_schedule: str = "cosine"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 250  # 0 evaluates only at the end
    eval_iters: int | None = 20  # random batches per estimate; None: the whole split, in order
    seed: int = 1337
    device: str | None = None  # None: gptmini.auto_device()
    dtype: str = "auto"  # auto: bf16 autocast on CUDA (fp16 + GradScaler without bf16), fp32 on the CPU;
    # "bfloat16" / "float16" autocast on the CPU as well
    compile: bool = False
    out_dir: str | None = None
    checkpoint_interval: int | None = None  # also save every N steps (needs out_dir)
    progress: bool = True
    optimizer: str = "adamw"  # "adamw" | "muon": torch.optim.Muon on the blocks' matrices, AdamW elsewhere
    muon_ns_steps: int = 5  # Newton–Schulz iterations per Muon step (torch's default, as Jordan et al.)

    def __post_init__(self) -> None:
        check_field_types(self)  # bool is bool, int is int, floats finite: for every field
        for name in ("max_steps", "batch_size", "grad_accum_steps", "muon_ns_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_interval", "weight_decay", "grad_clip", "min_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.min_lr > self.learning_rate:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed learning_rate ({self.learning_rate})")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1} and {self.beta2}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; allowed: {', '.join(SCHEDULES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; allowed: {', '.join(DTYPES)}")
        if self.eval_iters is not None and self.eval_iters < 1:
            raise ValueError(f"eval_iters must be >= 1 or None (whole split), got {self.eval_iters}")
        if self.checkpoint_interval is not None and (self.checkpoint_interval < 1 or self.out_dir is None):
            raise ValueError(
                f"checkpoint_interval must be >= 1 or None, and needs out_dir; got {self.checkpoint_interval} "
                f"with out_dir {self.out_dir!r}"
            )
        if self.out_dir == "":
            raise ValueError("out_dir must name a directory, or be None (no checkpoints); got ''")


def lr_at(step: int, tc: TrainConfig) -> float:
    """The learning rate at ``step``: linear warmup from 0, then decay to ``min_lr`` at ``max_steps``."""
    if step < tc.warmup_steps:
        return tc.learning_rate * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant" or tc.max_steps <= tc.warmup_steps:
        return tc.learning_rate
    progress = min(1.0, (step - tc.warmup_steps) / (tc.max_steps - tc.warmup_steps))
    if tc.lr_schedule == "cosine":
        weight = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        weight = 1.0 - progress
    return tc.min_lr + weight * (tc.learning_rate - tc.min_lr)


def make_optimizer(model: GPT, tc: TrainConfig, device_type: str = "cpu"):
    """The optimizer ``tc.optimizer`` names: AdamW (``GPT.configure_optimizer``), or Muon with AdamW.

    Muon (Jordan et al. 2024) takes the 2-D weight matrices of the blocks (attention and MLP) and
    replaces each one's momentum by the nearest semi-orthogonal matrix (``muon_ns_steps`` Newton–Schulz
    iterations): all its singular values about 1, so every direction of the matrix moves by the same
    amount. Embeddings, the LM head, norm gains and biases are not such matrices (a lookup table, a
    vector) and stay with AdamW, weight decay on the tables and head only, as ``configure_optimizer`` does.

    The learning rate: an A×B matrix with singular values 1 has entries of RMS 1/√max(A, B), so a
    plain orthogonal step would shrink with the width, while an Adam step has entries of RMS about
    0.2·lr whatever the shape (Liu et al. 2025, "Muon is scalable for LLM training"). With
    ``adjust_lr_fn="match_rms_adamw"`` torch's Muon multiplies the learning rate of each matrix by
    0.2·√max(A, B), which makes its update's RMS 0.2·lr as well: one ``learning_rate``, schedule and
    ``weight_decay`` then serve both optimizers (tested). Keller Jordan's own scaling ("original",
    √max(1, A/B)) would want a learning rate near 0.02 instead.
    """
    betas = (tc.beta1, tc.beta2)
    if tc.optimizer == "adamw":
        return model.configure_optimizer(tc.weight_decay, tc.learning_rate, betas, device_type)
    matrices = [p for p in model.transformer.h.parameters() if p.requires_grad and p.dim() == 2]
    in_muon = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in in_muon]
    muon = torch.optim.Muon(
        matrices,
        lr=tc.learning_rate,
        weight_decay=tc.weight_decay,
        ns_steps=tc.muon_ns_steps,
        adjust_lr_fn="match_rms_adamw",
    )
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": tc.weight_decay},  # wte, wpe, head
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},  # gains, biases
    ]
    adamw = torch.optim.AdamW(groups, lr=tc.learning_rate, betas=betas, fused=device_type == "cuda")
    return MuonWithAdamW(muon, adamw)


class MuonWithAdamW:
    """Two optimizers stepped as one: the parts of ``torch.optim.Optimizer`` the Trainer uses.

    ``param_groups`` lists Muon's groups, then AdamW's (the Trainer sets each group's lr); the state
    dict numbers the parameters on from Muon's to AdamW's, as one optimizer's would.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.optimizers = (muon, adamw)

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        state, groups, offset = {}, [], 0
        for opt in self.optimizers:
            sd = opt.state_dict()
            state.update({offset + i: s for i, s in sd["state"].items()})
            groups += [{**g, "params": [offset + i for i in g["params"]]} for g in sd["param_groups"]]
            offset += sum(len(g["params"]) for g in opt.param_groups)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        offset, first_group = 0, 0
        for opt in self.optimizers:
            n_params, n_groups = sum(len(g["params"]) for g in opt.param_groups), len(opt.param_groups)
            groups = state_dict["param_groups"][first_group : first_group + n_groups]
            opt.load_state_dict({
                "state": {i - offset: s for i, s in state_dict["state"].items() if offset <= i < offset + n_params},
                "param_groups": [{**g, "params": [i - offset for i in g["params"]]} for g in groups],
            })  # fmt: skip
            offset, first_group = offset + n_params, first_group + n_groups


@dataclass
class History:
    """What a run measured: per-step loss, learning rate and gradient norm, evaluations, speed."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)  # {"step", "train", "val"}
    grad_norm: list[float] = field(default_factory=list)  # the global gradient norm, before clipping
    tokens_per_sec: float = 0.0
    seconds: float = 0.0


def _distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) when not distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``Trainer.train``: the step in progress was finished and, with out_dir, saved."""

    def __init__(self, step: int, checkpoint: Path | None):
        self.step, self.checkpoint = step, checkpoint
        saved = f"checkpoint saved to {checkpoint}" if checkpoint else "nothing saved (no out_dir)"
        super().__init__(f"interrupted after step {step}; {saved}")


class Trainer:
    """Trains a GPT on 1-D token arrays; ``train()`` may be called again after ``resume``.

    ``tokenizer`` (optional) is saved with every checkpoint, so that each one is self-contained.
    """

    def __init__(
        self,
        model: GPT,
        train_data: np.ndarray | None,
        val_data: np.ndarray | None,
        tc: TrainConfig,
        tokenizer=None,
    ):
        _check_tokens("train_data", train_data, model.config, tc.eval_iters)
        _check_tokens("val_data", val_data, model.config, tc.eval_iters)
        if tc.out_dir is not None:
            check_out_dir(tc.out_dir)
        self.tc, self.train_data, self.val_data, self.tokenizer = tc, train_data, val_data, tokenizer
        self.rank, self.world, local_rank = _distributed()
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        if self.world > 1 and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{local_rank}")
            torch.cuda.set_device(self.device)
        else:
            self.device = auto_device(tc.device)
        self.model = model.to(self.device)
        self.step = 0
        self.history = History()
        self.batch_gen = torch.Generator().manual_seed(tc.seed)
        torch.manual_seed(tc.seed)  # dropout
        self.optimizer = make_optimizer(model, tc, self.device.type)
        self.autocast, self.scaler = self._precision()
        net = torch.compile(model) if tc.compile else model
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.net = net

    def _precision(self):
        """Autocast and loss scaler for ``tc.dtype``: "auto" is 16-bit on CUDA only, a named dtype anywhere."""
        kind, dtype = self.device.type, self.tc.dtype
        if dtype == "auto":
            if kind != "cuda":  # the CPU trains in float32 unless a 16-bit dtype is named
                return contextlib.nullcontext(), None
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if dtype == "float32":
            return contextlib.nullcontext(), None
        if kind not in ("cuda", "cpu"):
            raise ValueError(
                f"dtype {dtype!r} autocasts on CUDA and the CPU, not on {kind}: use 'float32' or 'auto'"
            )
        amp = torch.autocast(kind, dtype=getattr(torch, dtype))
        scaler = torch.amp.GradScaler(kind) if dtype == "float16" else None  # float16's short range
        return amp, scaler

    def _batch(self, generator: torch.Generator, data: np.ndarray):
        """The global batch is drawn identically on every rank; each trains on its own slice."""
        b = self.tc.batch_size
        x, y = get_batch(data, b * self.world, self.model.config.block_size, generator)
        x, y = x[self.rank * b : (self.rank + 1) * b], y[self.rank * b : (self.rank + 1) * b]
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss on train and val: ``eval_iters`` random batches each, or the whole split in order."""
        self.model.eval()
        out = {}
        for split, data in (("train", self.train_data), ("val", self.val_data)):
            if data is None:
                continue
            total, count = 0.0, 0
            if self.tc.eval_iters is None:
                batches = eval_batches(data, self.tc.batch_size, self.model.config.block_size, self.device)
            else:  # a generator of its own, so evaluating never changes the training batches
                gen = torch.Generator().manual_seed(self.tc.seed + 1)
                batches = (self._batch(gen, data) for _ in range(self.tc.eval_iters))
            for x, y in batches:
                with self.autocast:
                    _, loss = self.model(x, y)
                total, count = total + loss.item() * y.numel(), count + y.numel()
            out[split] = total / count
        self.model.train()
        return out

    def train(self, until: int | None = None) -> History:
        """Train until step ``until`` (default ``max_steps``); returns the history (kept in ``self.history``).

        Stopping early with ``until`` and resuming later gives exactly the run that never stopped: the
        schedule always follows ``max_steps``.
        """
        tc, h, model = self.tc, self.history, self.model
        stop = tc.max_steps if until is None else until
        if isinstance(stop, bool) or not isinstance(stop, int) or not self.step <= stop <= tc.max_steps:
            raise ValueError(
                f"until must be an integer between the current step {self.step} and max_steps {tc.max_steps}, "
                f"got {until!r}"
            )
        if self.train_data is None:
            raise ValueError("this trainer has no train_data (None): it can evaluate but not train")
        model.train()
        tokens_per_step = tc.batch_size * tc.grad_accum_steps * self.world * model.config.block_size
        bar = None
        if tc.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=stop, initial=self.step, desc="training", unit="step")
        start, start_step = time.perf_counter(), self.step
        with finish_step_on_interrupt() as interrupted:  # Ctrl-C: finish the step, save, stop
            while self.step < stop and not self._on_any_rank(interrupted()):
                lr = lr_at(self.step, tc)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = 0.0
                for micro in range(tc.grad_accum_steps):
                    x, y = self._batch(self.batch_gen, self.train_data)
                    last = micro == tc.grad_accum_steps - 1
                    sync = self.net.no_sync() if self.world > 1 and not last else contextlib.nullcontext()
                    with sync, self.autocast:
                        _, loss = self.net(x, y)
                        loss = loss / tc.grad_accum_steps
                    (self.scaler.scale(loss) if self.scaler else loss).backward()
                    loss_sum += loss.item()
                if not math.isfinite(loss_sum):
                    raise FloatingPointError(
                        f"the training loss became {loss_sum} at step {self.step} (learning rate {lr:.3g}); "
                        "try a lower learning_rate, gradient clipping (grad_clip=1.0), a longer warmup, "
                        "float32 instead of float16, and check the data for token ids outside the vocabulary"
                    )
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                # The norm of all gradients as one vector, measured before clipping (max_norm=inf: no-op).
                max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                if self.scaler:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                h.steps.append(self.step)
                h.train_loss.append(loss_sum)
                h.lr.append(lr)
                h.grad_norm.append(grad_norm.item())
                self.step += 1
                elapsed = time.perf_counter() - start
                h.tokens_per_sec = tokens_per_step * (self.step - start_step) / max(elapsed, 1e-9)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{h.tokens_per_sec:,.0f}")
                done = self.step == stop
                if (tc.eval_interval and self.step % tc.eval_interval == 0) or done:
                    h.evals.append({"step": self.step, **self.evaluate()})
                if tc.checkpoint_interval and self.step % tc.checkpoint_interval == 0 and self.rank == 0:
                    self.save_checkpoint(tc.out_dir)
        h.seconds += time.perf_counter() - start
        if bar is not None:
            bar.close()
        if self.step < stop:  # stopped by Ctrl-C (on any rank)
            saved = self.save_checkpoint(tc.out_dir) if tc.out_dir and self.rank == 0 else None
            raise TrainingInterrupted(self.step, saved)
        return h

    def _on_any_rank(self, flag: bool) -> bool:
        """True on every rank if true on one: DDP ranks must stop after the same step."""
        if self.world == 1:
            return flag
        flag_tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(flag_tensor, op=dist.ReduceOp.MAX)
        return bool(flag_tensor.item())

    # ----- checkpoints: safetensors for tensors, JSON for the rest; never pickle ------------------

    def save_checkpoint(self, directory: str | Path) -> Path:
        """Model, optimizer state, random states, step, config, history (and tokenizer): all to resume exactly.

        The files are written into a new directory beside ``directory``, which then takes its place by
        renaming: whenever the process stops, ``directory`` holds one complete checkpoint, the previous
        or this one. trainer.json, written last, records the SHA-256 of every other file.
        """
        directory = Path(directory)
        opt = self.optimizer.state_dict()
        tensors = {"rng.batch": self.batch_gen.get_state(), "rng.torch": torch.get_rng_state()}
        for pid, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optim.{pid}.{name}"] = value.detach().cpu().contiguous()
        with replacing_directory(directory) as new:
            self.model.save(new)
            if self.tokenizer is not None:
                self.tokenizer.save(str(new / TOKENIZER_NAME))
            save_file(tensors, str(new / "trainer.safetensors"))
            meta = {
                "step": self.step,
                "train_config": dataclasses.asdict(self.tc),
                "param_groups": opt["param_groups"],
                "history": dataclasses.asdict(self.history),
                "grad_scaler": self.scaler.state_dict() if self.scaler else None,  # float16 loss scale
                "files": {p.name: sha256_of(p) for p in sorted(new.iterdir())},
            }
            (new / "trainer.json").write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def resume(cls, directory: str | Path, train_data, val_data, **overrides) -> Trainer:
        """A trainer that continues exactly where ``save_checkpoint`` left off (``overrides``: e.g. max_steps).

        Refuses (ValueError) a checkpoint whose files do not match the hashes in its trainer.json.
        """
        directory = recover_interrupted_save(Path(directory))
        meta = verified_checkpoint(directory)
        tc = _train_config(directory / "trainer.json", {**meta["train_config"], **overrides})
        has_tokenizer = (directory / TOKENIZER_NAME).is_file()
        tokenizer = load_tokenizer(directory / TOKENIZER_NAME) if has_tokenizer else None
        trainer = cls(GPT.load(directory), train_data, val_data, tc, tokenizer=tokenizer)
        tensors = load_file(str(directory / "trainer.safetensors"))  # verified: its hash matched
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value.to(trainer.device) if name != "step" else value
        try:
            trainer.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        except (ValueError, KeyError) as err:
            raise ValueError(f"{directory}: the optimizer state does not fit the model: {err}") from None
        if trainer.scaler is not None and meta.get("grad_scaler"):
            trainer.scaler.load_state_dict(meta["grad_scaler"])
        trainer.batch_gen.set_state(tensors["rng.batch"])
        torch.set_rng_state(tensors["rng.torch"])
        trainer.step = meta["step"]
        trainer.history = History(**meta["history"])
        return trainer


# ----- validation before step 1 -------------------------------------------------------------------


def _check_tokens(name: str, data, config, eval_iters: int | None) -> None:
    """A split is None or a 1-D integer array of ids below vocab_size, long enough for one window."""
    if data is None:
        return
    array = np.asarray(data)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D array of integer token ids, got {array.ndim}-D {array.dtype}")
    need = config.block_size + 1 if eval_iters is not None or name == "train_data" else 2
    if len(array) < need:
        raise ValueError(
            f"{name} has {len(array)} tokens; block_size={config.block_size} needs at least {need}"
        )
    lo, hi = int(array.min()), int(array.max())
    if lo < 0 or hi >= config.vocab_size:
        raise ValueError(
            f"{name} holds token id {lo if lo < 0 else hi}, outside the model's vocabulary "
            f"0..{config.vocab_size - 1}"
        )


def _train_config(source: Path, values: dict) -> TrainConfig:
    """A TrainConfig from saved values plus overrides; unknown keys name the file they came from."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown} (from {source} or the overrides)")
    return TrainConfig(**values)


@contextlib.contextmanager
def finish_step_on_interrupt():
    """Within: Ctrl-C (SIGINT) only raises a flag, read by calling the yielded function; a second one
    interrupts at once. Outside the main thread (where signals cannot be caught) the flag stays down."""
    requested = False
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield lambda: False
        return

    def handler(signum, frame):
        nonlocal requested
        requested = True
        signal.signal(signal.SIGINT, previous or signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, previous or signal.default_int_handler)

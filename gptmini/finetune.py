"""Fine-tuning: a pretrained GPT adapted to classify passages, by training a head, every weight, or LoRA.

The task comes from the corpus itself: is a passage from a comedy or a tragedy? Passages are cut from
whole plays of one split, so no play is on both sides of the train/validation split. A linear head
reads the mean of the final hidden states of all positions (by default), or the hidden state of the
*last* token, the only position that has seen the whole passage through the causal mask. Three ways
to train: ``"frozen"`` (only the head), ``"full"`` (every weight) and ``"lora"`` (the head plus
low-rank updates of the attention projections, Hu et al. 2022).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gptmini import data
from gptmini.model import GPT

MODES = ("frozen", "full", "lora")
POOLS = ("last", "mean")  # which hidden state the head reads: the last token's, or the mean over positions
GENRES = ("comedy", "tragedy")  # label 0 and label 1
LORA_TARGETS = ("attn.c_attn", "attn.c_proj")  # the fused q/k/v projection and the attention output


class Tokenizer(Protocol):
    def encode(self, s: str) -> list[int]: ...


# ----- the labelled task -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """A window of one play's text, labelled with the index of its genre."""

    text: str
    label: int
    play: str  # the play's slug


def genre_passages(
    split: str,
    genres: tuple[str, ...] = GENRES,
    length: int = 128,
    stride: int | None = None,
    max_per_play: int | None = None,
) -> list[Passage]:
    """Windows of ``length`` characters every ``stride`` (default ``length``) of each play of ``split``.

    Deterministic: ``max_per_play`` keeps that many windows, evenly spaced through each play.
    """
    if len(genres) < 2 or len(set(genres)) != len(genres):
        raise ValueError(f"genres must name at least two distinct genres, got {genres!r}")
    stride = length if stride is None else stride
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length} and {stride}")
    if max_per_play is not None and max_per_play < 1:
        raise ValueError(f"max_per_play must be >= 1 or None, got {max_per_play}")
    passages = []
    for label, genre in enumerate(genres):
        for play in data.plays(split, genre):  # raises ValueError for an unknown split or genre
            starts = list(range(0, len(play.text) - length + 1, stride))
            if max_per_play is not None and len(starts) > max_per_play:
                keep = np.linspace(0, len(starts) - 1, max_per_play).round().astype(int)
                starts = [starts[i] for i in keep]
            passages += [Passage(play.text[s : s + length], label, play.slug) for s in starts]
    return passages


def class_balance(passages: list[Passage], genres: tuple[str, ...] = GENRES) -> dict[str, int]:
    """How many passages each genre has."""
    counts = np.bincount([p.label for p in passages], minlength=len(genres))
    return {g: int(n) for g, n in zip(genres, counts, strict=True)}


def encode_passages(passages: list[Passage], tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``x`` (N, T) and labels ``y`` (N,) of passages that encode to the same length T."""
    if not passages:
        raise ValueError("no passages to encode")
    ids = [tokenizer.encode(p.text) for p in passages]
    lengths = sorted({len(i) for i in ids})
    if len(lengths) != 1:
        raise ValueError(
            f"passages must encode to the same number of tokens, got lengths {lengths[:5]}: "
            "cut them to equal lengths (a subword tokenizer gives equal texts unequal lengths)"
        )
    return torch.tensor(ids, dtype=torch.long), torch.tensor([p.label for p in passages], dtype=torch.long)


# ----- LoRA ------------------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: y = x Wᵀ + b + (alpha/r) · x Aᵀ Bᵀ."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        max_rank = min(base.in_features, base.out_features)
        if not isinstance(r, int) or not 1 <= r <= max_rank:
            raise ValueError(f"rank r must be an integer in 1..{max_rank}, got {r!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        self.base, self.r, self.alpha, self.scale = base, r, alpha, alpha / r
        base.requires_grad_(False)
        w = base.weight
        # A random and B zero: the update B A is zero, so the wrapped layer starts as the original.
        a = torch.randn(r, base.in_features, device=w.device, dtype=w.dtype) / math.sqrt(base.in_features)
        self.lora_A = nn.Parameter(a)  # (r, in)
        self.lora_B = nn.Parameter(
            torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype)
        )  # (out, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (..., in) -> (..., r) -> (..., out): the (out, in) update matrix is never formed
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale

    def delta_weight(self) -> torch.Tensor:
        """The update (alpha/r) · B A, shaped like the base weight (out, in); its rank is at most r."""
        return (self.lora_B @ self.lora_A) * self.scale

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def apply_lora(
    model: nn.Module, r: int = 8, alpha: float = 16.0, targets: str | tuple[str, ...] = LORA_TARGETS
) -> nn.Module:
    """Freeze every weight of ``model`` and wrap each nn.Linear named ``...<target>`` in a LoRALinear, in place."""
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has LoRA layers; merge_lora(model) them before applying new ones")
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    found = [n for n in linears if any(n == t or n.endswith("." + t) for t in targets)]
    if not found:
        endings = sorted({".".join(n.split(".")[-2:]) for n in linears})
        raise ValueError(
            f"no nn.Linear matches targets {targets}; this model's Linear layers end in {endings}"
        )
    model.requires_grad_(False)
    for name in found:
        _replace(model, name, LoRALinear(model.get_submodule(name), r, alpha))
    return model


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (W += (alpha/r) B A) and unwrap it, in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            module.base.weight += module.delta_weight()
            _replace(model, name, module.base)
    return model


def count_trainable(model: nn.Module) -> int:
    """The number of parameters that receive gradients (requires_grad), each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def relative_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """‖W_after − W_before‖ / ‖W_before‖ (Frobenius) for every tensor named in ``before``."""
    missing = sorted(set(before) - set(after))
    if missing:
        raise ValueError(
            f"{len(missing)} tensor(s) of 'before' are missing from 'after', e.g. {missing[0]!r}"
        )
    return {
        k: float((after[k].float() - w.float()).norm() / w.float().norm().clamp_min(1e-12))
        for k, w in before.items()
    }


# ----- the classifier --------------------------------------------------------------------------------


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy for one logit per row (N, 1); cross-entropy for k >= 2 logits (N, k)."""
    n_classes = max(2, logits.shape[-1])
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < n_classes:
        raise ValueError(
            f"labels must be class indices in 0..{n_classes - 1}, got {labels.unique().tolist()}"
        )
    if logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0].float(), labels.float())
    return F.cross_entropy(logits.float(), labels)


class GPTClassifier(nn.Module):
    """A GPT backbone and a linear head on the mean of the final hidden states of all positions
    (``pool="mean"``, the default) or on the last token's final hidden state (``pool="last"``; GPT-1 appends
    an extract token and reads its state).

    The head's weights start small and random, N(0, ``head_std``²), so that the first step's gradient
    reaches the backbone (through a zero head it would not); ``head_std=0`` starts from a zero head,
    at p = 1/2 exactly. The bias starts at zero.

    The backbone is changed in place (which weights train; LoRA layers): give each classifier its own.
    """

    def __init__(
        self,
        backbone: GPT,
        n_classes: int = 1,
        mode: str = "full",
        r: int = 8,
        alpha: float = 16.0,
        targets: str | tuple[str, ...] = LORA_TARGETS,
        pool: str = "mean",
        head_std: float = 0.02,
    ):
        super().__init__()
        if not isinstance(backbone, GPT):
            raise ValueError(f"the backbone must be a gptmini GPT, got {type(backbone).__name__}")
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(
                f"n_classes must be 1 (one logit, binary cross-entropy) or k >= 2 (k logits), got {n_classes!r}"
            )
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; allowed: {', '.join(POOLS)}")
        if not _is_number(head_std) or not 0 <= head_std < math.inf:
            raise ValueError(f"head_std must be a finite number >= 0 (0: a zero head), got {head_std!r}")
        self.backbone, self.n_classes, self.mode, self.pool = backbone, n_classes, mode, pool
        self.head = nn.Linear(backbone.config.n_embd, n_classes)
        if mode == "lora":
            apply_lora(backbone, r, alpha, targets)
        else:
            backbone.requires_grad_(mode == "full")
        if head_std > 0:  # small and random: the loss starts near ln 2, the backbone learns at once
            nn.init.normal_(self.head.weight, std=head_std)
        else:  # zero: the loss starts at ln 2 (ln k) exactly, and only the head gets a first gradient
            nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def train(self, mode: bool = True) -> GPTClassifier:
        super().train(mode)
        if self.mode == "frozen":
            self.backbone.eval()  # a frozen backbone is a fixed feature extractor: no dropout
        return self

    def forward(
        self, idx: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) -> (logits (B, n_classes), loss or None); labels (B,) are class indices."""
        h = self.backbone.hidden_states(idx)  # (B, T, C), after the final LayerNorm
        # the last token has seen every token before it; the mean gathers what each position kept
        pooled = h[:, -1] if self.pool == "last" else h.mean(1)  # (B, C)
        logits = self.head(pooled)  # (B, n_classes)
        return logits, None if labels is None else classification_loss(logits, labels)

    @torch.no_grad()
    def predict_proba(self, idx: torch.Tensor) -> torch.Tensor:
        """P(class 1) (B,) for one logit; the class probabilities (B, k) otherwise."""
        logits = self(idx)[0].float()
        return torch.sigmoid(logits[:, 0]) if self.n_classes == 1 else logits.softmax(-1)


def _in_batches(fn, x: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    if len(x) == 0:
        raise ValueError("no sequences given")
    return torch.cat(
        [fn(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    )


@torch.no_grad()
def pooled_states(backbone: GPT, x: torch.Tensor, pool: str = "last", batch_size: int = 64) -> torch.Tensor:
    """What a classifier's head reads (see ``GPTClassifier``): x (N, T) -> (N, n_embd), on the CPU, eval mode."""
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; allowed: {', '.join(POOLS)}")
    was_training = backbone.training
    backbone.eval()

    def fn(b: torch.Tensor) -> torch.Tensor:
        h = backbone.hidden_states(b)
        return h[:, -1] if pool == "last" else h.mean(1)

    states = _in_batches(fn, x, batch_size, backbone.lm_head.weight.device)
    backbone.train(was_training)
    return states


def last_token_states(backbone: GPT, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The final hidden state of each row's last token: x (N, T) -> (N, n_embd), on the CPU, eval mode."""
    return pooled_states(backbone, x, "last", batch_size)


@torch.no_grad()
def predict_logits(clf: GPTClassifier, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The logits (N, n_classes) of ``clf`` on ids x (N, T), in eval mode, on the CPU."""
    was_training = clf.training
    clf.eval()
    logits = _in_batches(lambda b: clf(b)[0], x, batch_size, clf.head.weight.device)
    clf.train(was_training)
    return logits


def evaluate(
    clf: GPTClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64
) -> tuple[float, float]:
    """Mean loss and accuracy of ``clf`` on ids x (N, T) and labels y (N,), in eval mode."""
    logits = predict_logits(clf, x, batch_size)
    pred = (logits[:, 0] > 0).long() if clf.n_classes == 1 else logits.argmax(-1)
    return classification_loss(logits, y).item(), (pred == y).float().mean().item()


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, l2: float = 1e-3, max_iter: int = 200
) -> nn.Linear:
    """Logistic regression on fixed features (N, D): an nn.Linear(D, 1) minimising mean BCE + (l2/2)·‖w‖².

    The fit runs on standardised features and folds the scaling back into the weights, so the returned
    layer reads the raw features (and can serve as the head of a frozen GPTClassifier).
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise ValueError(
            f"features must be (N, D) and labels (N,), got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if not l2 >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")
    features, y = features.double(), labels.double()
    mean, std = features.mean(0), features.std(0).clamp_min(1e-8)
    z = (features - mean) / std  # (N, D)
    w = torch.zeros(features.shape[1], dtype=torch.double, requires_grad=True)
    b = torch.zeros((), dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + 0.5 * l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    head = nn.Linear(features.shape[1], 1)
    with torch.no_grad():  # w·(f − mean)/std + b  =  (w/std)·f + (b − w·mean/std)
        head.weight.copy_((w / std)[None])
        head.bias.copy_((b - (w * mean / std).sum())[None])
    return head


# ----- training ----------------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    """What ``finetune`` measured: the loss of every step, and validation loss/accuracy at each evaluation."""

    train_loss: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.val_accuracy[-1]


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def finetune(
    clf: GPTClassifier,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    steps: int = 100,
    lr: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    eval_every: int | None = None,
    weight_decay: float = 0.0,
    warmup: float = 0.1,
    grad_clip: float = 1.0,
    head_lr: float | None = 3e-3,
) -> FinetuneResult:
    """Train the trainable weights of ``clf`` with AdamW on random batches of ``train`` = (x, y).

    The head, a fresh layer with nothing to preserve, learns at its own rate ``head_lr`` (None: ``lr``),
    the rest of the trainable weights at ``lr``. With ``GPTClassifier``'s small random head (as GPT-1's,
    N(0, 0.02²)) the first step's gradient already reaches the backbone, which a zero head would block.
    Both rise linearly over the first ``warmup`` fraction of the steps, then decay linearly to zero.
    Evaluates on ``val`` every ``eval_every`` steps and after the last.
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    for name, value in (("weight_decay", weight_decay), ("grad_clip", grad_clip)):
        if not _is_number(value) or not 0 <= value < math.inf:
            raise ValueError(f"{name} must be a finite number >= 0 (grad_clip 0: no clipping), got {value!r}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(
            f"eval_every must be a positive integer or None (only after the last step), got {eval_every!r}"
        )
    head_lr = lr if head_lr is None else head_lr
    for name, value in (("lr", lr), ("head_lr", head_lr)):
        if not _is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"{name} must be positive, got {value!r} (a finite number)")
    if not _is_number(warmup) or not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {warmup!r}")
    (x, y), (xv, yv) = train, val
    if len(x) != len(y) or len(xv) != len(yv) or len(x) == 0 or len(xv) == 0:
        raise ValueError(
            f"train and val must be non-empty (x, y) pairs of equal lengths, "
            f"got {len(x)}/{len(y)} and {len(xv)}/{len(yv)}"
        )
    params = [p for p in clf.parameters() if p.requires_grad]
    head = {id(p) for p in clf.head.parameters()}
    groups = [
        {"params": [p for p in params if id(p) not in head], "lr": lr},
        {"params": [p for p in params if id(p) in head], "lr": head_lr},
    ]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=weight_decay)
    n_warmup = int(warmup * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / n_warmup if s < n_warmup else (steps - s) / (steps - n_warmup)
    )
    gen, device = torch.Generator().manual_seed(seed), clf.head.weight.device
    result = FinetuneResult()
    clf.train()
    for step in range(1, steps + 1):
        ix = torch.randint(len(x), (batch_size,), generator=gen)
        _, loss = clf(x[ix].to(device), y[ix].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        schedule.step()
        result.train_loss.append(loss.item())
        if step == steps or (eval_every and step % eval_every == 0):
            val_loss, val_acc = evaluate(clf, xv, yv)
            result.eval_steps.append(step)
            result.val_loss.append(val_loss)
            result.val_accuracy.append(val_acc)
    clf.eval()  # ready for prediction
    return result


def trainable_state_dict(clf: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors that training changes (requires_grad), on the CPU: for LoRA, the factors and the head."""
    names = {n for n, p in clf.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in clf.state_dict().items() if k in names}


def load_trainable_state_dict(clf: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load what ``trainable_state_dict`` saved into a classifier built the same way (same mode, r, targets)."""
    expected = {n for n, p in clf.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"the state does not fit this classifier: missing {missing[:3]}, unexpected {unexpected[:3]} "
            "(build it with the same mode, rank and targets as the saved one)"
        )
    clf.load_state_dict(state, strict=False)

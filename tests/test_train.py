import copy
import itertools
import math

import numpy as np
import pytest
import torch

from gptmini.data import get_batch
from gptmini.model import GPT, GPTConfig
from gptmini.train import TrainConfig, Trainer, lr_at

VOCAB = 23


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.1))


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, VOCAB, 2000).astype(np.uint16)


def config(**kw) -> TrainConfig:
    base = dict(
        max_steps=6,
        batch_size=4,
        learning_rate=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_interval=3,
        eval_iters=2,
        progress=False,
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def test_schedule_warms_up_then_decays_to_min_lr():
    tc = TrainConfig(max_steps=1000, warmup_steps=100, learning_rate=1e-3, min_lr=1e-4)
    assert lr_at(0, tc) == pytest.approx(1e-5)
    assert lr_at(99, tc) == pytest.approx(1e-3)
    lrs = [lr_at(s, tc) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] == pytest.approx(1e-4)
    assert lr_at(550, tc) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # cosine: halfway at the middle
    linear = TrainConfig(
        max_steps=1000, warmup_steps=100, learning_rate=1e-3, min_lr=0.0, lr_schedule="linear"
    )
    assert lr_at(550, linear) == pytest.approx(5e-4)


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_steps=0),
        dict(batch_size=0),
        dict(learning_rate=0),
        dict(min_lr=1.0),
        dict(lr_schedule="step"),
        dict(dtype="int8"),
        dict(eval_iters=0),
        dict(beta2=1.0),
        dict(checkpoint_interval=5),
    ],
)
def test_bad_config_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        TrainConfig(**bad)


def test_loss_falls_and_history_is_recorded(tokens):
    trainer = Trainer(tiny_model(), tokens, tokens, config(max_steps=30, eval_interval=10))
    h = trainer.train()
    assert h.steps == list(range(30)) and len(h.train_loss) == len(h.lr) == 30
    assert [e["step"] for e in h.evals] == [10, 20, 30]
    assert h.train_loss[-1] < h.train_loss[0]
    assert h.tokens_per_sec > 0


def test_exact_resume(tokens, tmp_path):
    straight = Trainer(tiny_model(), tokens, tokens, config())
    straight.train()

    first = Trainer(tiny_model(), tokens, tokens, config())
    first.train(until=4)
    first.save_checkpoint(tmp_path / "ckpt")
    del first
    torch.manual_seed(12345)  # the resumed run must not depend on the global random state
    resumed = Trainer.resume(tmp_path / "ckpt", tokens, tokens)
    assert resumed.step == 4
    resumed.train()
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert resumed.history.train_loss == straight.history.train_loss


def test_full_evaluation_counts_every_target_once(tokens):
    model = tiny_model()
    trainer = Trainer(model, tokens[:203], tokens[:203], config(eval_iters=None, batch_size=5))
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(tokens[:202].astype(np.int64))[None]
        y = torch.from_numpy(tokens[1:203].astype(np.int64))[None]
        losses = [
            model(x[:, i : i + 8], y[:, i : i + 8])[1] * y[:, i : i + 8].numel() for i in range(0, 202, 8)
        ]
    expected = (sum(losses) / 202).item()
    assert trainer.evaluate()["val"] == pytest.approx(expected, rel=1e-5)


def test_gradient_accumulation_matches_a_bigger_batch(tokens, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (8, 8), generator=g)
    y = torch.randint(0, VOCAB, (8, 8), generator=g)
    big = Trainer(tiny_model(), tokens, None, config(batch_size=8, max_steps=1, eval_iters=1))
    small = Trainer(
        tiny_model(), tokens, None, config(batch_size=4, grad_accum_steps=2, max_steps=1, eval_iters=1)
    )
    halves = itertools.cycle([(x[:4], y[:4]), (x[4:], y[4:])])
    monkeypatch.setattr(big, "_batch", lambda gen, data: (x, y))
    monkeypatch.setattr(small, "_batch", lambda gen, data: next(halves))
    for t in (big, small):
        t.model.eval()  # no dropout: the two runs must see the same function
        t.model.train = lambda mode=True, m=t.model: m  # keep eval mode inside train()
        t.train()
    for a, b in zip(big.model.parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_non_finite_loss_stops_with_a_helpful_error(tokens):
    model = tiny_model()
    with torch.no_grad():
        model.transformer.wte.weight.fill_(math.nan)
    trainer = Trainer(model, tokens, tokens, config())
    with pytest.raises(FloatingPointError, match=r"at step 0 .*learning_rate"):
        trainer.train()


def test_gradient_norm_is_recorded_before_clipping(tokens):
    tc = config(grad_clip=1e-3, max_steps=1)
    model = tiny_model()
    reference = copy.deepcopy(model)
    h = Trainer(model, tokens, None, tc).train()
    x, y = get_batch(tokens, tc.batch_size, 8, torch.Generator().manual_seed(tc.seed))
    torch.manual_seed(tc.seed)  # the trainer's dropout draws
    reference(x, y)[1].backward()
    expected = torch.sqrt(sum((p.grad**2).sum() for p in reference.parameters())).item()
    assert h.grad_norm == [pytest.approx(expected, rel=1e-5)]
    assert h.grad_norm[0] > tc.grad_clip  # the norm before clipping, not after


def test_no_clipping_still_records_the_gradient_norm(tokens):
    h = Trainer(tiny_model(), tokens, None, config(grad_clip=0.0, max_steps=3)).train()
    assert len(h.grad_norm) == 3 and all(math.isfinite(g) and g > 0 for g in h.grad_norm)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_named_16_bit_dtype_autocasts_on_the_cpu(tokens, dtype):
    """dtype="bfloat16" or "float16" on the CPU trains in that precision; it used to train in float32."""
    trainer = Trainer(tiny_model(), tokens, tokens, config(dtype=dtype, max_steps=4, eval_interval=0))
    x, y = get_batch(tokens, 4, 8, torch.Generator().manual_seed(0))
    with trainer.autocast:
        logits, _ = trainer.model(x, y)
    assert logits.dtype == getattr(torch, dtype)
    assert (trainer.scaler is not None) == (dtype == "float16")  # float16's short range needs loss scaling
    h = trainer.train()
    assert len(h.train_loss) == 4 and all(math.isfinite(loss) for loss in h.train_loss)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # the weights stay float32
    # not the float32 run: the 16-bit products change the losses
    h32 = Trainer(tiny_model(), tokens, tokens, config(dtype="float32", max_steps=4, eval_interval=0)).train()
    assert h.train_loss != h32.train_loss


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_auto_and_float32_train_in_float32_on_the_cpu(tokens, dtype):
    trainer = Trainer(tiny_model(), tokens, tokens, config(dtype=dtype))
    x, _ = get_batch(tokens, 4, 8, torch.Generator().manual_seed(0))
    with trainer.autocast:
        logits, _ = trainer.model(x)
    assert logits.dtype == torch.float32 and trainer.scaler is None

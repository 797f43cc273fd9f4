"""benchmarks/speedrun.py's helpers: the untimed compilation leaves the run untouched; the scoring."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import speedrun  # noqa: E402

VOCAB = 19


def trainer(dropout: float):
    recipe = dict(
        model=dict(block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=dropout, bias=False),
        train=dict(batch_size=4, learning_rate=3e-3, optimizer="muon", warmup_steps=2),
    )
    tokens = np.random.default_rng(0).integers(0, VOCAB, 3000).astype(np.uint16)
    return speedrun.build(recipe, VOCAB, 8, tokens, tokens)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_warming_up_off_the_clock_then_training_is_the_untouched_run(dropout):
    untouched = trainer(dropout)
    a = untouched.train()
    warmed = trainer(dropout)  # dropout draws from the global generator: one run after the other
    assert speedrun.compile_off_the_clock(warmed, steps=3) > 0
    assert warmed.step == 0 and warmed.history.steps == []
    b = warmed.train()
    assert a.train_loss == b.train_loss and a.grad_norm == b.grad_norm  # the same batches, moments, dropout
    for p, q in zip(untouched.model.parameters(), warmed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_warming_up_changes_the_weights_before_they_are_put_back():
    t = trainer(0.0)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.train(until=3)
    assert any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())  # the check can fail


def test_crossing_and_loss_at_a_time_interpolate_between_evaluations():
    curve = [[10, 1.0, 2.0], [20, 2.0, 1.0], [30, 3.0, 0.5]]
    assert speedrun.crossing_time(curve, 1.5) == pytest.approx(1.5)
    assert speedrun.crossing_time(curve, 0.1) is None
    assert speedrun.loss_at(curve, 2.5) == pytest.approx(0.75)
    assert speedrun.loss_at(curve, 9.0) == 0.5  # finished sooner: its final loss
    scored = speedrun.compare(curve, 1.5, 5.0)
    assert scored["ratio"] == pytest.approx(0.3) and scored["gap"] == pytest.approx(1.0)


def test_counting_the_compilation_moves_every_evaluation_later():
    curve = [[10, 1.0, 2.0], [20, 2.0, 1.0]]
    late = speedrun.on_clock(curve, 0.5)
    assert late == [[10, 1.5, 2.0], [20, 2.5, 1.0]]
    assert speedrun.crossing_time(late, 1.5) == pytest.approx(speedrun.crossing_time(curve, 1.5) + 0.5)

"""Fine-tuning: genre passages, the classifier's modes, LoRA (identity at start, merging), the training loop."""

from __future__ import annotations

import math

import pytest
import torch

from gptmini import data
from gptmini.finetune import (
    GPTClassifier,
    LoRALinear,
    Passage,
    apply_lora,
    class_balance,
    classification_loss,
    count_trainable,
    encode_passages,
    evaluate,
    finetune,
    fit_linear_probe,
    genre_passages,
    last_token_states,
    load_trainable_state_dict,
    merge_lora,
    pooled_states,
    predict_logits,
    relative_change,
    trainable_state_dict,
)
from gptmini.model import GPT, GPTConfig
from gptmini.tokenizer import CharTokenizer

SMALL = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)


def small(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**(SMALL | kw))).eval()


def toy_task(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sequences whose label is whether the last token is 1 (rather than 2): linearly separable."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(3, SMALL["vocab_size"], (n, 8), generator=g)
    y = torch.randint(2, (n,), generator=g)
    x[:, -1] = 1 + (1 - y)
    return x, y


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----- passages --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passages() -> dict[str, list[Passage]]:
    return {s: genre_passages(s, length=128, max_per_play=20) for s in ("train", "val")}


def test_passages_never_cross_the_split(passages):
    train_plays = {p.play for p in passages["train"]}
    val_plays = {p.play for p in passages["val"]}
    assert not train_plays & val_plays
    assert val_plays == set(data.VAL_PLAYS)  # the held-out plays are two comedies and two tragedies
    genre = {p.slug: p.genre for p in data.load_plays()}
    for split, ps in passages.items():
        for p in ps:
            assert genre[p.play] == ("comedy", "tragedy")[p.label]
            assert len(p.text) == 128
            assert data.load_plays()[[q.slug for q in data.load_plays()].index(p.play)].split == split


def test_passages_are_deterministic_windows_of_their_play(passages):
    again = genre_passages("val", length=128, max_per_play=20)
    assert again == passages["val"]
    text = {p.slug: p.text for p in data.load_plays()}
    assert all(p.text in text[p.play] for p in again)
    assert class_balance(again) == {"comedy": 40, "tragedy": 40}  # 20 from each of 2 + 2 plays


def test_stride_controls_the_number_of_windows():
    play = data.plays("val", "tragedy")[0]
    ps = [p for p in genre_passages("val", length=100, stride=50) if p.play == play.slug]
    assert len(ps) == (len(play.text) - 100) // 50 + 1
    assert ps[1].text[:50] == ps[0].text[50:]  # overlapping windows


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(split="test"), "unknown split 'test'"),
        (dict(split="train", genres=("comedy",)), "at least two distinct genres"),
        (dict(split="train", genres=("comedy", "farce")), "unknown genre 'farce'"),
        (dict(split="train", length=0), "length and stride must be >= 1"),
        (dict(split="train", stride=-1), "length and stride must be >= 1"),
        (dict(split="train", max_per_play=0), "max_per_play must be >= 1"),
    ],
)
def test_genre_passages_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        genre_passages(**kwargs)


def test_encode_passages():
    tok = CharTokenizer.from_text("abc")
    x, y = encode_passages([Passage("abca", 0, "p"), Passage("cccb", 1, "q")], tok)
    assert x.tolist() == [[0, 1, 2, 0], [2, 2, 2, 1]] and y.tolist() == [0, 1]
    with pytest.raises(ValueError, match="same number of tokens"):
        encode_passages([Passage("ab", 0, "p"), Passage("abc", 1, "p")], tok)
    with pytest.raises(ValueError, match="no passages"):
        encode_passages([], tok)


# ----- LoRA ------------------------------------------------------------------------------------------


def test_lora_starts_as_the_identity_update():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    lora = LoRALinear(base, r=2, alpha=4.0)
    x = torch.randn(3, 4, 6)
    assert torch.equal(lora(x), base(x))
    assert torch.count_nonzero(lora.lora_A) > 0 and torch.count_nonzero(lora.lora_B) == 0

    model = small()
    idx = torch.randint(SMALL["vocab_size"], (2, 10))
    before = model(idx)[0]
    apply_lora(model, r=4, alpha=8.0)
    assert torch.equal(model(idx)[0], before)


def test_lora_matches_its_formula_and_merges_exactly():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    lora = LoRALinear(base, r=3, alpha=6.0)
    torch.nn.init.normal_(lora.lora_B)  # as if trained
    x = torch.randn(4, 6)
    expected = x @ base.weight.T + base.bias + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)
    torch.testing.assert_close(lora(x), expected)
    assert torch.linalg.matrix_rank(lora.delta_weight()) == 3

    model = apply_lora(small(), r=2)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.1)
    idx = torch.randint(SMALL["vocab_size"], (2, 10))
    unmerged = model(idx)[0]
    merged_model = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged_model.modules())
    assert set(merged_model.state_dict()) == set(small().state_dict())  # the original names again
    torch.testing.assert_close(merged_model(idx)[0], unmerged, rtol=1e-5, atol=1e-5)


def test_apply_lora_targets_attention_and_freezes_the_rest():
    model = apply_lora(small(), r=2, alpha=4.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {
        f"transformer.h.{i}.attn.{lin}.lora_{ab}"
        for i in range(2)
        for lin in ("c_attn", "c_proj")
        for ab in "AB"
    }
    assert trainable == expected
    C, r = SMALL["n_embd"], 2
    assert count_trainable(model) == SMALL["n_layer"] * (r * (C + 3 * C) + r * (C + C))
    mlp = apply_lora(small(), r=2, targets=("mlp.c_fc",))
    assert count_trainable(mlp) == SMALL["n_layer"] * r * (C + 4 * C)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: LoRALinear(torch.nn.Linear(4, 3), r=0), "rank r must be an integer in 1..3"),
        (lambda: LoRALinear(torch.nn.Linear(4, 3), r=4), "rank r must be an integer in 1..3"),
        (lambda: LoRALinear(torch.nn.Linear(4, 3), r=2, alpha=0.0), "alpha must be positive"),
        (lambda: apply_lora(apply_lora(small())), "already has LoRA layers"),
        (lambda: GPTClassifier(torch.nn.Linear(4, 3)), "backbone must be a gptmini GPT, got Linear"),
        (lambda: LoRALinear(torch.nn.Conv1d(4, 3, 1)), "wraps an nn.Linear, got Conv1d"),
        (lambda: apply_lora(small(), targets=("attn.q_proj",)), r"no nn.Linear matches.*attn.c_attn"),
        (lambda: GPTClassifier(small(), mode="adapter"), "unknown mode 'adapter'"),
        (lambda: GPTClassifier(small(), n_classes=0), "n_classes must be 1"),
        (lambda: GPTClassifier(small(), pool="max"), r"unknown pool 'max'; allowed: last, mean"),
        (
            lambda: pooled_states(small(), toy_task(2)[0], pool="first"),
            r"unknown pool 'first'; allowed: last, mean",
        ),
    ],
)
def test_bad_lora_and_classifier_arguments_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ----- the classifier and its training modes ---------------------------------------------------------


@pytest.mark.parametrize("n_classes", [1, 2])
def test_classifier_starts_at_chance(n_classes):
    x, y = toy_task(16)
    clf = GPTClassifier(small(), n_classes=n_classes, head_std=0.0)  # a zero head: p = 1/2 exactly
    logits, loss = clf(x, y)
    assert logits.shape == (16, n_classes)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert GPTClassifier(small(), n_classes=n_classes)(x, y)[1].item() == pytest.approx(math.log(2), abs=0.05)
    with pytest.raises(ValueError, match=r"labels must have shape \(16,\)"):
        clf(x, y[:3])


def test_classification_loss_is_bce_for_one_logit_and_checks_labels():
    logits, labels = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 0, 0])
    p = torch.sigmoid(logits[:, 0])
    by_hand = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    torch.testing.assert_close(classification_loss(logits, labels), by_hand)
    with pytest.raises(ValueError, match=r"class indices in 0..1, got \[0, 2\]"):
        classification_loss(logits, torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        classification_loss(logits, labels[:2])


def test_head_reads_the_last_tokens_hidden_state():
    clf = GPTClassifier(small(), mode="full", pool="last")
    torch.nn.init.normal_(clf.head.weight)
    x, _ = toy_task(4)
    torch.testing.assert_close(clf(x)[0], clf.head(clf.backbone.hidden_states(x)[:, -1]))
    torch.testing.assert_close(
        last_token_states(clf.backbone, x, batch_size=3), clf.backbone.hidden_states(x)[:, -1]
    )
    torch.testing.assert_close(predict_logits(clf, x, batch_size=3), clf(x)[0])
    x2 = x.clone()
    x2[:, 0] = (x2[:, 0] + 1) % SMALL["vocab_size"]  # the last position attends to the first token
    assert not torch.allclose(clf(x)[0], clf(x2)[0])


@pytest.mark.parametrize("n_classes", [1, 3])
def test_mean_pool_head_reads_the_average_of_all_positions(n_classes):
    clf = GPTClassifier(small(), n_classes=n_classes, mode="full", pool="mean")
    torch.nn.init.normal_(clf.head.weight)
    x, _ = toy_task(4)
    logits = clf(x)[0]
    assert logits.shape == (4, n_classes)
    h = clf.backbone.hidden_states(x)  # (4, 8, C)
    by_hand = torch.stack([sum(h[i, t] for t in range(x.shape[1])) / x.shape[1] for i in range(4)])
    torch.testing.assert_close(logits, by_hand @ clf.head.weight.T + clf.head.bias)
    torch.testing.assert_close(pooled_states(clf.backbone, x, "mean", batch_size=3), by_hand)
    torch.testing.assert_close(predict_logits(clf, x, batch_size=3), logits)
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % SMALL["vocab_size"]  # a change anywhere reaches the mean
    assert not torch.allclose(clf(x)[0], clf(x2)[0])
    assert GPTClassifier(small()).pool == "mean"  # the default


def test_head_learns_at_its_own_rate():
    x, y = toy_task(32)
    heads = []
    for head_lr in (None, 1e-3, 1e-1):  # None: the head learns at lr
        clf = GPTClassifier(small(), mode="full", pool="mean")
        before, head_before = snapshot(clf.backbone), clf.head.weight.detach().clone()
        finetune(clf, (x, y), toy_task(8, seed=1), steps=3, lr=1e-3, head_lr=head_lr, batch_size=8)
        heads.append(clf.head.weight.detach() - head_before)  # what training changed
        change = relative_change(before, clf.backbone.state_dict())
        assert change["transformer.h.0.attn.c_attn.weight"] > 0
    torch.testing.assert_close(heads[0], heads[1])
    assert heads[2].norm() > 10 * heads[1].norm()


def test_default_head_lr_is_3e_3():
    x, y = toy_task(32)
    heads = []
    for kw in ({}, {"head_lr": 3e-3}, {"head_lr": 1e-3}):
        clf = GPTClassifier(small(), mode="full")
        finetune(clf, (x, y), toy_task(8, seed=1), steps=3, lr=1e-3, batch_size=8, **kw)
        heads.append(clf.head.weight.detach().clone())
    torch.testing.assert_close(heads[0], heads[1])
    assert not torch.allclose(heads[0], heads[2])


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_default_head_is_small_random_and_the_first_gradient_reaches_the_backbone(mode):
    x, y = toy_task(16)
    grads = {}
    for head_std in (0.02, 0.0):  # the default, and a zero head
        kw = {} if head_std == 0.02 else {"head_std": 0.0}
        clf = GPTClassifier(small(), mode=mode, r=2, **kw)
        w = clf.head.weight.detach()
        if head_std:
            assert w.abs().max() > 0 and 0.005 < w.std().item() < 0.05
        else:
            assert torch.count_nonzero(w) == 0
        assert torch.count_nonzero(clf.head.bias) == 0
        clf(x, y)[1].backward()
        backbone_grads = [
            p.grad for n, p in clf.named_parameters() if p.requires_grad and not n.startswith("head")
        ]
        grads[head_std] = sum(0.0 if g is None else g.abs().sum().item() for g in backbone_grads)
    assert grads[0.02] > 0  # through a random head the backbone (or LoRA's B) learns from the first step
    assert grads[0.0] == 0  # through a zero head it gets no gradient at all


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.02", None])
def test_bad_head_std_is_a_value_error(bad):
    with pytest.raises(ValueError, match="head_std must be a finite number >= 0"):
        GPTClassifier(small(), head_std=bad)


def test_frozen_mode_leaves_the_backbone_bit_identical():
    clf = GPTClassifier(small(), mode="frozen")
    before = snapshot(clf.backbone)
    head_before = clf.head.weight.clone()
    assert count_trainable(clf) == SMALL["n_embd"] + 1
    finetune(clf, toy_task(32), toy_task(8, seed=1), steps=2, lr=1e-2, batch_size=8)
    after = clf.backbone.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not torch.equal(clf.head.weight, head_before)


def test_lora_mode_trains_only_lora_and_head_and_full_mode_trains_everything():
    clf = GPTClassifier(small(), mode="lora", r=2)
    names = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert names == {n for n in names if "lora_" in n} | {"head.weight", "head.bias"}
    frozen = {k: v for k, v in snapshot(clf).items() if "lora_" not in k and not k.startswith("head")}
    finetune(clf, toy_task(32), toy_task(8, seed=1), steps=3, lr=1e-2, batch_size=8)
    after = clf.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(torch.count_nonzero(m.lora_B) > 0 for m in clf.modules() if isinstance(m, LoRALinear))

    full = GPTClassifier(small(), mode="full")
    assert count_trainable(full) == full.backbone.num_params() + SMALL["n_embd"] + 1
    before = snapshot(full.backbone)
    finetune(full, toy_task(32), toy_task(8, seed=1), steps=3, lr=1e-2, batch_size=8)
    change = relative_change(before, full.backbone.state_dict())
    assert change["transformer.h.0.attn.c_attn.weight"] > 0 and change["transformer.wte.weight"] > 0


def test_finetune_learns_a_separable_task_reproducibly():
    runs = []
    for _ in range(2):
        clf = GPTClassifier(small(), mode="lora", r=2, pool="last")  # the label is in the last token
        runs.append(finetune(clf, toy_task(256), toy_task(64, seed=1), steps=20, lr=5e-2, eval_every=10))
    assert runs[0].train_loss == runs[1].train_loss  # same seed, same batches, same numbers
    assert runs[0].eval_steps == [10, 20] and len(runs[0].train_loss) == 20
    assert runs[0].accuracy > 0.9
    assert evaluate(clf, *toy_task(64, seed=1)) == (runs[1].val_loss[-1], runs[1].accuracy)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be a positive integer"),
        (dict(batch_size=2.5), "batch_size must be a positive integer"),
        (dict(lr=0.0), "lr must be positive"),
        (dict(head_lr=-1.0), "head_lr must be positive, got -1.0"),
        (dict(eval_every=0), "eval_every must be a positive integer or None"),
        (dict(warmup=1.0), r"warmup is a fraction of the steps in \[0, 1\)"),
        (dict(val=(torch.zeros(0, 8, dtype=torch.long), torch.zeros(0, dtype=torch.long))), "non-empty"),
    ],
)
def test_finetune_rejects_bad_arguments(kwargs, message):
    clf = GPTClassifier(small(), mode="frozen")
    args = dict(train=toy_task(8), val=toy_task(8, seed=1)) | kwargs
    with pytest.raises(ValueError, match=message):
        finetune(clf, **args)


def test_relative_change():
    w = {"a": torch.ones(2, 2), "b": torch.full((3,), 2.0)}
    after = {"a": torch.ones(2, 2) * 1.5, "b": torch.full((3,), 2.0), "c": torch.zeros(1)}
    assert relative_change(w, after) == {"a": pytest.approx(0.5), "b": 0.0}
    with pytest.raises(ValueError, match="missing from 'after'"):
        relative_change(w, {"a": w["a"]})


def test_linear_probe_is_the_head_of_a_frozen_classifier():
    x, y = toy_task(128)
    clf = GPTClassifier(small(), mode="frozen", pool="last")
    features = last_token_states(clf.backbone, x)
    clf.head = fit_linear_probe(features, y, l2=1e-2)
    logits = predict_logits(clf, x)
    torch.testing.assert_close(logits, clf.head(features).detach(), rtol=1e-5, atol=1e-5)
    assert evaluate(clf, x, y)[1] == 1.0  # the toy task is linearly separable in the last token
    with pytest.raises(ValueError, match=r"features must be \(N, D\) and labels \(N,\)"):
        fit_linear_probe(features, y[:5])
    with pytest.raises(ValueError, match="l2 must be >= 0"):
        fit_linear_probe(features, y, l2=-1.0)


def test_linear_probe_minimises_the_regularised_loss():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(200, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + 5.0
    y = (f[:, 0] + 0.1 * f[:, 1] + torch.randn(200, generator=g) > 5.0).long()
    head = fit_linear_probe(f, y, l2=0.0)
    w, b = head.weight[0].detach().double().requires_grad_(), head.bias.detach().double().requires_grad_()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(f.double() @ w + b, y.double())
    loss.backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs() < 1e-4  # a stationary point of a convex loss


def test_trainable_state_dict_round_trip():
    clf = GPTClassifier(small(), mode="lora", r=2)
    finetune(clf, toy_task(32), toy_task(8, seed=1), steps=2, lr=1e-2, batch_size=8)
    state = trainable_state_dict(clf)
    assert set(state) == {n for n, p in clf.named_parameters() if p.requires_grad}
    x, _ = toy_task(4)
    other = GPTClassifier(small(), mode="lora", r=2)
    load_trainable_state_dict(other, state)
    torch.testing.assert_close(other(x)[0], clf(x)[0])
    with pytest.raises(ValueError, match="does not fit this classifier"):
        load_trainable_state_dict(GPTClassifier(small(), mode="lora", r=2, targets="mlp.c_fc"), state)
    with pytest.raises(ValueError, match="no sequences"):
        evaluate(clf, x[:0], torch.zeros(0, dtype=torch.long))

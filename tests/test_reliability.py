"""Nothing lost, nothing silently wrong: atomic checkpoints, exact resume after Ctrl-C, every config field
type-checked, corrupted files reported by name, inputs whose loss would be undefined refused."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import gptmini.train
from conftest import sigint_as_in_a_terminal
from gptmini import GPT, CharTokenizer, GPTConfig
from gptmini.checkpoints import load_checkpoint, load_tokenizer
from gptmini.finetune import GPTClassifier, finetune
from gptmini.train import TrainConfig, Trainer, TrainingInterrupted

VOCAB = 23
TINY = dict(vocab_size=VOCAB, block_size=8, n_layer=1, n_head=2, n_embd=16)


def tiny_model(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**(TINY | dict(dropout=0.1) | kw)))


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, VOCAB, 2000).astype(np.uint16)


def config(**kw) -> TrainConfig:
    base = dict(max_steps=8, batch_size=4, learning_rate=3e-3, min_lr=3e-4, warmup_steps=2)
    base |= dict(eval_interval=3, eval_iters=2, progress=False, device="cpu")
    return TrainConfig(**(base | kw))


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


@pytest.fixture(scope="module")
def straight(tokens) -> Trainer:
    """The uninterrupted run that every interrupted-and-resumed run must reproduce bit for bit."""
    trainer = Trainer(tiny_model(), tokens, tokens, config())
    trainer.train()
    return trainer


# ----- 1. atomic checkpoints ---------------------------------------------------------------------


def interrupt_save_file(monkeypatch, on_call: int) -> None:
    """Make the ``on_call``-th safetensors save_file from now on raise KeyboardInterrupt halfway."""
    calls = {"n": 0}
    real = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            with open(filename, "wb") as f:  # half a file, as a Ctrl-C in the middle would leave
                f.write(b"\0" * 100)
            raise KeyboardInterrupt
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)  # GPT.save (model.safetensors)
    monkeypatch.setattr(gptmini.train, "save_file", save_file)  # trainer.safetensors


@pytest.mark.parametrize("on_call", [1, 2], ids=["in-model.safetensors", "in-trainer.safetensors"])
def test_interrupted_save_leaves_the_previous_checkpoint(tokens, tmp_path, monkeypatch, on_call):
    ckpt = tmp_path / "ckpt"
    run = Trainer(tiny_model(), tokens, tokens, config())
    run.train(until=4)
    run.save_checkpoint(ckpt)
    at_step_4 = weights(run)
    run.train(until=5)
    interrupt_save_file(monkeypatch, on_call)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint(ckpt)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no half-written sibling left
    resumed = Trainer.resume(ckpt, tokens, tokens)
    assert resumed.step == 4
    assert_identical(weights(resumed), at_step_4)


def test_a_stop_between_the_two_renames_keeps_the_previous_checkpoint(tokens, tmp_path):
    ckpt = tmp_path / "ckpt"
    run = Trainer(tiny_model(), tokens, tokens, config())
    run.train(until=4)
    run.save_checkpoint(ckpt)
    at_step_4 = weights(run)
    ckpt.rename(tmp_path / ".ckpt.old")  # the state after the first rename of a save of step 5
    (tmp_path / ".ckpt.saving").mkdir()
    resumed = Trainer.resume(ckpt, tokens, tokens)
    assert resumed.step == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert_identical(weights(resumed), at_step_4)


@pytest.mark.parametrize(
    "mix",
    ["model.safetensors", "trainer.safetensors", "config.json", "trainer.json", "delete-model"],
)
def test_resume_refuses_a_mixed_or_changed_checkpoint(tokens, tmp_path, mix):
    run = Trainer(tiny_model(), tokens, tokens, config())
    run.train(until=4)
    run.save_checkpoint(tmp_path / "a")
    run.train(until=5)
    run.save_checkpoint(tmp_path / "b")
    a, b = tmp_path / "a", tmp_path / "b"
    if mix == "delete-model":
        (a / "model.safetensors").unlink()
        with pytest.raises((ValueError, FileNotFoundError), match="missing|not found"):
            Trainer.resume(a, tokens, tokens)
        return
    if mix == "config.json":  # the same at both steps: changed by hand instead
        edit_json(a / mix, add={"dropout": 0.2})
    else:
        shutil.copy(b / mix, a / mix)  # step 5's file in step 4's checkpoint
    with pytest.raises(ValueError, match="SHA-256 mismatch.*refusing to resume"):
        Trainer.resume(a, tokens, tokens)


def sigint_when(condition):
    """A forward pre-hook that sends this process SIGINT (a real Ctrl-C) the first time ``condition``."""
    sent = {"done": False}

    def hook(module, args):
        if not sent["done"] and condition(module):
            sent["done"] = True
            os.kill(os.getpid(), signal.SIGINT)

    return hook


MOMENTS = {
    "SIGINT in the forward pass of step 3": lambda t: t.model.register_forward_pre_hook(
        sigint_when(lambda m: m.training and t.step == 2)
    ),
    "SIGINT while evaluating after step 3": lambda t: t.model.register_forward_pre_hook(
        sigint_when(lambda m: not m.training and t.step == 3)
    ),
    "SIGINT while saving the checkpoint of step 5": None,  # set up in the test (needs monkeypatch)
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_sigint_at_any_moment_then_resume_is_bit_identical(tokens, tmp_path, monkeypatch, straight, moment):
    ckpt = tmp_path / "run"
    run = Trainer(tiny_model(), tokens, tokens, config(out_dir=str(ckpt), checkpoint_interval=1))
    if MOMENTS[moment] is not None:
        MOMENTS[moment](run)
    else:
        real, sent = gptmini.train.save_file, []

        def save_file(tensors, filename, *args, **kwargs):
            if run.step == 5 and not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)
            return real(tensors, filename, *args, **kwargs)

        monkeypatch.setattr(gptmini.train, "save_file", save_file)
    with pytest.raises(TrainingInterrupted) as stop:
        run.train()
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    assert stop.value.checkpoint == ckpt and 0 < stop.value.step < 8
    resumed = Trainer.resume(ckpt, tokens, tokens)
    assert resumed.step == stop.value.step
    resumed.train()
    assert_identical(weights(resumed), weights(straight))
    assert resumed.history.train_loss == straight.history.train_loss


def test_keyboard_interrupt_inside_a_periodic_save_then_resume_is_bit_identical(
    tokens, tmp_path, monkeypatch, straight
):
    ckpt = tmp_path / "run"
    run = Trainer(tiny_model(), tokens, tokens, config(out_dir=str(ckpt), checkpoint_interval=2))
    run.train(until=4)
    interrupt_save_file(monkeypatch, on_call=2)  # the save of step 6 dies in trainer.safetensors
    with pytest.raises(KeyboardInterrupt):
        run.train()
    monkeypatch.undo()
    resumed = Trainer.resume(ckpt, tokens, tokens)
    assert resumed.step == 4
    resumed.train()
    assert_identical(weights(resumed), weights(straight))


def test_the_float16_loss_scale_is_resumed(tokens, tmp_path, monkeypatch):
    def precision(self):  # a GradScaler as on a GPU in float16, here on the CPU; grows every 2 steps
        return contextlib.nullcontext(), torch.amp.GradScaler("cpu", init_scale=16.0, growth_interval=2)

    monkeypatch.setattr(Trainer, "_precision", precision)
    straight = Trainer(tiny_model(), tokens, tokens, config())
    straight.train()
    first = Trainer(tiny_model(), tokens, tokens, config())
    first.train(until=5)
    first.save_checkpoint(tmp_path / "c")
    resumed = Trainer.resume(tmp_path / "c", tokens, tokens)
    assert resumed.scaler.get_scale() == first.scaler.get_scale() != 16.0
    resumed.train()
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()
    assert_identical(weights(resumed), weights(straight))


def test_ctrl_c_saves_even_without_checkpoint_interval_and_a_second_one_is_immediate(tokens, tmp_path):
    ckpt = tmp_path / "run"
    run = Trainer(tiny_model(), tokens, tokens, config(out_dir=str(ckpt)))
    run.model.register_forward_pre_hook(sigint_when(lambda m: run.step == 1))
    with pytest.raises(TrainingInterrupted, match="interrupted after step 2; checkpoint saved"):
        run.train()
    assert Trainer.resume(ckpt, tokens, tokens).step == 2
    without_dir = Trainer(tiny_model(), tokens, tokens, config())
    without_dir.model.register_forward_pre_hook(sigint_when(lambda m: True))
    with pytest.raises(TrainingInterrupted, match="nothing saved"):
        without_dir.train()


def test_an_ignored_ctrl_c_stays_ignored(tokens):
    """Under nohup, or in a job a script starts in the background, SIGINT is ignored: so is it here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        run = Trainer(tiny_model(), tokens, tokens, config())
        run.model.register_forward_pre_hook(sigint_when(lambda m: run.step == 1))
        assert run.train().steps[-1] == run.tc.max_steps - 1  # trained to the end
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # and left ignored
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_checkpoints_hold_the_tokenizer_and_keep_a_readme(tokens, tmp_path):
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvw")
    assert tok.vocab_size == VOCAB
    ckpt = tmp_path / "run"
    ckpt.mkdir()
    (ckpt / "README.md").write_text("notes")
    run = Trainer(tiny_model(), tokens, tokens, config(out_dir=str(ckpt), checkpoint_interval=2), tok)
    run.train(until=2)
    assert (ckpt / "tokenizer.json").is_file() and (ckpt / "README.md").read_text() == "notes"
    model, tok2 = load_checkpoint(ckpt)
    assert tok2.encode("abc") == tok.encode("abc")
    assert Trainer.resume(ckpt, tokens, tokens).tokenizer.vocab_size == VOCAB


# ----- 4-6. every config field is type-checked -----------------------------------------------------

GPT_BAD = [
    ("bias", "false"),
    ("bias", "true"),
    ("bias", 0),
    ("bias", 1),
    ("bias", None),
    ("bias", 1.0),
    ("tie_weights", "false"),
    ("tie_weights", 0),
    ("tie_weights", None),
    ("dropout", "0.1"),
    ("dropout", None),
    ("dropout", math.nan),
    ("dropout", math.inf),
    ("dropout", True),
    ("rope_base", math.inf),
    ("rope_base", math.nan),
    ("rope_base", -math.inf),
    ("rope_base", "10000"),
    ("rope_base", None),
    ("rope_base", True),
    ("layer_norm_eps", math.inf),
    ("layer_norm_eps", math.nan),
    ("layer_norm_eps", "1e-5"),
    ("layer_norm_eps", None),
    ("pos_encoding", 1),
    ("pos_encoding", None),
    ("attn_impl", 1),
    ("attn_impl", None),
    ("n_layer", 2.0),
    ("n_layer", "2"),
    ("n_layer", True),
    ("n_layer", None),
    ("n_embd", 16.5),
    ("n_head", "2"),
    ("block_size", math.inf),
    ("vocab_size", -3),
]


@pytest.mark.parametrize("name, value", GPT_BAD)
def test_gpt_config_rejects_wrong_types(name, value):
    with pytest.raises(ValueError, match=name):
        GPTConfig(**(TINY | {name: value}))


@pytest.mark.parametrize("name, value", [(n, v) for n, v in GPT_BAD if isinstance(v, str) or v is None])
def test_config_json_with_wrong_types_is_refused_naming_the_file(tmp_path, name, value):
    GPT(GPTConfig(**TINY)).save(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(d | {name: value}))
    with pytest.raises(ValueError, match=rf"config\.json.*{name}"):
        GPT.load(tmp_path)


def test_numpy_numbers_are_accepted_as_python_numbers():
    cfg = GPTConfig(**(TINY | dict(rope_base=np.float64(500), dropout=np.float32(0.5))))
    assert type(cfg.rope_base) is float and type(cfg.dropout) is float
    tc = TrainConfig(max_steps=np.int64(5), learning_rate=np.float32(0.01), min_lr=0.0)
    assert type(tc.max_steps) is int and type(tc.learning_rate) is float
    json.dumps(cfg.to_dict()), json.dumps(dataclasses.asdict(tc))


TRAIN_BAD = [
    ("max_steps", 2.5),
    ("max_steps", "10"),
    ("max_steps", True),
    ("max_steps", None),
    ("max_steps", math.nan),
    ("batch_size", 2.0),
    ("batch_size", "4"),
    ("batch_size", None),
    ("grad_accum_steps", 1.5),
    ("learning_rate", "1e-3"),
    ("learning_rate", None),
    ("learning_rate", math.nan),
    ("learning_rate", math.inf),
    ("min_lr", math.nan),
    ("weight_decay", math.nan),
    ("weight_decay", math.inf),
    ("weight_decay", "0.1"),
    ("weight_decay", None),
    ("grad_clip", math.nan),
    ("grad_clip", math.inf),
    ("grad_clip", "1"),
    ("grad_clip", None),
    ("beta1", math.nan),
    ("beta1", "0.9"),
    ("beta2", math.inf),
    ("eval_interval", 2.5),
    ("eval_interval", None),
    ("eval_iters", 1.5),
    ("eval_iters", "20"),
    ("seed", 1.5),
    ("seed", "1"),
    ("seed", None),
    ("device", 1),
    ("dtype", None),
    ("dtype", 1),
    ("compile", "false"),
    ("compile", 1),
    ("compile", None),
    ("progress", "true"),
    ("progress", 0),
    ("out_dir", 1),
    ("out_dir", ""),
    ("checkpoint_interval", 2.5),
    ("checkpoint_interval", "1"),
    ("warmup_steps", 1.5),
    ("warmup_steps", None),
    ("lr_schedule", None),
    ("lr_schedule", 1),
]


@pytest.mark.parametrize("name, value", TRAIN_BAD)
def test_train_config_rejects_wrong_types_naming_the_field(name, value):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**{name: value})


def toy_task(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (n, 6), generator=g), torch.randint(2, (n,), generator=g)


FINETUNE_BAD = [
    ("grad_clip", math.nan),
    ("grad_clip", math.inf),
    ("grad_clip", -1.0),
    ("grad_clip", "1"),
    ("grad_clip", None),
    ("weight_decay", math.nan),
    ("weight_decay", math.inf),
    ("weight_decay", -0.1),
    ("weight_decay", "0"),
    ("weight_decay", None),
    ("batch_size", 2.0),
    ("batch_size", "4"),
    ("batch_size", True),
    ("steps", 1.5),
    ("steps", True),
    ("lr", math.nan),
    ("lr", math.inf),
    ("lr", "1e-3"),
    ("lr", None),
    ("head_lr", math.nan),
    ("warmup", math.nan),
    ("warmup", "0.1"),
    ("seed", 1.5),
    ("seed", "0"),
]


@pytest.mark.parametrize("name, value", FINETUNE_BAD)
def test_finetune_rejects_bad_values_naming_the_field(name, value):
    clf = GPTClassifier(GPT(GPTConfig(**TINY)), mode="full")
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    with pytest.raises(ValueError, match=name):
        finetune(clf, toy_task(16), toy_task(8), **(dict(steps=2) | {name: value}))
    assert_identical(before, clf.state_dict())  # nothing trained


# ----- 5. everything checked before step 1 ---------------------------------------------------------


@pytest.mark.parametrize(
    "train, val, message",
    [
        (np.arange(8) % VOCAB, None, "train_data has 8 tokens"),
        (np.zeros((10, 10), dtype=np.int64), None, "1-D array"),
        (np.zeros(100, dtype=np.float32), None, "integer token ids"),
        (np.full(100, VOCAB), None, f"token id {VOCAB}, outside"),
        (np.full(100, -1), None, "token id -1"),
        ("not tokens", None, "integer token ids"),
        (np.zeros(100, dtype=np.int64), np.zeros(5, dtype=np.int64), "val_data has 5 tokens"),
        (np.zeros(100, dtype=np.int64), np.full(100, 99), "val_data holds token id 99"),
    ],
)
def test_bad_data_is_refused_before_training(train, val, message):
    with pytest.raises(ValueError, match=message):
        Trainer(tiny_model(), train, val, config())


@pytest.mark.parametrize("until", [2.5, True, -1, 9, "4"])
def test_bad_until_is_refused(tokens, until):
    with pytest.raises(ValueError, match="until must be an integer"):
        Trainer(tiny_model(), tokens, tokens, config()).train(until=until)


def test_out_dir_problems_are_found_before_step_1(tokens, tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        Trainer(tiny_model(), tokens, tokens, config(out_dir=str(a_file)))
    with pytest.raises(ValueError, match="cannot write checkpoints there"):
        Trainer(tiny_model(), tokens, tokens, config(out_dir=str(a_file / "run")))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="thesis.tex, which are not checkpoint files"):
        Trainer(tiny_model(), tokens, tokens, config(out_dir=str(tmp_path / "notes")))
    monkeypatch.chdir(tmp_path / "notes")
    with pytest.raises(ValueError, match="current directory"):
        Trainer(tiny_model(), tokens, tokens, config(out_dir="."))


def test_trainer_without_train_data_refuses_to_train(tokens):
    with pytest.raises(ValueError, match="no train_data"):
        Trainer(tiny_model(), None, tokens, config()).train()


# ----- 7. corrupted files ----------------------------------------------------------------------------


def saved_checkpoint(tmp_path):
    tok = CharTokenizer.from_text("abcdefghijklmnopqrstuvw")
    GPT(GPTConfig(**TINY)).save(tmp_path)
    tok.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


CORRUPTIONS = {
    "model.safetensors truncated": (
        lambda d: truncate(d / "model.safetensors"),
        "model.safetensors.*truncated",
    ),
    "model.safetensors header only": (
        lambda d: truncate(d / "model.safetensors", 0.01),
        "model.safetensors.*truncated",
    ),
    "model.safetensors empty": (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors"),
    "model.safetensors garbage": (
        lambda d: (d / "model.safetensors").write_bytes(os.urandom(1000)),
        "model.safetensors",
    ),
    "config.json bad JSON": (lambda d: (d / "config.json").write_text('{"n_layer": 1,'), "config.json.*JSON"),
    "config.json a list": (lambda d: (d / "config.json").write_text("[1, 2]"), "config.json.*list"),
    "config.json not UTF-8": (lambda d: (d / "config.json").write_bytes(b"\xff\xfe{"), "config.json"),
    "config.json without rope_base": (
        lambda d: edit_json(d / "config.json", drop="rope_base"),
        "config.json lacks.*rope_base",
    ),
    "config.json without layer_norm_eps": (
        lambda d: edit_json(d / "config.json", drop="layer_norm_eps"),
        "config.json lacks.*layer_norm_eps",
    ),
    "config.json without n_layer": (lambda d: edit_json(d / "config.json", drop="n_layer"), "lacks.*n_layer"),
    "config.json unknown field": (
        lambda d: edit_json(d / "config.json", add={"n_layers": 2}),
        "config.json.*unknown GPTConfig field",
    ),
    "config.json bias 'false'": (lambda d: edit_json(d / "config.json", add={"bias": "false"}), "bias"),
    "config.json eps Infinity": (
        lambda d: edit_json(d / "config.json", add={"layer_norm_eps": math.inf}),
        "layer_norm_eps",
    ),
    "config.json other vocab": (
        lambda d: edit_json(d / "config.json", add={"vocab_size": VOCAB + 1}),
        "config.json and model.safetensors come from different saves.*vocab_size",
    ),
    "tokenizer.json bad JSON": (lambda d: (d / "tokenizer.json").write_text("{"), "tokenizer.json.*JSON"),
    "tokenizer.json unknown type": (
        lambda d: edit_json(d / "tokenizer.json", add={"type": "wordpiece"}),
        "tokenizer.json.*unknown tokenizer type",
    ),
    "tokenizer.json without chars": (
        lambda d: edit_json(d / "tokenizer.json", drop="chars"),
        "tokenizer.json.*not a valid char tokenizer",
    ),
    "tokenizer.json a string": (lambda d: (d / "tokenizer.json").write_text('"abc"'), "tokenizer.json"),
    "tokenizer.json of another vocabulary": (
        lambda d: CharTokenizer.from_text("abc").save(str(d / "tokenizer.json")),
        "tokenizer.json has 3 tokens but the model's vocabulary has 23",
    ),
    "tokenizer.json missing": (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json not found"),
    "config.json missing": (lambda d: (d / "config.json").unlink(), "config.json not found"),
    "integer weights": (lambda d: int_weights(d), "dtype torch.int64"),
}


def edit_json(path, drop=None, add=None):
    d = json.loads(path.read_text())
    d.pop(drop, None)
    path.write_text(json.dumps(d | (add or {})))


def int_weights(directory):
    state = safetensors.torch.load_file(directory / "model.safetensors")
    state = {k: v.long() for k, v in state.items()}
    safetensors.torch.save_file(state, directory / "model.safetensors")


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_checkpoints_are_errors_naming_the_file(tmp_path, corruption):
    damage, message = CORRUPTIONS[corruption]
    directory = saved_checkpoint(tmp_path)
    damage(directory)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_checkpoint(directory)


def test_trainer_json_problems_are_errors_naming_the_file(tokens, tmp_path):
    run = Trainer(tiny_model(), tokens, tokens, config())
    run.save_checkpoint(tmp_path / "c")
    (tmp_path / "c" / "trainer.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"trainer\.json is not valid JSON"):
        Trainer.resume(tmp_path / "c", tokens, tokens)
    run.save_checkpoint(tmp_path / "c")
    edit_json(tmp_path / "c" / "trainer.json", drop="files")
    with pytest.raises(ValueError, match="lacks.*files.*cannot be verified"):
        Trainer.resume(tmp_path / "c", tokens, tokens)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer.resume(tmp_path / "nowhere", tokens, tokens)
    run.save_checkpoint(tmp_path / "c")
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        Trainer.resume(tmp_path / "c", tokens, tokens, max_stepz=3)


def test_gpt_save_interrupted_in_either_file_leaves_a_loadable_model(tmp_path, monkeypatch):
    """GPT.save alone (no Trainer): each file is replaced whole, so an interrupt keeps the old one."""
    old, new = GPT(GPTConfig(**TINY)), GPT(GPTConfig(**(TINY | dict(dropout=0.1))))
    torch.manual_seed(1)
    new.apply(new._init_weights)
    old.save(tmp_path)
    real_save_file = safetensors.torch.save_file

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", interrupted)  # during the weights
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path)
    loaded = GPT.load(tmp_path)
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), old.state_dict().values(), strict=True)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no temp left
    monkeypatch.setattr(safetensors.torch, "save_file", real_save_file)
    monkeypatch.setattr(Path, "write_text", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):  # new weights written, interrupted during config.json
        new.save(tmp_path)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="different saves.*dropout"):
        GPT.load(tmp_path)  # new weights with the old config: refused, not loaded with dropout 0
    new.save(tmp_path)
    assert GPT.load(tmp_path).config == new.config


def test_config_json_from_another_save_of_the_same_shape_is_refused(tmp_path):
    GPT(GPTConfig(**TINY)).save(tmp_path / "a")
    GPT(GPTConfig(**(TINY | dict(rope_base=500.0, pos_encoding="rope")))).save(tmp_path / "b")
    shutil.copy(tmp_path / "b" / "config.json", tmp_path / "a" / "config.json")
    with pytest.raises(ValueError, match="config.json and model.safetensors come from different saves"):
        GPT.load(tmp_path / "a")


def test_saved_configs_hold_every_field(tmp_path):
    GPT(GPTConfig(**TINY)).save(tmp_path)
    assert set(json.loads((tmp_path / "config.json").read_text())) == set(GPTConfig().to_dict())


# ----- 9. undefined losses, devices, local paths -------------------------------------------------------


@pytest.mark.parametrize(
    "targets, message",
    [
        (torch.full((2, 3), -100), "all 6 targets are -100"),
        (torch.tensor([[1, 2, 3], [4, 5, 6]]).float(), "torch.int64"),
        (torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.int32), "torch.int64"),
        (torch.tensor([[1, 2, 3], [4, 5, VOCAB]]), f"target {VOCAB} is outside"),
        (torch.tensor([[1, 2, 3], [4, -5, 6]]), "target -5 is outside"),
        (torch.tensor([[1, 2, 3], [4, -100, 1000]]), "target 1000 is outside"),
        ([[1, 2, 3], [4, 5, 6]], "list"),
    ],
)
def test_bad_targets_are_refused(targets, message):
    model = GPT(GPTConfig(**TINY))
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(2, 3, dtype=torch.long), targets)


def test_an_empty_sequence_has_no_loss():
    model = GPT(GPTConfig(**TINY))
    empty = torch.zeros(2, 0, dtype=torch.long)
    assert model(empty)[0].shape == (2, 0, VOCAB)
    with pytest.raises(ValueError, match="empty"):
        model(empty, empty)


def test_some_ignored_targets_still_give_a_finite_loss():
    model = GPT(GPTConfig(**TINY))
    targets = torch.tensor([[1, -100, -100], [-100, -100, 2]])
    assert math.isfinite(model(torch.zeros(2, 3, dtype=torch.long), targets)[1].item())


@pytest.mark.parametrize("where", ["cuda", "cuda:0", "mps", "tpu", "cuda:99", 3.5])
def test_map_location_must_exist_here(tmp_path, where):
    kind = str(where).split(":")[0]
    if kind == "cuda" and torch.cuda.is_available() and where != "cuda:99":
        pytest.skip("CUDA is available here")
    if kind == "mps" and torch.backends.mps.is_available():
        pytest.skip("MPS is available here")
    GPT(GPTConfig(**TINY)).save(tmp_path)
    with pytest.raises(ValueError, match="map_location"):
        GPT.load(tmp_path, map_location=where)


@pytest.mark.parametrize("path", ["./no/such/gpt2", "/no/such/gpt2", "~/no-such-gpt2-copy", "a/b/c"])
def test_from_pretrained_with_a_missing_local_path_fails_at_once(path):
    pytest.importorskip("transformers")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="not a directory"):
        GPT.from_pretrained(path)
    assert time.perf_counter() - start < 5


def test_load_tokenizer_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="tok.json not found"):
        load_tokenizer(tmp_path / "tok.json")


DDP_WORKER = """
import os, signal, sys
import numpy as np, torch
import torch.distributed as dist
from gptmini.model import GPT, GPTConfig
from gptmini.train import Trainer, TrainConfig, TrainingInterrupted

torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=31, block_size=8, n_layer=1, n_head=2, n_embd=16))
tokens = np.random.default_rng(0).integers(0, 31, 3000).astype(np.uint16)
tc = TrainConfig(max_steps=6, batch_size=3, eval_interval=0, eval_iters=1, progress=False, device="cpu",
                 out_dir=sys.argv[1])
trainer = Trainer(model, tokens, None, tc)
if trainer.rank == 1:  # Ctrl-C reaches one rank only, in the forward pass of step 2
    sent = []
    def hook(module, args):
        if trainer.step == 1 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
    model.register_forward_pre_hook(hook)
try:
    trainer.train()
    stopped = "finished"
except TrainingInterrupted as stop:
    stopped = str(stop.step)
with open(f"{sys.argv[1]}-rank{trainer.rank}", "w") as f:
    f.write(stopped)
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ctrl_c_on_one_ddp_rank_stops_every_rank_after_the_same_step(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [torchrun, "--standalone", "--nproc_per_node=2", str(script), str(run)]
    subprocess.run(
        argv, check=True, env=env, capture_output=True, timeout=120, preexec_fn=sigint_as_in_a_terminal
    )
    stops = [(tmp_path / f"run-rank{r}").read_text() for r in (0, 1)]
    assert stops == ["2", "2"]
    assert json.loads((run / "trainer.json").read_text())["step"] == 2

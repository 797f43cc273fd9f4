"""The command line misused: every bad input is one line on stderr and a non-zero exit, found before
training starts; Ctrl-C saves a checkpoint that ``train --resume`` continues exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

import gptmini.__main__ as cli
import gptmini.train
from conftest import sigint_as_in_a_terminal
from gptmini import GPT, CharTokenizer, GPTConfig
from gptmini.__main__ import load_config, main
from gptmini.train import TrainConfig, Trainer

CONFIG = "configs/shakespeare_char_cpu.toml"
TINY = ["--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--block_size", "16", "--max_steps", "4"]
TINY += ["--batch_size", "2", "--eval_iters", "1", "--eval_interval", "0", "--progress", "false"]


def fails(argv: list[str], capsys, code: int = 2) -> str:
    """Run the CLI, expecting it to exit with ``code`` after one line on stderr (no traceback)."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == code, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(autouse=True)
def no_corpus(monkeypatch, request):
    """Fast tests must fail before the corpus is read: reading it is an error here."""
    if "slow" in request.keywords:
        return

    def refuse(*args, **kwargs):
        raise AssertionError("the corpus was read: the error was not found before training")

    monkeypatch.setattr("gptmini.data.corpus_text", refuse)
    monkeypatch.setattr("gptmini.data.tokenize_corpus", refuse)


# ----- config files and overrides ------------------------------------------------------------------

TOML_BAD = [
    ('[model]\nbias = "false"', "bias"),
    ('[model]\ntie_weights = "false"', "tie_weights"),
    ("[model]\nrope_base = inf", "rope_base"),
    ("[model]\nlayer_norm_eps = inf", "layer_norm_eps"),
    ("[model]\nlayer_norm_eps = nan", "layer_norm_eps"),
    ("[model]\ndropout = -0.1", "dropout"),
    ("[model]\nn_layer = 2.5", "n_layer"),
    ('[model]\nn_head = "4"', "n_head"),
    ('[model]\npos_encoding = "alibi"', "pos_encoding"),
    ("[model]\nvocab_size = 300", "vocab_size is set by the tokenizer"),
    ("[train]\nmax_steps = 2.5", "max_steps"),
    ("[train]\nmax_steps = 0", "max_steps"),
    ("[train]\nbatch_size = 2.0", "batch_size"),
    ("[train]\nlearning_rate = nan", "learning_rate"),
    ("[train]\nlearning_rate = inf", "learning_rate"),
    ("[train]\ngrad_clip = nan", "grad_clip"),
    ("[train]\nweight_decay = nan", "weight_decay"),
    ('[train]\ncompile = "yes"', "compile"),
    ("[train]\nprogress = 1", "progress"),
    ("[train]\neval_iters = 0", "eval_iters"),
    ('[train]\nlr_schedule = "step"', "lr_schedule"),
    ("[train]\ncheckpoint_interval = 10", "checkpoint_interval"),
    ('[train]\ndevice = "tpu"', "device"),
    ('[train]\ndtype = "fp8"', "dtype"),
    ('[train]\nseed = "1337"', "seed"),
    ('[data]\ntokenizer = "wordpiece"', "tokenizer"),
    ("[data]\ntokenizer = 3", "tokenizer"),
    ("[data]\nvocab_size = 300", "vocab_size sizes the BPE"),
    ('[data]\ntokenizer = "bpe"\nvocab_size = "big"', "vocab_size"),
    ('[data]\ntokenizer = "bpe"\nvocab_size = 0', "vocab_size"),
    ('[data]\ntokenizer = "bpe"\nvocab_size = 3.5', "vocab_size"),
    ("[optim]\nlr = 1", "unknown section"),
    ("[model]\nn_layers = 2", "unknown key"),
    ("model = 3", "must be a .model. table"),
    ("[model\nn_layer = 2", "not valid TOML"),
    ("[model]\nn_layer = ", "not valid TOML"),
]


@pytest.mark.parametrize("text, message", TOML_BAD)
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    err = fails(["train", "--config", str(path)], capsys)
    assert re.search(message, err), err


OVERRIDES_BAD = [
    (["--bias", "maybe"], "true or false"),
    (["--max_steps", "2.5"], "type int"),
    (["--learning_rate", "nan"], "learning_rate"),
    (["--rope_base", "inf"], "rope_base"),
    (["--layer_norm_eps", "inf"], "layer_norm_eps"),
    (["--grad_clip", "nan"], "grad_clip"),
    (["--weight_decay", "inf"], "weight_decay"),
    (["--vocab_size", "300"], "vocab_size sizes the BPE"),
    (["--tokenizer", "bpe", "--vocab_size", "-1"], "vocab_size"),
    (["--tokenizer", "bpe", "--vocab_size", "many"], "type int"),
    (["--dropout", "abc"], "type float"),
    (["--n_head", "3"], "divisible"),
    (["--device", "tpu"], "device"),
    (["--dtype", "fp8"], "dtype"),
    (["--max_steps"], "pairs"),
    (["--nope", "1"], "unknown option"),
    (["--checkpoint_interval", "5"], "needs out_dir"),
    (["--out_dir", ""], "out_dir"),
    (["--eval_iters", "0"], "eval_iters"),
    (["--batch_size", "0"], "batch_size"),
    (["--min_lr", "1"], "min_lr"),
    (["--beta2", "1"], "beta1 and beta2"),
    (["--tokenizer", "sentencepiece"], "unknown tokenizer"),
]


@pytest.mark.parametrize("overrides, message", OVERRIDES_BAD)
def test_bad_overrides_are_one_line_errors(capsys, overrides, message):
    assert message in fails(["train", "--config", CONFIG, *overrides], capsys)


def test_missing_or_unreadable_config_file(tmp_path, capsys):
    assert "No such file" in fails(["train", "--config", str(tmp_path / "none.toml")], capsys)
    assert "directory" in fails(["train", "--config", str(tmp_path)], capsys)


def test_vocab_size_override_sizes_the_bpe_tokenizer(monkeypatch, capsys):
    cfg = load_config(CONFIG, ["--tokenizer", "bpe", "--vocab_size", "300"])
    assert cfg["data"]["vocab_size"] == 300 and "vocab_size" not in cfg["model"]
    seen = {}

    def tokenizer(name, vocab_size, text):
        seen.update(name=name, vocab_size=vocab_size)
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "_tokenizer", tokenizer)
    monkeypatch.setattr("gptmini.data.corpus_text", lambda split: "")
    fails(["train", "--config", CONFIG, "--tokenizer", "bpe", "--vocab_size", "300"], capsys)
    assert seen == {"name": "bpe", "vocab_size": 300}


# ----- out_dir ---------------------------------------------------------------------------------------


def test_out_dir_problems_are_found_before_training(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in fails(["train", "--config", CONFIG, "--out_dir", str(a_file)], capsys)
    err = fails(["train", "--config", CONFIG, "--out_dir", str(a_file / "run")], capsys)
    assert "cannot write" in err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    assert "not checkpoint files" in fails(["train", "--config", CONFIG, "--out_dir", str(mine)], capsys)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "model.safetensors").write_text("x")
    err = fails(["train", "--config", CONFIG, "--out_dir", str(earlier)], capsys)
    assert "already holds a run; pass --overwrite" in err and f"--resume {earlier}" in err


def test_out_dir_dot_is_refused(tmp_path, capsys, monkeypatch):
    config = Path(CONFIG).resolve()
    monkeypatch.chdir(tmp_path)
    assert "current directory" in fails(["train", "--config", str(config), "--out_dir", "."], capsys)


# ----- sample and eval of damaged checkpoints ----------------------------------------------------------


def checkpoint(directory: Path) -> Path:
    tok = CharTokenizer.from_text("abcdefgh")
    GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8)).save(directory)
    tok.save(str(directory / "tokenizer.json"))
    return directory


def edit_json(path: Path, drop=None, add=None) -> None:
    d = json.loads(path.read_text())
    d.pop(drop, None)
    path.write_text(json.dumps(d | (add or {})))


DAMAGE = {
    "no such checkpoint": (lambda d: None, "no checkpoint"),
    "truncated weights": (
        lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:300]),
        "model.safetensors is not a readable safetensors file",
    ),
    "config.json bad JSON": (lambda d: (d / "config.json").write_text("{"), "config.json is not valid JSON"),
    "config.json without rope_base": (lambda d: edit_json(d / "config.json", drop="rope_base"), "lacks"),
    "config.json bias 'false'": (lambda d: edit_json(d / "config.json", add={"bias": "false"}), "bias"),
    "tokenizer.json bad JSON": (lambda d: (d / "tokenizer.json").write_text("]"), "tokenizer.json"),
    "tokenizer of another run": (
        lambda d: CharTokenizer.from_text("xyz").save(str(d / "tokenizer.json")),
        "different runs",
    ),
    "no tokenizer": (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json not found"),
}


@pytest.mark.parametrize("command", ["sample", "eval"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_checkpoints_are_one_line_errors(tmp_path, capsys, command, damage):
    directory = checkpoint(tmp_path / "ckpt")
    harm, message = DAMAGE[damage]
    harm(directory)
    target = str(tmp_path / "nothing-here") if damage == "no such checkpoint" else str(directory)
    assert message in fails([command, "--checkpoint", target], capsys)


def test_sample_takes_a_committed_checkpoint_name(capsys):
    from gptmini.checkpoints import CHECKPOINTS_DIR

    if not (CHECKPOINTS_DIR / "shakespeare-char").is_dir():
        pytest.skip("checkpoint not present")
    main(["sample", "--checkpoint", "shakespeare-char", "--prompt", "ROMEO:", "--max_new_tokens", "5"])
    assert capsys.readouterr().out.startswith("ROMEO:")


# ----- --resume ------------------------------------------------------------------------------------------


@pytest.fixture
def saved_run(tmp_path) -> Path:
    """A checkpoint as train writes it (tokenizer included), from a tiny run of two steps."""
    tok = CharTokenizer.from_text("abcdefgh")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=1, n_embd=8))
    ids = np.arange(200) % tok.vocab_size
    tc = TrainConfig(max_steps=4, batch_size=2, eval_iters=1, progress=False, out_dir=str(tmp_path / "run"))
    trainer = Trainer(model, ids, ids, tc, tokenizer=tok)
    trainer.train(until=2)
    return trainer.save_checkpoint(tc.out_dir)


def test_resume_errors(tmp_path, capsys, saved_run):
    assert "no checkpoint" in fails(["train", "--resume", str(tmp_path / "none")], capsys)
    err = fails(["train", "--resume", str(saved_run), "--n_layer", "2"], capsys)
    assert "[model] n_layer is 2 in the command line but 1 in the checkpoint" in err
    err = fails(["train", "--resume", str(saved_run), "--config", CONFIG], capsys)
    assert f"in {CONFIG} but" in err and "a resumed run keeps its settings" in err
    err = fails(["train", "--resume", str(saved_run), "--tokenizer", "bpe"], capsys)
    assert "[data] tokenizer is 'bpe'" in err
    (saved_run / "model.safetensors").write_bytes(
        (saved_run / "model.safetensors").read_bytes()[:-4] + b"abcd"
    )
    assert "SHA-256 mismatch" in fails(["train", "--resume", str(saved_run)], capsys)


def test_a_committed_checkpoint_cannot_be_resumed(capsys):
    from gptmini.checkpoints import CHECKPOINTS_DIR

    if not (CHECKPOINTS_DIR / "shakespeare-char").is_dir():
        pytest.skip("checkpoint not present")
    err = fails(["train", "--resume", str(CHECKPOINTS_DIR / "shakespeare-char")], capsys)
    assert "cannot be resumed" in err


# ----- the real thing: Ctrl-C and --resume, in process and as a user runs it ---------------------------


def model_tensors(directory: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(directory / "model.safetensors")


@pytest.mark.slow
def test_ctrl_c_then_resume_gives_the_uninterrupted_run(tmp_path, capsys, monkeypatch):
    main(["train", "--config", CONFIG, *TINY, "--out_dir", str(tmp_path / "straight")])
    real, sent = gptmini.train.lr_at, []

    def lr_at(step, tc):  # Ctrl-C at the start of step 2 (the third)
        if step == 2 and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return real(step, tc)

    monkeypatch.setattr(gptmini.train, "lr_at", lr_at)
    run = tmp_path / "run"
    err = fails(["train", "--config", CONFIG, *TINY, "--out_dir", str(run)], capsys, code=130)
    assert "interrupted after step 3" in err and f"--resume {run}" in err
    assert (run / "tokenizer.json").is_file()
    monkeypatch.undo()
    main(["train", "--config", CONFIG, *TINY, "--resume", str(run)])
    straight, resumed = model_tensors(tmp_path / "straight"), model_tensors(run)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    assert json.loads((run / "metrics.json").read_text())["steps"] == 4


@pytest.mark.slow
def test_sigint_to_the_cli_process_saves_and_exits_130(tmp_path):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "gptmini", "train", "--config", CONFIG, *TINY, "--out_dir", str(run)]
    argv[argv.index("--max_steps") + 1] = "100000"
    argv += ["--checkpoint_interval", "1"]  # a checkpoint after every step: a sign that training runs
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=sigint_as_in_a_terminal)  # fmt: skip
    assert "parameters" in proc.stdout.readline()  # training starts right after this line
    deadline = time.monotonic() + 120  # however busy the machine, interrupt only once a step is done
    while not (run / "trainer.json").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    assert Trainer.resume(run, None, None).step > 0
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "trainer.json",
        "trainer.safetensors",
    ]

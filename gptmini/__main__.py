"""Command line: ``python -m gptmini train | sample | eval``; each takes ``--help``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
import tomllib
import types
import typing
from pathlib import Path

from gptmini.checkpoints import load_checkpoint, load_tokenizer

SECTIONS = ("model", "train", "data")
DATA_DEFAULTS = {"tokenizer": "char", "vocab_size": 512}
TOKENIZERS = ("char", "bpe")
#: Where a --key override goes when several sections know the key: vocab_size sizes the tokenizer
#: ([data]); the model's vocab_size always follows the tokenizer's.
OVERRIDE_ORDER = ("data", "model", "train")


def _fields(section: str) -> dict[str, object]:
    """Known keys of a config section and their defaults."""
    if section == "data":
        return dict(DATA_DEFAULTS)
    from gptmini.model import GPTConfig
    from gptmini.train import TrainConfig

    cls = GPTConfig if section == "model" else TrainConfig
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _field_type(section: str, key: str):
    from gptmini.model import GPTConfig
    from gptmini.train import TrainConfig

    if section == "data":
        return type(DATA_DEFAULTS[key])
    cls = GPTConfig if section == "model" else TrainConfig
    hint = typing.get_type_hints(cls)[key]
    if isinstance(hint, types.UnionType):  # e.g. int | None: the non-None member
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return hint


def _convert(section: str, key: str, text: str):
    kind = _field_type(section, key)
    if text.lower() in ("none", "null"):
        return None
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"--{key} takes true or false, got {text!r}")
        return text.lower() in ("true", "1")
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"--{key} takes a value of type {kind.__name__}, got {text!r}") from None


def load_config(path: str | None, overrides: list[str]) -> dict[str, dict]:
    """A TOML config ([model], [train], [data]) with ``--key value`` overrides applied; unknown keys fail."""
    config: dict[str, dict] = {s: {} for s in SECTIONS}
    if path is not None:
        with open(path, "rb") as f:
            try:
                loaded = tomllib.load(f)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{path} is not valid TOML: {err}") from None
        for section, values in loaded.items():
            if section not in SECTIONS:
                raise ValueError(f"unknown section [{section}] in {path}; allowed: {', '.join(SECTIONS)}")
            known = _fields(section)
            if not isinstance(values, dict):
                raise ValueError(f"{section} in {path} must be a [{section}] table, got {values!r}")
            for key, value in values.items():
                if key not in known:
                    raise ValueError(
                        f"unknown key {key!r} in [{section}] of {path}; allowed: {', '.join(known)}"
                    )
                config[section][key] = value
    if len(overrides) % 2:
        raise ValueError(f"overrides come in pairs --key value, got {overrides}")
    for flag, text in zip(overrides[::2], overrides[1::2], strict=True):
        key = flag.removeprefix("--")
        sections = [s for s in OVERRIDE_ORDER if key in _fields(s)]
        if not flag.startswith("--") or not sections:
            raise ValueError(f"unknown option {flag!r}: not a key of [model], [train] or [data]")
        config[sections[0]][key] = _convert(sections[0], key, text)
    return config


def _data_config(config: dict[str, dict]) -> dict:
    """The [data] section with its defaults, checked: a known tokenizer, and vocab_size only for BPE."""
    given, dc = config["data"], {**DATA_DEFAULTS, **config["data"]}
    if dc["tokenizer"] not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {dc['tokenizer']!r}; allowed: {', '.join(TOKENIZERS)}")
    size = dc["vocab_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"[data] vocab_size must be a positive integer, got {size!r}")
    if dc["tokenizer"] == "char" and "vocab_size" in given:
        raise ValueError(
            "vocab_size sizes the BPE tokenizer (--tokenizer bpe); the char tokenizer has one token "
            "per character of the corpus"
        )
    if "vocab_size" in config["model"]:
        raise ValueError(
            "[model] vocab_size is set by the tokenizer; size a BPE tokenizer with [data] vocab_size"
        )
    return dc


def _tokenizer(name: str, vocab_size: int, text: str):
    from gptmini.tokenizer import BPETokenizer, CharTokenizer

    if name == "char":
        return CharTokenizer.from_text(text)
    tok = BPETokenizer.train(text, vocab_size=vocab_size)
    if tok.vocab_size != vocab_size:
        raise ValueError(
            f"asked for a BPE vocabulary of {vocab_size} tokens, the corpus gave {tok.vocab_size}"
        )
    return tok


def _check_new_out_dir(out_dir: str | None, overwrite: bool) -> None:
    """A new run may not take over a directory holding another run, unless --overwrite says so."""
    from gptmini.checkpoints import check_out_dir

    if out_dir is None:
        return
    check_out_dir(out_dir)  # not a file, nothing but checkpoint files, writable
    if Path(out_dir).is_dir() and any(Path(out_dir).iterdir()) and not overwrite:
        raise ValueError(
            f"--out_dir {out_dir} already holds a run; pass --overwrite to replace it, "
            f"or --resume {out_dir} to continue it"
        )


def cmd_train(args: argparse.Namespace, overrides: list[str], argv: list[str]) -> None:
    import torch

    from gptmini import data
    from gptmini.device import auto_device
    from gptmini.model import GPT, GPTConfig
    from gptmini.train import TrainConfig, Trainer

    if args.resume:
        return _resume(args, overrides, argv)
    config = load_config(args.config, overrides)
    dc = _data_config(config)
    tc = TrainConfig(**config["train"])  # everything is checked before the corpus is read
    GPTConfig(**{**config["model"], "vocab_size": 1})
    auto_device(tc.device)
    _check_new_out_dir(tc.out_dir, args.overwrite)
    # Characters come from the whole corpus (so that no val character is unknown); BPE merges are
    # learned from the training plays only.
    text = data.corpus_text("all" if dc["tokenizer"] == "char" else "train")
    tok = _tokenizer(dc["tokenizer"], dc["vocab_size"], text)
    train_ids, val_ids = data.tokenize_corpus(tok, "train"), data.tokenize_corpus(tok, "val")
    torch.manual_seed(tc.seed)  # the initial weights: the same command gives the same model
    model = GPT(GPTConfig(**{**config["model"], "vocab_size": tok.vocab_size}))
    trainer = Trainer(model, train_ids, val_ids, tc, tokenizer=tok)
    if trainer.rank == 0:
        print(
            f"{model.num_params():,} parameters, {len(train_ids):,} training tokens, device {trainer.device}"
        )
    _train_and_save(trainer, argv)


def _resume(args: argparse.Namespace, overrides: list[str], argv: list[str]) -> None:
    """Continue the run saved in --resume DIR with its model, tokenizer and training config.

    A --config file, if given, must agree with the checkpoint; --key value on the command line may
    change [train] keys on purpose (e.g. --max_steps to train longer), not the model or the data.
    """
    from gptmini import data
    from gptmini.checkpoints import recover_interrupted_save, verified_checkpoint
    from gptmini.train import Trainer

    directory = recover_interrupted_save(Path(args.resume))
    saved_train = verified_checkpoint(directory)["train_config"]
    tok = load_tokenizer(directory / "tokenizer.json")
    saved = {
        "model": {k: v for k, v in _saved_model_config(directory).items() if k != "vocab_size"},
        "data": {"tokenizer": tok.to_dict()["type"], "vocab_size": tok.vocab_size},
        "train": {**saved_train, "out_dir": str(directory)},
    }
    given = load_config(None, overrides)  # the command line alone: its [train] keys change the run
    merged = load_config(args.config, overrides)
    _data_config({**merged, "data": {"tokenizer": saved["data"]["tokenizer"], **merged["data"]}})
    merged["train"] = {k: v for k, v in merged["train"].items() if k not in given["train"]}
    _check_agrees(merged, saved, args.config or "the command line", skip=("out_dir", "progress"))
    train_overrides = {"out_dir": str(directory), **given["train"]}
    if train_overrides["out_dir"] != str(directory):
        _check_new_out_dir(train_overrides["out_dir"], args.overwrite)
    train_ids, val_ids = data.tokenize_corpus(tok, "train"), data.tokenize_corpus(tok, "val")
    trainer = Trainer.resume(directory, train_ids, val_ids, **train_overrides)
    if trainer.rank == 0:
        print(f"resuming {directory} at step {trainer.step} of {trainer.tc.max_steps}")
    _train_and_save(trainer, argv)


def _saved_model_config(directory: Path) -> dict:
    from gptmini.model import GPT

    return GPT.load(directory).config.to_dict()


def _check_agrees(given: dict, saved: dict, source: str, skip) -> None:
    """Every key set in ``given`` has the checkpoint's value."""
    for section in SECTIONS:
        for key, value in given[section].items():
            if key in skip or key not in saved[section] or saved[section][key] == value:
                continue
            hint = (
                f"pass --{key} {value} to change it on purpose" if section == "train" else "start a new run"
            )
            raise ValueError(
                f"--resume: [{section}] {key} is {value!r} in {source} but {saved[section][key]!r} in the "
                f"checkpoint; a resumed run keeps its settings ({hint})"
            )


def _train_and_save(trainer, argv: list[str]) -> None:
    """Train to max_steps; rank 0 reports and saves the final checkpoint with its metrics."""
    history, tc = trainer.train(), trainer.tc
    if trainer.rank != 0:
        return
    final = history.evals[-1]
    print(f"step {trainer.step}: train loss {final['train']:.4f}, val loss {final['val']:.4f}")
    if tc.out_dir:
        out = trainer.save_checkpoint(tc.out_dir)
        metrics = {
            "command": "python -m gptmini " + shlex.join(argv),
            "parameters": trainer.model.num_params(),
            "steps": trainer.step,
            "seconds": round(history.seconds, 1),
            "tokens_per_sec": round(history.tokens_per_sec),
            "final_eval": final,
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        print(f"saved to {out}")


def cmd_sample(args: argparse.Namespace) -> None:
    import torch

    from gptmini.generate import generate

    model, tok = load_checkpoint(args.checkpoint)
    idx = torch.tensor([tok.encode(args.prompt)], dtype=torch.long)
    out = generate(
        model,
        idx,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.temperature > 0,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_return_sequences=args.num_return_sequences,
        seed=args.seed,
    )
    for i, row in enumerate(out):
        if i:
            print("-" * 40)
        print(tok.decode(row.tolist()))


def cmd_eval(args: argparse.Namespace) -> None:
    from gptmini import data
    from gptmini.train import TrainConfig, Trainer

    model, tok = load_checkpoint(args.checkpoint)
    ids = data.tokenize_corpus(tok, args.split)
    tc = TrainConfig(batch_size=args.batch_size, eval_iters=None, progress=False)
    start = time.perf_counter()
    loss = Trainer(model, None, ids, tc).evaluate()["val"]
    print(
        f"{args.split} loss {loss:.4f} nats/token over {len(ids):,} tokens ({time.perf_counter() - start:.1f} s)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gptmini", description="Train, sample from and evaluate GPTs."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser(
        "train",
        help="train a model on the Shakespeare corpus",
        description="Train a model. Any key of the config's [model], [train] or [data] section can be "
        "overridden as --key value, e.g. --max_steps 100 --n_layer 2 --out_dir runs/test.",
    )
    train.add_argument("--config", help="a TOML file with [model], [train] and [data] sections")
    train.add_argument(
        "--resume", metavar="DIR", help="continue the run saved in DIR (Ctrl-C saves one; so does --out_dir)"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="let --out_dir replace the checkpoint of another run"
    )
    sample = sub.add_parser("sample", help="generate text from a saved model")
    sample.add_argument(
        "--checkpoint",
        required=True,
        help="a directory written by train (model + tokenizer), or a committed checkpoint's name",
    )
    sample.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sample.add_argument("--max_new_tokens", type=int, default=300)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    sample.add_argument("--top_k", type=int, default=None)
    sample.add_argument("--top_p", type=float, default=None)
    sample.add_argument("--num_return_sequences", type=int, default=1)
    sample.add_argument("--seed", type=int, default=1337)
    ev = sub.add_parser("eval", help="loss of a saved model over a whole split, in order")
    ev.add_argument("--checkpoint", required=True, help="a directory written by train, or a committed name")
    ev.add_argument("--split", default="val", choices=("train", "val", "all"))
    ev.add_argument("--batch_size", type=int, default=32)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "train" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from gptmini.train import TrainingInterrupted

    try:
        if args.command == "train":
            cmd_train(args, rest, argv)
        elif args.command == "sample":
            cmd_sample(args)
        else:
            cmd_eval(args)
    except TrainingInterrupted as stop:
        hint = (
            f"; continue with: python -m gptmini train --resume {stop.checkpoint}" if stop.checkpoint else ""
        )
        parser.exit(130, f"{stop}{hint}\n")
    except KeyboardInterrupt:
        parser.exit(130, "interrupted\n")
    except (ValueError, OSError, ArithmeticError) as err:  # one line, no traceback
        message = " ".join(str(err).split("\n"))
        parser.exit(2, f"error: {message}\n")


if __name__ == "__main__":
    main()

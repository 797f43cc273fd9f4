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

from gptmini.checkpoints import load_tokenizer

SECTIONS = ("model", "train", "data")
DATA_DEFAULTS = {"tokenizer": "char", "vocab_size": 512}
TOKENIZERS = ("char", "bpe")


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
            loaded = tomllib.load(f)
        for section, values in loaded.items():
            if section not in SECTIONS:
                raise ValueError(f"unknown section [{section}] in {path}; allowed: {', '.join(SECTIONS)}")
            known = _fields(section)
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
        sections = [s for s in SECTIONS if key in _fields(s)]
        if not flag.startswith("--") or not sections:
            raise ValueError(f"unknown option {flag!r}: not a key of [model], [train] or [data]")
        config[sections[0]][key] = _convert(sections[0], key, text)
    return config


def _tokenizer(name: str, vocab_size: int, text: str):
    from gptmini.tokenizer import BPETokenizer, CharTokenizer

    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; allowed: {', '.join(TOKENIZERS)}")
    if name == "char":
        return CharTokenizer.from_text(text)
    return BPETokenizer.train(text, vocab_size=vocab_size)


def cmd_train(args: argparse.Namespace, overrides: list[str], argv: list[str]) -> None:
    import torch

    from gptmini import data
    from gptmini.model import GPT, GPTConfig
    from gptmini.train import TrainConfig, Trainer

    config = load_config(args.config, overrides)
    dc = {**DATA_DEFAULTS, **config["data"]}
    # Characters come from the whole corpus (so that no val character is unknown); BPE merges are
    # learned from the training plays only.
    text = data.corpus_text("all" if dc["tokenizer"] == "char" else "train")
    tok = _tokenizer(dc["tokenizer"], dc["vocab_size"], text)
    train_ids, val_ids = data.tokenize_corpus(tok, "train"), data.tokenize_corpus(tok, "val")
    tc = TrainConfig(**config["train"])
    torch.manual_seed(tc.seed)  # the initial weights: the same command gives the same model
    model = GPT(GPTConfig(**{**config["model"], "vocab_size": tok.vocab_size}))
    trainer = Trainer(model, train_ids, val_ids, tc)
    if trainer.rank == 0:
        print(
            f"{model.num_params():,} parameters, {len(train_ids):,} training tokens, device {trainer.device}"
        )
    history = trainer.train()
    if trainer.rank != 0:
        return
    final = history.evals[-1]
    print(f"step {trainer.step}: train loss {final['train']:.4f}, val loss {final['val']:.4f}")
    if tc.out_dir:
        out = trainer.save_checkpoint(tc.out_dir)
        tok.save(str(out / "tokenizer.json"))
        metrics = {
            "command": "python -m gptmini " + shlex.join(argv),
            "parameters": model.num_params(),
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
    from gptmini.model import GPT

    model = GPT.load(args.checkpoint).eval()
    tok = load_tokenizer(Path(args.checkpoint) / "tokenizer.json")
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
    from gptmini.model import GPT
    from gptmini.train import TrainConfig, Trainer

    model = GPT.load(args.checkpoint)
    tok = load_tokenizer(Path(args.checkpoint) / "tokenizer.json")
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
    sample = sub.add_parser("sample", help="generate text from a saved model")
    sample.add_argument(
        "--checkpoint", required=True, help="a directory written by train (model + tokenizer)"
    )
    sample.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sample.add_argument("--max_new_tokens", type=int, default=300)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    sample.add_argument("--top_k", type=int, default=None)
    sample.add_argument("--top_p", type=float, default=None)
    sample.add_argument("--num_return_sequences", type=int, default=1)
    sample.add_argument("--seed", type=int, default=1337)
    ev = sub.add_parser("eval", help="loss of a saved model over a whole split, in order")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--split", default="val", choices=("train", "val", "all"))
    ev.add_argument("--batch_size", type=int, default=32)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command != "train" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "train":
            cmd_train(args, rest, argv)
        elif args.command == "sample":
            cmd_sample(args)
        else:
            cmd_eval(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()

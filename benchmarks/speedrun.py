"""A CPU training speedrun: how soon does a recipe reach the nanoGPT CPU recipe's held-out loss?

One run trains two recipes on the book's character corpus and split, interleaved in chunks of steps
(as ``bench_train.py`` does, so that a busy machine slows both alike; evaluation is not on the clock):

- the nanoGPT CPU recipe (nanoGPT's README, "I only have a macbook": ``train.py
  config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20 --log_interval=1
  --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
  --lr_decay_iters=2000 --dropout=0.0``, with ``train.py``'s defaults for the rest: ``bias = False``,
  ``weight_decay = 1e-1``, ``beta1 = 0.9``, ``grad_clip = 1.0``; the config's ``learning_rate = 1e-3``,
  ``min_lr = 1e-4``, ``beta2 = 0.99``, ``warmup_iters = 100``; karpathy/nanoGPT at commit 3adf61e1);
- a record recipe (``--recipe``; the records are defined in :func:`recipes`), of at most the nanoGPT
  recipe's parameter count.

The held-out loss is over every val token, in order (consecutive windows of each model's context),
evaluated after every chunk. The script reports the training time at which the record's loss reaches
the nanoGPT recipe's final loss (linear interpolation between the two evaluations around it), the ratio
of that time to the nanoGPT recipe's whole training time, and the record's loss at that whole time
(it is trained for at most that long: its final loss if it finished sooner).

A recipe with ``compile=True`` is compiled before the clock starts, as modded-nanogpt does
(:func:`compile_off_the_clock`), by default into a new, empty compiler cache; its scores are also
reported with the compilation's seconds counted (``counting_compile``).

    python benchmarks/speedrun.py --recipe r3 [--threads 2] [--chunks 16]
    python benchmarks/speedrun.py --recipe x_bs24 --threads 1 --scale 0.3 --val-tokens 120000  # a screen

Each ``--recipe rN`` run writes ``results/speedrun_rN.json`` and ``.txt`` and rebuilds the record
table (``results/speedrun_records.md``, and ``results/speedrun.json``: the latest record's run with the
table). A screen (``--scale`` < 1 or ``--val-tokens``: shorter runs, part of val) is only added to
``results/speedrun_screens.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_train import BASELINE, GPTMINI, SHARED_TRAIN, SMALL
from runinfo import run_info

from gptmini import data
from gptmini.data import eval_batches
from gptmini.model import GPT, GPTConfig
from gptmini.tokenizer import CharTokenizer
from gptmini.train import History, TrainConfig, Trainer, make_optimizer

RESULTS = Path(__file__).resolve().parent / "results"
SEED = 1337
# nanoGPT's train.py has no biases by default (bench_train's SMALL keeps GPT-2's): its CPU recipe here.
NANOGPT = dict(
    model=dict(SMALL, bias=False, **BASELINE["model"]), train=dict(SHARED_TRAIN, **BASELINE["train"])
)
NANOGPT_STEPS = 2000


def recipes() -> dict[str, dict]:
    """The recipes by name: ``model`` (GPTConfig fields), ``train`` (TrainConfig fields), ``steps``,
    ``zero_init`` (output projections start at zero), ``change`` (one line: what is new).

    ``r0``, ``r1``, ... are the records, in order, each built on the one before; ``x_*`` are variants
    screened and rejected (``results/speedrun_records.md``). Steps are chosen so that each recipe trains
    for a little less than the nanoGPT recipe's time (a Muon step cost 1.3 to 1.5 times a nanoGPT-recipe step
    in the runs here).
    """

    def on(base: dict, change: str, steps: int | None = None, model=(), train=(), **extra) -> dict:
        """``base`` with some model and training fields changed."""
        model, train = dict(base["model"], **dict(model)), dict(base["train"], **dict(train))
        return dict(base, model=model, train=train, steps=steps or base["steps"], change=change, **extra)

    nano = dict(NANOGPT, steps=NANOGPT_STEPS, change="nanoGPT's CPU recipe")
    lin0 = dict(lr_schedule="linear", min_lr=0.0)
    muon = dict(optimizer="muon")
    # fmt: off
    r0 = on(nano, "gptmini's recipe of chapter 6: rotary positions, peak lr 2e-3 (biases kept)",
            model=dict(bias=True, **GPTMINI["model"]), train=GPTMINI["train"])
    x_lr3 = on(nano, "rotary, no biases, ReLU² MLP, peak lr 3e-3 -> 3e-4, 1,700 steps", 1700,
               dict(pos_encoding="rope", mlp="relu2"), dict(learning_rate=3e-3, min_lr=3e-4))
    x_lin0 = on(x_lr3, "x_lr3, the learning rate decaying linearly to 0", train=lin0)
    r1 = on(x_lin0, "no biases, ReLU² MLP, peak lr 3e-3 decaying linearly to 0 (AdamW)", 1800)
    r2 = on(r1, "r1 with Muon for the blocks' matrices, lr 6e-3", 1450, train=dict(muon, learning_rate=6e-3))
    r4 = on(r2, "r2 in 1,350 steps with a 50-step warmup", 1350, train=dict(warmup_steps=50))
    r5 = on(r4, "r4 with 64 dimensions (202K parameters), batches of 32, lr 1.2e-2, 1,400 steps", 1400,
            dict(n_embd=64), dict(batch_size=32, learning_rate=1.2e-2))
    return {
        "nanogpt": nano,  # the reference: nanoGPT's README recipe for a CPU
        "r0": r0,  # the starting point: bench_train.py's gptmini recipe
        "r1": r1,  # no biases, ReLU², lr 3e-3 decaying linearly to 0: the best AdamW screen
        "r2": r2,  # r1 with Muon (lr 6e-3) for the blocks' matrices
        "r3": on(r2, "r2 in 1,300 steps, to end within the reference's time", 1300),  # r2's steps overran
        "r4": r4,  # r2 in 1,350 steps with a 50-step warmup: a quicker start
        # a quarter of the parameters on 1.9 times the characters (screened: x_b24 ... x_d64b48)
        "r5": r5,
        # the same characters per step in windows of 128: each prediction is evaluated with more context
        "r6": on(r4, "r5 with context 128 in batches of 16 (the same characters per step), 1,300 steps", 1300,
                 dict(n_embd=64, block_size=128), dict(batch_size=16, learning_rate=1.2e-2)),
        # compiled, the compilation off the clock (compile_off_the_clock): screened as x_c64 and x_c96
        "r7": on(r5, "r5 compiled (torch.compile), 1,800 steps", 1800, train=dict(compile=True)),
        "r8": on(r5, "r7 with 96 dimensions (451K parameters), lr 8e-3, 1,050 steps", 1050, dict(n_embd=96),
                 dict(compile=True, learning_rate=8e-3)),
        "x_lr3": x_lr3,  # rotary, no biases, ReLU², lr 3e-3 with nanoGPT's cosine to a tenth
        "x_lin0": x_lin0,  # x_lr3 decaying linearly to 0 instead
        "x_muon6": on(x_lin0, "x_lin0 with Muon, lr 6e-3, 1,300 steps", 1300, train=dict(muon, learning_rate=6e-3)),
        "x_muon10": on(x_lin0, "x_lin0 with Muon, lr 1e-2, 1,300 steps", 1300, train=dict(muon, learning_rate=1e-2)),
        "x_ctx128": on(x_lin0, "x_lin0 with context 128, batch 6", 1550, dict(block_size=128), dict(batch_size=6)),
        "x_qk": on(x_lin0, "x_lin0 with QK-norm, lr 5e-3", 1600, dict(qk_norm=True), dict(learning_rate=5e-3)),
        "x_zero": on(x_lin0, "x_lin0 with zero-initialised output projections", zero_init=True),
        "x_lr5": on(x_lin0, "x_lin0 with peak lr 5e-3", train=dict(learning_rate=5e-3)),
        # batches of 24: the per-step costs (Muon's orthogonalisation, the optimizer, Python) are shared by
        # twice the tokens; a batch-24 step cost 1.6-1.8 times a batch-12 step here
        "x_b24": on(r4, "r4 with batches of 24, 1,000 steps", 1000, train=dict(batch_size=24)),
        "x_b24lr8": on(r4, "r4 with batches of 24, lr 8e-3, 1,000 steps", 1000,
                       train=dict(batch_size=24, learning_rate=8e-3)),
        "x_b32lr8": on(r4, "r4 with batches of 32, lr 8e-3, 780 steps", 780,
                       train=dict(batch_size=32, learning_rate=8e-3)),
        "x_b24ns3": on(r4, "r4 with batches of 24, 3 Newton-Schulz iterations, 1,050 steps", 1050,
                       train=dict(batch_size=24, muon_ns_steps=3)),
        # smaller models, more tokens: the reference trains 0.8M parameters on 1.5M characters, far fewer
        # characters per parameter than chapter 11's compute-optimal 65 to 86
        "x_d96": on(r4, "r4 with 96 dimensions (451K parameters), batches of 24, 1,150 steps", 1150,
                    dict(n_embd=96), dict(batch_size=24)),
        "x_d96b32": on(r4, "r4 with 96 dimensions, batches of 32, 870 steps", 870,
                       dict(n_embd=96), dict(batch_size=32)),
        "x_l3d112": on(r4, "r4 with 3 layers of 112 dimensions (461K parameters), batches of 24, 1,100 steps",
                       1100, dict(n_layer=3, n_embd=112), dict(batch_size=24)),
        "x_d64b32": on(r4, "r4 with 64 dimensions (202K parameters), batches of 32, lr 8e-3, 1,350 steps", 1350,
                       dict(n_embd=64), dict(batch_size=32, learning_rate=8e-3)),
        "x_l3d112s": on(r4, "x_l3d112 in 1,250 steps", 1250, dict(n_layer=3, n_embd=112), dict(batch_size=24)),
        "x_l3d112lr9": on(r4, "x_l3d112 in 1,250 steps, lr 9e-3", 1250, dict(n_layer=3, n_embd=112),
                          dict(batch_size=24, learning_rate=9e-3)),
        "x_d96b32lr8": on(r4, "x_d96b32 in 880 steps, lr 8e-3", 880, dict(n_embd=96),
                          dict(batch_size=32, learning_rate=8e-3)),
        "x_d64lr12": on(r4, "x_d64b32 in 1,400 steps, lr 1.2e-2", 1400, dict(n_embd=64),
                        dict(batch_size=32, learning_rate=1.2e-2)),
        "x_d64lr16": on(r4, "x_d64b32 in 1,400 steps, lr 1.6e-2", 1400, dict(n_embd=64),
                        dict(batch_size=32, learning_rate=1.6e-2)),
        "x_l6d64": on(r4, "6 layers of 64 dimensions (301K parameters), batches of 32, lr 1.2e-2, 1,000 steps",
                      1000, dict(n_layer=6, n_embd=64), dict(batch_size=32, learning_rate=1.2e-2)),
        "x_d80": on(r4, "80 dimensions (314K parameters), batches of 32, lr 1e-2, 1,200 steps", 1200,
                    dict(n_embd=80), dict(batch_size=32, learning_rate=1e-2)),
        "x_d64b48": on(r4, "x_d64b32 with batches of 48, lr 1.6e-2, 950 steps", 950, dict(n_embd=64),
                       dict(batch_size=48, learning_rate=1.6e-2)),
        # around r5; x_ctl (r5 itself) ran with x_ns3, x_wd0, x_h2, x_untied and x_b24d64, x_wd2-8 in a run of
        # their own (the training reproduces with fixed seeds: final losses compare across runs)
        "x_ctl": on(r5, "r5 again: the control of the screens run with it"),
        "x_ns3": on(r5, "r5 with 3 Newton-Schulz iterations, 1,500 steps", 1500, train=dict(muon_ns_steps=3)),
        "x_wd0": on(r5, "r5 without weight decay", train=dict(weight_decay=0.0)),
        "x_wd2": on(r5, "r5 with weight decay 0.2", train=dict(weight_decay=0.2)),
        "x_wd3": on(r5, "r5 with weight decay 0.3", train=dict(weight_decay=0.3)),
        "x_wd5": on(r5, "r5 with weight decay 0.5", train=dict(weight_decay=0.5)),
        "x_wd8": on(r5, "r5 with weight decay 0.8", train=dict(weight_decay=0.8)),
        "x_h2": on(r5, "r5 with 2 heads of 32 dimensions", model=dict(n_head=2)),
        "x_untied": on(r5, "r5 with the head untied from the token embedding", model=dict(tie_weights=False)),
        "x_b24d64": on(r5, "r5 with batches of 24, lr 1e-2, 1,800 steps", 1800,
                       train=dict(batch_size=24, learning_rate=1e-2)),
        # compiled (TrainConfig(compile=True)), the compilation off the clock: compile_off_the_clock
        "x_c64": on(r5, "r5 compiled, 1,800 steps", 1800, train=dict(compile=True)),
        "x_c96": on(r5, "r5 with 96 dimensions, lr 8e-3, compiled, 1,100 steps", 1100, dict(n_embd=96),
                    dict(compile=True, learning_rate=8e-3)),
    }
    # fmt: on


def build(recipe: dict, vocab_size: int, steps: int, train_ids, val_ids, seed: int = SEED) -> Trainer:
    """A Trainer for ``recipe`` (weights drawn from ``seed``), evaluating one batch when a chunk ends."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, **recipe["model"]))
    if recipe.get("zero_init"):  # modded-nanogpt: projections into the residual stream start at zero
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("c_proj.weight"):
                    p.zero_()
    train = dict(recipe["train"], seed=seed, eval_iters=1)
    tc = TrainConfig(max_steps=steps, eval_interval=0, progress=False, device="cpu", **train)
    return Trainer(model, train_ids, val_ids, tc)


def compile_off_the_clock(trainer: Trainer, steps: int = 3) -> float:
    """Compile a ``compile=True`` trainer's model before the clock starts; the seconds it took.

    modded-nanogpt's convention (its ``train_gpt.py``, "warmup the training kernels, then
    re-initialize the state"): a few steps compile the forward and backward graphs, then the weights,
    the optimizer (a new one: no moments yet), the batch and dropout generators and the step count are
    put back, so that the timed run starts exactly where an untouched trainer would.
    """
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    batches, dropout = trainer.batch_gen.get_state(), torch.get_rng_state()
    start = time.perf_counter()
    trainer.train(until=steps)
    seconds = time.perf_counter() - start
    trainer.model.load_state_dict(weights)
    trainer.optimizer = make_optimizer(trainer.model, trainer.tc, trainer.device.type)
    trainer.batch_gen.set_state(batches)
    torch.set_rng_state(dropout)
    trainer.step, trainer.history = 0, History()
    return seconds


def train_chunk(trainer: Trainer, until: int) -> float:
    """Train to step ``until``; the training seconds, without the evaluation ``train()`` ends with.

    As in bench_train.py: that evaluation (one batch here) is run again and its time subtracted.
    """
    start = time.perf_counter()
    trainer.train(until=until)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    trainer.evaluate()
    return seconds - (time.perf_counter() - start)


@torch.no_grad()
def full_val_loss(model: GPT, val_ids: np.ndarray, batch_size: int = 64) -> float:
    """Mean loss over every val token, in order: consecutive windows of the model's context."""
    model.eval()
    total, count = 0.0, 0
    for x, y in eval_batches(val_ids, batch_size, model.config.block_size):
        _, loss = model(x, y)
        total, count = total + loss.item() * y.numel(), count + y.numel()
    model.train()
    return total / count


def crossing_time(curve: list[list[float]], target: float) -> float | None:
    """Training seconds at which the loss first reaches ``target``, linearly interpolated between the
    evaluations just before and just after (curve: [step, seconds, loss] rows); None if it never does."""
    previous = None
    for _, seconds, loss in curve:
        if loss <= target:
            if previous is None:
                return seconds  # already there at the first evaluation: an upper bound
            s0, l0 = previous
            return s0 + (l0 - target) / (l0 - loss) * (seconds - s0)
        previous = (seconds, loss)
    return None


def loss_at(curve: list[list[float]], seconds: float) -> float:
    """The loss at ``seconds`` of training: interpolated, or the last one if the run ended sooner."""
    times, losses = [c[1] for c in curve], [c[2] for c in curve]
    return losses[-1] if seconds >= times[-1] else float(np.interp(seconds, times, losses))


def on_clock(curve: list[list[float]], seconds: float) -> list[list[float]]:
    """``curve`` with ``seconds`` (a compilation before the first step) added to every time."""
    return [[step, round(t + seconds, 2), loss] for step, t, loss in curve]


COMPARED = ("seconds_to_target", "ratio", "loss_at_nanogpt_seconds", "gap")


def compare(curve: list[list[float]], target: float, base_seconds: float) -> dict:
    """A recipe's curve against the nanoGPT recipe's final loss ``target`` and training time."""
    reach, at_base = crossing_time(curve, target), loss_at(curve, base_seconds)
    return {
        "seconds_to_target": None if reach is None else round(reach, 2),
        "ratio": None if reach is None else round(reach / base_seconds, 4),
        "loss_at_nanogpt_seconds": round(at_base, 4),
        "gap": round(target - at_base, 4),
    }


def run(args: argparse.Namespace) -> dict:
    """Train the nanoGPT recipe and ``args.recipe`` (one record, or several screened) interleaved."""
    table = recipes()
    tok = CharTokenizer.from_text(data.corpus_text("all"))
    train_ids, val_ids = data.tokenize_corpus(tok, "train"), data.tokenize_corpus(tok, "val")
    if args.val_tokens:
        val_ids = val_ids[: args.val_tokens]
    names = ["nanogpt", *args.recipe]
    steps = {name: round(table[name]["steps"] * args.scale) for name in names}
    runs = {name: build(table[name], tok.vocab_size, steps[name], train_ids, val_ids) for name in names}
    params = {name: t.model.num_params() for name, t in runs.items()}
    for name in args.recipe:
        if params[name] > params["nanogpt"]:
            raise ValueError(f"{name} has {params[name]:,} parameters, over nanoGPT's {params['nanogpt']:,}")
    if not args.warm_compile_cache:  # compile from nothing, as on a reader's first run
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="speedrun-inductor-")
    compile_seconds = {name: round(compile_off_the_clock(t), 1) for name, t in runs.items() if t.tc.compile}
    curves: dict[str, list[list[float]]] = {name: [] for name in runs}  # [step, train seconds, full val]
    seconds = dict.fromkeys(runs, 0.0)
    load_start, wall_start = os.getloadavg(), time.perf_counter()
    for k in range(1, args.chunks + 1):
        for name, trainer in runs.items():
            seconds[name] += train_chunk(trainer, round(k * steps[name] / args.chunks))
            if name != "nanogpt" or k % args.base_eval_every == 0 or k == args.chunks:
                loss = full_val_loss(trainer.model, val_ids)
                curves[name].append([trainer.step, round(seconds[name], 2), round(loss, 4)])
                print(
                    f"{name:<10} step {trainer.step:>5}  {seconds[name]:7.1f} s  val {loss:.4f}", flush=True
                )
    load_end = os.getloadavg()
    target, base_seconds = curves["nanogpt"][-1][2], seconds["nanogpt"]
    result = {
        **run_info(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "args": vars(args),
        "seeds": {"weights": SEED, "batches": SEED},
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "wall_seconds": round(time.perf_counter() - wall_start, 1),
        "val_tokens": len(val_ids) - 1,
        "recipes": {
            name: {
                "change": table[name]["change"],
                "model": table[name]["model"],
                "train": table[name]["train"],
                "zero_init": bool(table[name].get("zero_init")),
                "params": params[name],
                "steps": steps[name],
                "seconds": round(seconds[name], 2),
                "final_val_loss": curves[name][-1][2],
                "curve": curves[name],
                "compile_seconds": compile_seconds.get(name, 0.0),  # not on the training clock
                **({} if name == "nanogpt" else compare(curves[name], target, base_seconds)),
                # the same scores with the compilation on the clock, before the first step
                **(
                    {
                        "counting_compile": compare(
                            on_clock(curves[name], compile_seconds[name]), target, base_seconds
                        )
                    }
                    if name in compile_seconds and name != "nanogpt"
                    else {}
                ),
            }
            for name in runs
        },
        "target_loss": target,
        "nanogpt_seconds": round(base_seconds, 2),
    }
    return result


def summary(r: dict) -> str:
    lines = [
        f"{'recipe':<10}{'params':>9}{'steps':>7}{'seconds':>9}{'final val':>11}{'to target (s)':>15}"
        f"{'fraction':>10}{'val at nanoGPT s':>18}{'below':>9}",
    ]
    for n, v in r["recipes"].items():
        line = f"{n:<10}{v['params']:>9,}{v['steps']:>7}{v['seconds']:>9.1f}{v['final_val_loss']:>11.4f}"
        if n != "nanogpt":
            reach = "never" if v["ratio"] is None else f"{v['seconds_to_target']:.1f}"
            frac = "-" if v["ratio"] is None else f"{v['ratio']:.3f}"
            line += f"{reach:>15}{frac:>10}{v['loss_at_nanogpt_seconds']:>18.4f}{v['gap']:>+9.4f}"
        lines.append(line)
    lines += [
        "",
        f"target (the nanoGPT recipe's final full-val loss): {r['target_loss']:.4f} after {r['nanogpt_seconds']:.1f} s",
        f"val tokens {r['val_tokens']:,}; threads {r['machine']['threads']}, torch {r['machine']['torch']}, "
        f"{r['machine']['cpu']}, load average {r['load_average_start'][0]:.2f} -> {r['load_average_end'][0]:.2f}, "
        f"{r['wall_seconds']:.0f} s in all, {r['date']}",
    ]
    return "\n".join(lines)


def record_rows() -> list[dict]:
    """One row per record run saved (results/speedrun_rN.json), in the order of :func:`recipes`."""
    rows = []
    for name in recipes():
        path = RESULTS / f"speedrun_{name}.json"
        if name.startswith("r") and path.exists():
            r = json.loads(path.read_text())
            v = r["recipes"][name]
            rows.append({
                "recipe": name, "date": r["date"], "change": v["change"], "params": v["params"],
                "steps": v["steps"], "seconds": v["seconds"], "final_val_loss": v["final_val_loss"],
                "seconds_to_target": v["seconds_to_target"], "ratio": v["ratio"],
                "loss_at_nanogpt_seconds": v["loss_at_nanogpt_seconds"], "gap": v["gap"], "target": r["target_loss"],
                "nanogpt_seconds": r["nanogpt_seconds"], "threads": r["machine"]["threads"],
                "load_start": r["load_average_start"][0], "load_end": r["load_average_end"][0],
                "compile_seconds": v.get("compile_seconds", 0.0), "counting_compile": v.get("counting_compile"),
            })  # fmt: skip
    return rows


def write_table() -> None:
    """results/speedrun_records.md, and results/speedrun.json: the last record's run with the table."""
    rows = record_rows()
    fmt = lambda x, f: "never" if x is None else format(x, f)  # noqa: E731

    def compiled(w: dict) -> str:
        c = w.get("counting_compile")
        return "-" if not c else f"{w['compile_seconds']:.1f}; {fmt(c['ratio'], '.3f')}, {c['gap']:+.4f}"

    lines = [
        "# CPU speedrun records (benchmarks/speedrun.py)",
        "",
        "Time to reach the nanoGPT CPU recipe's final full-val loss, measured in the same run as that recipe "
        "(training time only); loss at the nanoGPT recipe's whole training time. Records with the same date "
        "(the end of the run) were trained in the same run.",
        "",
        "| record | date | change | params | steps, s | nanoGPT: s, loss | time to target (s) | fraction "
        "| loss at nanoGPT's time | below target | compilation (off the clock): s; fraction, below with it "
        "| threads, load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(
            f"| {w['recipe']} | {w['date']} | {w['change']} | {w['params']:,} | {w['steps']}, {w['seconds']:.0f} "
            f"| {w['nanogpt_seconds']:.0f}, "
            f"{w['target']:.4f} | {fmt(w['seconds_to_target'], '.1f')} | {fmt(w['ratio'], '.3f')} | "
            f"{w['loss_at_nanogpt_seconds']:.4f} | {w['gap']:+.4f} | {compiled(w)} | {w['threads']}, "
            f"{w['load_start']:.2f} |"
            for w in rows
        ),
    ]
    screens = RESULTS / "speedrun_screens.json"
    if screens.exists():
        lines += [
            "",
            "## Screens (on part of val, some with fewer steps; each against the nanoGPT recipe in the same run)",
            "",
        ]
        lines += [
            "Each model is evaluated on consecutive windows of its own context (128 for x_ctx128, else 64).",
            "",
        ]
        lines += [
            "| recipe | change | params | scale, val tokens | steps, s (nanoGPT: s, loss) | fraction to target "
            "| loss at nanoGPT's time | below |"
        ]
        lines += ["|---|---|---|---|---|---|---|---|"]
        table = recipes()
        for key, s in json.loads(screens.read_text()).items():
            change = table.get(key.split("@")[0], s)["change"]  # the recipe's description as it stands now
            lines.append(
                f"| {key} | {change} | {s['params']:,} | {s['scale']}, {s['val_tokens']:,} | {s['steps']}, {s['seconds']:.1f} "
                f"({s['nanogpt_seconds']:.1f}, {s['target']:.4f}) | {fmt(s['ratio'], '.3f')} "
                f"| {s['loss_at_nanogpt_seconds']:.4f} | {s['gap']:+.4f} |"
            )
    (RESULTS / "speedrun_records.md").write_text("\n".join(lines) + "\n")
    if rows:
        latest = json.loads((RESULTS / f"speedrun_{rows[-1]['recipe']}.json").read_text())
        (RESULTS / "speedrun.json").write_text(json.dumps({**latest, "records": rows}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    choices = [n for n in recipes() if n != "nanogpt"]
    parser.add_argument(
        "--recipe", nargs="+", default=["r0"], choices=choices, help="a record, or recipes to screen"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--chunks", type=int, default=16, help="interleaved chunks; the record is evaluated after each"
    )
    parser.add_argument(
        "--base-eval-every", type=int, default=2, help="evaluate the nanoGPT recipe every N chunks"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of every recipe's steps (screens)")
    parser.add_argument(
        "--val-tokens", type=int, default=0, help="evaluate on the first N val tokens (screens)"
    )
    parser.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="let torch.compile reuse its cache on disk (default: a new, empty cache for the run)",
    )
    parser.add_argument(
        "--table-only", action="store_true", help="only rebuild the table from the saved runs"
    )
    args = parser.parse_args()
    if args.table_only:
        return write_table()
    torch.set_num_threads(args.threads)
    result = run(args)
    text = summary(result)
    print(text)
    screen = args.scale != 1.0 or args.val_tokens or not all(n.startswith("r") for n in args.recipe)
    if screen:
        path = RESULTS / "speedrun_screens.json"
        screens = json.loads(path.read_text()) if path.exists() else {}
        for name in args.recipe:
            v = result["recipes"][name]
            screens[f"{name}@{args.scale}"] = {
                **{k: v[k] for k in ("change", "params", "steps", "seconds", "seconds_to_target", "ratio")},
                "final_val_loss": v["final_val_loss"],
                **{k: v[k] for k in ("loss_at_nanogpt_seconds", "gap")},
                "compile_seconds": v.get("compile_seconds", 0.0), "counting_compile": v.get("counting_compile"),
                "scale": args.scale, "val_tokens": result["val_tokens"], "target": result["target_loss"],
                "nanogpt_seconds": result["nanogpt_seconds"], "threads": args.threads,
                "load_start": result["load_average_start"][0], "date": result["date"],
            }  # fmt: skip
        path.write_text(json.dumps(screens, indent=1) + "\n")
        write_table()
        return
    for name in args.recipe:  # records measured in one run: each keeps the run's file, its numbers on top
        record = {**result, "record": name, **{k: result["recipes"][name][k] for k in COMPARED}}
        (RESULTS / f"speedrun_{name}.json").write_text(json.dumps(record, indent=1) + "\n")
        (RESULTS / f"speedrun_{name}.txt").write_text(text + "\n")
    write_table()


if __name__ == "__main__":
    main()

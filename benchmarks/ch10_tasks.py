"""Chapter 10's task models: small GPTs, each trained on one task written as text.

    words     numerals to English words    "4072="  ->  "four thousand seventy-two"
    addition  addition of whole numbers    "123+45="  ->  "168"
    qa        questions over given facts   "ann has a red cup. bob has a blue hat. what does bob have?"  ->  " blue hat"

Every example is one line of characters: the prompt, the answer, then the end token ``\\n``. A model is
trained by next-token prediction on whole lines with the loss counted on the answer tokens only (the
targets at prompt positions are -100), and answers by greedy decoding until it writes the end token.
The models are GPT-2-shaped (learned positions, biases, tied head), small enough to train on one CPU
thread in a few minutes each (the CPU time is recorded in the results); each is saved with ``GPT.save`` under ``checkpoints/ch10-<task>/``
with its ``tokenizer.json``, and scored by exact match on held-out examples, which are fixed by seeds
and never drawn for training.

    OMP_NUM_THREADS=1 python benchmarks/ch10_tasks.py                 # every task
    OMP_NUM_THREADS=1 python benchmarks/ch10_tasks.py --task addition # one task
    OMP_NUM_THREADS=1 python benchmarks/ch10_tasks.py --task multi    # one model for all three tasks
    OMP_NUM_THREADS=1 python benchmarks/ch10_tasks.py --task qa --seed 1  # another seed, recorded only

The multi-task model ``ch10-multi`` is one model trained on all three tasks at once: each step is a batch
of one task, the tasks interleaved evenly, and nothing but the prompt tells the model which task it is
asked (a prompt ending in ``=`` with a ``+`` is a sum, without one a number to write in words, ending in
``?`` a question).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from runinfo import cpu_name

from gptmini.generate import generate
from gptmini.model import GPT, GPTConfig
from gptmini.tokenizer import CharTokenizer
from gptmini.train import TrainConfig, lr_at

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ch10_tasks.json"
END = "\n"  # the end token: every answer is followed by it, and decoding stops there
VOCAB = END + " +-.=?0123456789abcdefghijklmnopqrstuvwxyz"  # one character vocabulary for every task
TASKS = ("words", "addition", "qa")


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    scored_from: int | None = None  # first prompt character whose prediction is scored; None: none of them


# ----- the tasks -----------------------------------------------------------------------------------

ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()  # fmt: skip
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_words(n: int) -> str:
    """English words for 0 <= n < 1,000,000, without "and": 4072 -> "four thousand seventy-two"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_to_words(n % 100))
    return (
        number_to_words(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + number_to_words(n % 1000))
    )


def random_number(rng: random.Random, digits: int) -> int:
    """A uniformly random number with exactly ``digits`` digits (0 counts as one digit)."""
    return rng.randrange(0 if digits == 1 else 10 ** (digits - 1), 10**digits)


def words_example(rng: random.Random, digits: int) -> Example:
    n = random_number(rng, digits)
    return Example(f"{n}=", number_to_words(n))


def addition_example(rng: random.Random, digits: int, digits_b: int | None = None) -> Example:
    a, b = random_number(rng, digits), random_number(rng, digits if digits_b is None else digits_b)
    return Example(f"{a}+{b}=", str(a + b))


NAMES = "ann bob eve tom sam amy dan liz max zoe ben kim leo mia ned pat ray sue ted una".split()
UNSEEN_NAMES = "ida joe ken roy".split()  # never in a training example
COLOURS = "red blue green black white pink gray brown".split()
OBJECTS = "cup hat box pen key bag map coin book ball".split()


def qa_example(rng: random.Random, n_facts: int, ask: str = "known") -> Example:
    """A few facts "x has a <colour> <object>." and a question about one person.

    ask: "known" (someone in the facts), "unseen" (someone in the facts, with a name never trained on)
    or "absent" (someone the facts do not mention; there is no answer, written as "").
    """
    people = rng.sample(NAMES, n_facts + 1)
    i = n_facts if ask == "absent" else rng.randrange(n_facts)
    if ask == "unseen":
        people[i] = rng.choice(UNSEEN_NAMES)
    things = [f"{rng.choice(COLOURS)} {rng.choice(OBJECTS)}" for _ in range(n_facts)]
    facts = " ".join(f"{p} has a {t}." for p, t in zip(people, things, strict=False))
    prompt = f"{facts} what does {people[i]} have?"
    # the facts are random and never scored; the question is (its name is one from the facts)
    return Example(prompt, "" if ask == "absent" else " " + things[i], scored_from=len(facts) + 1)


TRAIN_DIGITS = {"words": (1, 2, 3, 4), "addition": (1, 2, 3)}  # digits per number (per operand)
ADDITION_WEIGHTS = (1, 2, 4)  # longer operands are drawn more often: they are harder and more numerous
QA_FACTS = (2, 3)


def draw(task: str, rng: random.Random) -> Example:
    """One training example of ``task`` (it may be a held-out one: ``training_examples`` filters)."""
    if task == "words":
        return words_example(rng, rng.choice(TRAIN_DIGITS["words"]))
    if task == "addition":  # operands of 1 to 3 digits, the longer ones more often (they are harder)
        return addition_example(rng, *rng.choices(TRAIN_DIGITS["addition"], ADDITION_WEIGHTS, k=2))
    if task == "qa":
        return qa_example(rng, rng.choice(QA_FACTS))
    raise ValueError(f"unknown task {task!r}; allowed: {TASKS}")


def test_sets(task: str) -> dict[str, list[Example]]:
    """The held-out examples of ``task``, by name; the same on every call (seeded), never trained on.

    words and addition: "d digits" for each number of digits, the trained ones and one or two more.
    qa: new random facts about known names, facts about names never seen in training, and questions
    about a person the facts do not mention (there is no right answer the model could give).
    """
    rng = random.Random(f"test-{task}")
    sets: dict[str, list[Example]] = {}
    if task == "words":
        for d, n in ((2, 20), (3, 100), (4, 200), (5, 200)):
            sets[f"{d} digits"] = _distinct(lambda d=d: words_example(rng, d), n)
    elif task == "addition":
        for d, n in ((1, 20), (2, 200), (3, 200), (4, 200), (5, 200)):
            sets[f"{d} digits"] = _distinct(lambda d=d: addition_example(rng, d), n)
    elif task == "qa":
        sets["known names"] = _distinct(lambda: qa_example(rng, rng.choice(QA_FACTS)), 300)
        sets["unseen name"] = _distinct(lambda: qa_example(rng, rng.choice(QA_FACTS), "unseen"), 100)
        sets["person not in the facts"] = _distinct(lambda: qa_example(rng, 3, "absent"), 100)
    else:
        raise ValueError(f"unknown task {task!r}; allowed: {TASKS}")
    return sets


def _distinct(make, n: int) -> list[Example]:
    out: dict[str, Example] = {}
    while len(out) < n:
        ex = make()
        out.setdefault(ex.prompt, ex)
    return list(out.values())


def training_examples(task: str, seed: int = 0):
    """An endless stream of training examples of ``task``, skipping every held-out prompt."""
    held_out = {ex.prompt for examples in test_sets(task).values() for ex in examples}
    rng = random.Random(f"train-{task}-{seed}")
    while True:
        ex = draw(task, rng)
        if ex.prompt not in held_out:
            yield ex


# ----- batches with the loss on the answer only ----------------------------------------------------


def encode_example(tok: CharTokenizer, ex: Example) -> tuple[list[int], list[int]]:
    """Inputs and targets of one line: targets are the next tokens, -100 where the next token is prompt.

    An example with ``scored_from`` keeps the targets of its prompt from that character on as well.
    """
    ids = tok.encode(ex.prompt + ex.answer + END)
    x, y = ids[:-1], ids[1:]
    start = len(ex.prompt) if ex.scored_from is None else ex.scored_from
    y = [-100] * (start - 1) + y[start - 1 :]  # predict only the answer and END (and the scored prompt)
    return x, y


def make_batch(tok: CharTokenizer, examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of shape (B, T), right-padded to the longest line: END in x, -100 (ignored) in y."""
    pairs = [encode_example(tok, ex) for ex in examples]
    T = max(len(x) for x, _ in pairs)
    pad = tok.encode(END)[0]
    x = torch.tensor([x + [pad] * (T - len(x)) for x, _ in pairs])
    y = torch.tensor([y + [-100] * (T - len(y)) for _, y in pairs])
    return x, y


# ----- answering: greedy decoding until the end token ----------------------------------------------


def answer(model: GPT, tok: CharTokenizer, prompts: list[str], max_new_tokens: int = 48) -> list[str]:
    """The model's greedy answer to each prompt: the text it writes before the end token."""
    end = tok.encode(END)[0]
    out: list[str | None] = [None] * len(prompts)
    by_length: dict[int, list[int]] = {}  # prompts of one length form one batch (no padding needed)
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    for length, rows in by_length.items():
        idx = torch.tensor([tok.encode(prompts[i]) for i in rows])
        new = min(max_new_tokens, model.config.block_size - length)
        ids = generate(model, idx, max_new_tokens=new, do_sample=False, eos_token_id=end)[:, length:]
        for i, row in zip(rows, ids.tolist(), strict=True):
            out[i] = tok.decode(row).split(END)[0]
    return out


def accuracy(model: GPT, tok: CharTokenizer, examples: list[Example]) -> float:
    """Exact-match accuracy of the greedy answers."""
    got = answer(model, tok, [ex.prompt for ex in examples])
    return sum(g == ex.answer for g, ex in zip(got, examples, strict=True)) / len(examples)


# ----- training ------------------------------------------------------------------------------------

MODEL = dict(block_size=128, n_layer=4, n_head=4, n_embd=64, dropout=0.0, bias=True)
# qa needs "the thing a fixed distance back" at every position: rotary positions give that directly.
# Variants, recorded for comparison and not saved: "qa-answer-only" trains the same qa model with the
# loss on the answer only (the question not scored), and "qa-learned" does that with learned positions.
POSITIONS = {"words": "learned", "addition": "learned", "qa": "rope", "qa-answer-only": "rope", "qa-learned": "learned"}  # fmt: skip
ANSWER_ONLY = ("qa-answer-only", "qa-learned")
STEPS = {"words": 1500, "addition": 4000, "qa": 2000, "qa-answer-only": 2000, "qa-learned": 2000}
# the multi-task model: steps of each task (batches as BATCH), interleaved; rotary positions for all,
# since qa needs them. Far fewer steps than the single-task models (a budget of about 4 CPU-minutes).
MULTI_STEPS = {"words": 250, "addition": 1000, "qa": 500}
BATCH = {"words": 64, "addition": 128, "qa": 64, "qa-answer-only": 64, "qa-learned": 64}


CURVE_SET = {"words": "4 digits", "addition": "3 digits", "qa": "known names"}  # tracked while training


def train(task: str, steps: int, batch_size: int, seed: int = 0, eval_every: int = 250) -> tuple[GPT, dict]:
    """Train a fresh model on ``task``; return it and a log (loss every 50 steps, accuracy curve, seconds)."""
    variant, pos_encoding, task = task, POSITIONS[task], task.split("-")[0]  # "qa-learned": the qa task
    tok = CharTokenizer(list(VOCAB))
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, pos_encoding=pos_encoding, **MODEL))
    tc = TrainConfig(max_steps=steps, learning_rate=3e-3, min_lr=3e-4, warmup_steps=100, weight_decay=0.1)
    opt = model.configure_optimizer(tc.weight_decay, tc.learning_rate, (0.9, 0.99))
    stream = training_examples(task, seed)
    if variant in ANSWER_ONLY:  # the same lines, with the loss on the answer only
        stream = (replace(ex, scored_from=None) for ex in stream)
    curve_set = test_sets(task)[CURVE_SET[task]][:100]
    losses, curve, eval_seconds, eval_cpu = [], [], 0.0, 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        x, y = make_batch(tok, [next(stream) for _ in range(batch_size)])
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            losses.append((step, round(loss.item(), 4)))
        if (step + 1) % eval_every == 0 or step == steps - 1:  # not counted in the training time
            t, t_cpu = time.perf_counter(), time.process_time()
            curve.append((step + 1, accuracy(model, tok, curve_set)))
            model.train()
            eval_seconds += time.perf_counter() - t
            eval_cpu += time.process_time() - t_cpu
            print(
                f"{task} step {step + 1}: loss {loss.item():.2f}, exact match {curve[-1][1]:.2f}", flush=True
            )
    seconds = time.perf_counter() - start - eval_seconds
    cpu_seconds = time.process_time() - start_cpu - eval_cpu  # what it costs on an otherwise idle core
    log = {"steps": steps, "batch_size": batch_size, "seconds": round(seconds, 1),
           "cpu_seconds": round(cpu_seconds, 1), "loss": losses, "curve": curve}  # fmt: skip
    return model.eval(), log


def multi_schedule(steps: dict[str, int]) -> list[str]:
    """The task of every step: each task's steps spread evenly over the run (deterministic)."""
    slots = [((i + 0.5) / n, task) for task, n in steps.items() for i in range(n)]
    return [task for _, task in sorted(slots)]


def train_multi(
    steps: dict[str, int] = MULTI_STEPS, seed: int = 0, eval_every: int = 250
) -> tuple[GPT, dict]:
    """One model trained on every task of ``steps``; a log per task, with its curve by that task's steps."""
    tok = CharTokenizer(list(VOCAB))
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, pos_encoding="rope", **MODEL))
    schedule = multi_schedule(steps)
    tc = TrainConfig(
        max_steps=len(schedule), learning_rate=3e-3, min_lr=3e-4, warmup_steps=100, weight_decay=0.1
    )
    opt = model.configure_optimizer(tc.weight_decay, tc.learning_rate, (0.9, 0.99))
    streams = {task: training_examples(task, seed) for task in steps}
    curve_sets = {task: test_sets(task)[CURVE_SET[task]][:100] for task in steps}
    done = dict.fromkeys(steps, 0)
    logs = {
        task: {"steps": n, "batch_size": BATCH[task], "loss": [], "curve": []} for task, n in steps.items()
    }
    eval_cpu, start_cpu = 0.0, time.process_time()
    model.train()
    for step, task in enumerate(schedule):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, tc)
        x, y = make_batch(tok, [next(streams[task]) for _ in range(BATCH[task])])
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        done[task] += 1
        if done[task] % 50 == 1 or done[task] == steps[task]:
            logs[task]["loss"].append((done[task] - 1, round(loss.item(), 4)))
        if done[task] % eval_every == 0 or done[task] == steps[task]:  # not counted in the training time
            t_cpu = time.process_time()
            logs[task]["curve"].append((done[task], accuracy(model, tok, curve_sets[task])))
            model.train()
            eval_cpu += time.process_time() - t_cpu
            print(
                f"multi, {task} step {done[task]}: exact match {logs[task]['curve'][-1][1]:.2f}", flush=True
            )
    log = {"steps": len(schedule), "steps_by_task": steps, "batch_size": {t: BATCH[t] for t in steps},
           "cpu_seconds": round(time.process_time() - start_cpu - eval_cpu, 1), "tasks": logs}  # fmt: skip
    return model.eval(), log


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--task",
        choices=[*POSITIONS, "multi"],
        action="append",
        help="train this task (repeatable); default all",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the model and the training lines")
    parser.add_argument("--steps", type=int, help="override the number of training steps")
    parser.add_argument("--no-save", action="store_true", help="do not write checkpoints or results")
    args = parser.parse_args()
    for task in args.task or TASKS:
        tok = CharTokenizer(list(VOCAB))
        if task == "multi":
            model, log = train_multi(seed=args.seed)
            log["params"], log["pos_encoding"] = model.num_params(), model.config.pos_encoding
            log["accuracy"] = {
                t: {name: accuracy(model, tok, exs) for name, exs in test_sets(t).items()}
                for t in MULTI_STEPS
            }
            print("multi", json.dumps(log["accuracy"]), f"{log['cpu_seconds']} CPU seconds", flush=True)
            if not args.no_save:
                directory = ROOT / "checkpoints" / "ch10-multi"
                model.save(directory)
                tok.save(str(directory / "tokenizer.json"))
                save_result(task, log)
            continue
        model, log = train(task, args.steps or STEPS[task], BATCH[task], seed=args.seed)
        log["params"], log["pos_encoding"] = model.num_params(), model.config.pos_encoding
        sets = test_sets(task.split("-")[0])
        log["accuracy"] = {name: accuracy(model, tok, exs) for name, exs in sets.items()}
        print(task, json.dumps({k: v for k, v in log.items() if k not in ("loss", "curve")}), flush=True)
        if not args.no_save:
            if args.seed != 0:  # another seed: its scores are recorded beside seed 0's, the model is not kept
                log = {k: v for k, v in log.items() if k != "loss"}
                save_result(task, log, seed=args.seed)
                continue
            if task in TASKS:  # the variants are recorded, not kept
                directory = ROOT / "checkpoints" / f"ch10-{task}"
                model.save(directory)
                tok.save(str(directory / "tokenizer.json"))
            save_result(task, log)


def save_result(task: str, log: dict, seed: int = 0) -> None:
    """Add one task's log to the results file (read just before writing: tasks may train in parallel).

    Seed 0 goes under "tasks", other seeds under "seeds" -> task -> seed, with the load average.
    """
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"tasks": {}}
    if seed == 0:
        results["tasks"][task] = log
    else:
        log["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
        results.setdefault("seeds", {}).setdefault(task, {})[str(seed)] = log
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        return
    results.update(
        command="OMP_NUM_THREADS=1 nice python benchmarks/ch10_tasks.py",
        torch=torch.__version__,
        cpu=cpu_name(),
        threads=torch.get_num_threads(),
        model=MODEL,
        positions=POSITIONS,
        addition_weights=ADDITION_WEIGHTS,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

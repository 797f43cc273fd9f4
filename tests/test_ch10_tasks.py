"""The chapter 10 task definitions (benchmarks/ch10_tasks.py): formats, masking, held-out sets."""

import itertools
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ch10_tasks as tasks  # noqa: E402

from gptmini import GPT, CharTokenizer, GPTConfig  # noqa: E402


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (12, "twelve"),
        (40, "forty"),
        (99, "ninety-nine"),
        (100, "one hundred"),
        (4072, "four thousand seventy-two"),
        (93000, "ninety-three thousand"),
    ],  # fmt: skip
)
def test_number_to_words(n, words):
    assert tasks.number_to_words(n) == words


def test_every_example_fits_the_vocabulary_and_the_context():
    tok = CharTokenizer(list(tasks.VOCAB))
    for task in tasks.TASKS:
        for ex in itertools.islice(tasks.training_examples(task), 200):
            assert len(tok.encode(ex.prompt + ex.answer + tasks.END)) <= tasks.MODEL["block_size"]


def test_targets_are_masked_to_the_answer():
    tok = CharTokenizer(list(tasks.VOCAB))
    ex = tasks.Example("12+3=", "15")
    x, y = tasks.encode_example(tok, ex)
    assert tok.decode(x) == "12+3=15"
    assert y[:4] == [-100] * 4 and tok.decode(y[4:]) == "15\n"


def test_masked_loss_counts_only_the_answer():
    tok = CharTokenizer(list(tasks.VOCAB))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    x, y = tasks.make_batch(tok, [tasks.Example("7=", "seven"), tasks.Example("12+30=", "42")])
    logits, loss = model(x, y)
    logp = logits.log_softmax(-1)
    keep = y != -100
    by_hand = -logp.gather(-1, y.clamp(min=0)[..., None])[..., 0][keep].mean()
    assert int(keep.sum()) == len("seven\n") + len("42\n")
    assert torch.allclose(loss, by_hand, atol=1e-6)


def test_held_out_prompts_are_never_trained_on():
    for task in tasks.TASKS:
        held_out = {ex.prompt for exs in tasks.test_sets(task).values() for ex in exs}
        assert not held_out & {ex.prompt for ex in itertools.islice(tasks.training_examples(task), 3000)}
        assert tasks.test_sets(task) == tasks.test_sets(task)  # seeded: the same every time


def test_qa_scores_the_question_but_not_the_facts():
    tok = CharTokenizer(list(tasks.VOCAB))
    ex = tasks.Example("ann has a red cup. what does ann have?", " red cup", scored_from=19)
    x, y = tasks.encode_example(tok, ex)
    assert all(t == -100 for t in y[:18])
    assert tok.decode(y[18:]) == "what does ann have? red cup\n"
    ex = tasks.qa_example(random.Random(0), 2)
    assert ex.prompt[ex.scored_from :].startswith("what does ")


def test_multi_schedule_interleaves_every_task_evenly():
    steps = {"words": 2, "addition": 6, "qa": 4}
    schedule = tasks.multi_schedule(steps)
    assert {t: schedule.count(t) for t in steps} == steps
    for task, n in steps.items():  # each task's k-th step falls in the k-th n-th of the run
        where = [i for i, t in enumerate(schedule) if t == task]
        assert all(k * len(schedule) / n - 1 <= i <= (k + 1) * len(schedule) / n for k, i in enumerate(where))


def test_multi_task_training_logs_each_task():
    model, log = tasks.train_multi({"words": 2, "addition": 2, "qa": 2}, eval_every=2)
    assert log["steps"] == 6 and set(log["tasks"]) == set(tasks.TASKS)
    assert all(log["tasks"][t]["curve"][-1][0] == 2 for t in tasks.TASKS)
    assert model.config.pos_encoding == "rope"

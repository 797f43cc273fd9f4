"""Fixtures shared by test modules."""

import signal

import pytest
import torch


@pytest.fixture(autouse=True)
def ctrl_c_as_in_a_terminal():
    """SIGINT raises KeyboardInterrupt during each test, as in a terminal, even where the tests run with
    SIGINT ignored (a job a script starts in the background, or under nohup, inherits it ignored;
    the Trainer then rightly ignores Ctrl-C too, and the tests of Ctrl-C could not send one)."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if ignored:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` for a subprocess: SIGINT to its default action, whatever this process inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="module")
def one_thread():
    """For tiny models: one thread runs them fastest and does not stall on a busy CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def gpt2_pair():
    """make(vocab_size, n_positions) -> (hf, gpt): a random transformers GPT2LMHeadModel without eos or
    bos, its weights scaled up so that decoding varies from step to step, and the same model as a GPT."""
    return _gpt2_pair


def _gpt2_pair(vocab_size: int, n_positions: int, scale: float = 2.0):
    transformers = pytest.importorskip("transformers")
    from gptmini.model import GPT

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab_size, n_positions=n_positions,
                                  bos_token_id=None, eos_token_id=None, tie_word_embeddings=False)  # fmt: skip
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.mul_(scale)
    return hf, GPT.from_hf(hf).eval()

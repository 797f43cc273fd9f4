"""GPT-2 parity with transformers, offline: random GPT2Configs built locally, no hub."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from gptmini.hf import config_from_hf  # noqa: E402
from gptmini.model import GPT, GPTConfig  # noqa: E402

CONFIGS = [  # odd sizes, one to several heads, short and long blocks, tied and untied heads
    dict(vocab_size=97, n_positions=23, n_embd=30, n_layer=3, n_head=5),
    dict(vocab_size=11, n_positions=7, n_embd=12, n_layer=1, n_head=1, tie_word_embeddings=False),
    dict(vocab_size=257, n_positions=64, n_embd=48, n_layer=2, n_head=4, layer_norm_epsilon=1e-6),
    dict(
        vocab_size=50, n_positions=33, n_embd=21, n_layer=4, n_head=7, activation_function="gelu_pytorch_tanh"
    ),
]


def hf_model(seed: int, attn: str = "eager", **kw) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(bos_token_id=None, eos_token_id=None, attn_implementation=attn, **kw))
    with (
        torch.no_grad()
    ):  # GPT-2 initialises biases and LayerNorms to 0/1: randomise them to test the mapping
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def greedy(next_logits, idx: torch.Tensor, steps: int, block_size: int) -> torch.Tensor:
    for _ in range(steps):
        logits = next_logits(idx[:, -block_size:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_logits_match_transformers(i, attn):
    kw = CONFIGS[i]
    ref = hf_model(i, attn, **kw)
    model = GPT.from_hf(ref)
    assert not model.training
    idx = torch.randint(0, kw["vocab_size"], (3, kw["n_positions"]))
    with torch.no_grad():
        assert torch.allclose(model(idx)[0], ref(idx).logits, atol=1e-5, rtol=0)
        assert torch.allclose(
            model.hidden_states(idx), ref.transformer(idx).last_hidden_state, atol=1e-5, rtol=0
        )


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_greedy_continuations_are_identical(i):
    kw = CONFIGS[i]
    ref = hf_model(i, **kw)
    model = GPT.from_hf(ref)
    prompt = torch.randint(0, kw["vocab_size"], (2, 3))
    steps = kw["n_positions"] + 5  # past the context: both models see the last n_positions tokens
    with torch.no_grad():
        ours = greedy(lambda x: model(x)[0], prompt, steps, kw["n_positions"])
        theirs = greedy(lambda x: ref(x).logits, prompt, steps, kw["n_positions"])
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("i", range(len(CONFIGS)))
def test_to_hf_of_from_hf_reproduces_the_state_exactly(i):
    ref = hf_model(i, **CONFIGS[i])
    back = GPT.from_hf(ref).to_hf()
    a, b = ref.state_dict(), back.state_dict()
    assert list(a) == list(b)
    for name in a:
        assert a[name].shape == b[name].shape and torch.equal(a[name], b[name]), name
    assert back.config.tie_word_embeddings == ref.config.tie_word_embeddings
    assert (back.lm_head.weight is back.transformer.wte.weight) == ref.config.tie_word_embeddings


def test_from_hf_of_to_hf_reproduces_a_gptmini_model():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=3, n_embd=18, tie_weights=False))
    again = GPT.from_hf(model.to_hf())
    assert again.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_gpt2_projections_are_conv1d_in_this_transformers():
    """transformers keeps OpenAI's Conv1D (weight stored (in, out)) for GPT-2: the transpose is needed."""
    ref = hf_model(0, **CONFIGS[0])
    assert type(ref.transformer.h[0].attn.c_attn).__name__ == "Conv1D"
    assert ref.transformer.h[0].attn.c_attn.weight.shape == (30, 90)
    model = GPT.from_hf(ref)
    assert model.transformer.h[0].attn.c_attn.weight.shape == (90, 30)
    assert torch.equal(model.transformer.h[0].attn.c_attn.weight, ref.transformer.h[0].attn.c_attn.weight.t())


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(activation_function="relu"), "activation_function = 'relu' is not supported"),
        (dict(n_inner=20), "n_inner = 20 is not supported by gptmini; it needs None or 4\\*n_embd = 48"),
        (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx = True"),
    ],
)
def test_unsupported_gpt2_variants_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf(GPT2Config(n_embd=12, n_head=2, **kw))


@pytest.mark.parametrize("kw", [dict(pos_encoding="rope"), dict(bias=False)])
def test_to_hf_needs_gpt2_architecture(kw):
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, **kw))
    with pytest.raises(ValueError, match="GPT-2 has learned positions and biases"):
        model.to_hf()


def test_from_pretrained_offline_says_so_and_how_to_load_locally(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match="could not load 'gpt2' from the Hugging Face hub") as info:
        GPT.from_pretrained("gpt2", cache_dir=tmp_path)  # an empty cache: nothing to fall back on
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "GPT.from_pretrained('path/to/gpt2-local')" in str(
        info.value
    )


def test_from_pretrained_loads_a_local_directory(tmp_path):
    ref = hf_model(3, **CONFIGS[0])
    ref.save_pretrained(tmp_path)
    model = GPT.from_pretrained(str(tmp_path))
    idx = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        assert torch.allclose(model(idx)[0], ref(idx).logits, atol=1e-5, rtol=0)


def test_from_pretrained_offline_makes_no_network_request(monkeypatch, tmp_path):
    """The book shows the offline message with HF_HUB_OFFLINE=1 and local_files_only=True: no request."""
    import socket

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)  # name lookup: the first step of any request
    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(OSError, match="could not load 'gpt2' from the Hugging Face hub"):
        GPT.from_pretrained("gpt2", local_files_only=True, cache_dir=tmp_path)
    assert attempts == []

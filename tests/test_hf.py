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


# ----- Llama and Qwen3 ------------------------------------------------------------------------------

from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM  # noqa: E402

from gptmini.generate import generate  # noqa: E402
from gptmini.hf import llama_config_from_hf  # noqa: E402

LLAMAS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}
# n_kv_head 1 (multi-query), 2 (grouped) and n_head (multi-head); tied and untied; Qwen3 with a head
# size other than n_embd/n_head (as every Qwen3 has: 0.6B is 1024 wide with 16 heads of 128)
LLAMA_SHAPES = [
    ("llama", dict(num_key_value_heads=1, tie_word_embeddings=True)),
    ("llama", dict(num_key_value_heads=2, tie_word_embeddings=False, rms_norm_eps=1e-5)),
    ("llama", dict(num_key_value_heads=4, tie_word_embeddings=False, attention_bias=True, mlp_bias=True)),
    ("qwen3", dict(num_key_value_heads=1, tie_word_embeddings=False, head_dim=8)),
    ("qwen3", dict(num_key_value_heads=2, tie_word_embeddings=True, head_dim=12)),
    ("qwen3", dict(num_key_value_heads=4, tie_word_embeddings=True, head_dim=8, rope_parameters={"rope_type": "default", "rope_theta": 1e6})),
]  # fmt: skip


def llama_model(kind: str, seed: int, attn: str = "eager", **kw):
    """A random tiny Llama/Qwen3, its weights scaled and its norm gains randomised (the defaults are 1)."""
    config_cls, model_cls = LLAMAS[kind]
    shape = dict(vocab_size=61, hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None)  # fmt: skip
    torch.manual_seed(seed)
    model = model_cls(config_cls(attn_implementation=attn, **(shape | kw)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            # x3: logits of order 1 and greedy paths that do not repeat one token
            p.add_(0.3 * torch.randn_like(p)) if "norm" in name or name.endswith("bias") else p.mul_(3.0)
    return model.eval()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("i", range(len(LLAMA_SHAPES)))
def test_llama_and_qwen3_logits_match_transformers(i, attn):
    kind, kw = LLAMA_SHAPES[i]
    ref = llama_model(kind, i, attn, **kw)
    model = GPT.from_hf(ref)
    c = model.config
    assert (c.norm, c.mlp, c.pos_encoding, c.qk_norm) == ("rmsnorm", "swiglu", "rope", kind == "qwen3")
    assert c.kv_heads == kw["num_key_value_heads"] and c.tie_weights == kw["tie_word_embeddings"]
    assert c.head_dim == kw.get("head_dim", 8)
    idx = torch.randint(0, 61, (3, 40))
    with torch.no_grad():
        ours, theirs = model(idx)[0], ref(idx).logits
    # float32, two layers: the two implementations round differently (RMSNorm written out vs
    # F.rms_norm, q/k/v fused vs separate matmuls, GQA expanded vs broadcast), a few ulps per step;
    # measured differences are below 1e-6 on logits of magnitude about 2, so 1e-5 has a 10x margin
    # and still catches any real mismatch (a wrong permutation or norm is off by 1e-1 or more).
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_llama_and_qwen3_greedy_generate_gives_transformers_tokens(kind, n_kv_head, tie):
    ref = llama_model(
        kind, 1, num_key_value_heads=n_kv_head, tie_word_embeddings=tie, head_dim=8, vocab_size=97
    )
    model = GPT.from_hf(ref)
    idx = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    theirs = ref.generate(idx, attention_mask=torch.ones_like(idx), do_sample=False, max_new_tokens=24,
                          pad_token_id=0)  # fmt: skip
    if not tie:  # a tied random model mostly repeats its input (its head reads the embedding back)
        assert min(len(set(row[6:].tolist())) for row in theirs) > 5  # seeded: paths that vary
    for use_cache in (True, False):
        assert torch.equal(generate(model, idx, 24, do_sample=False, use_cache=use_cache), theirs)


@pytest.mark.parametrize("i", range(len(LLAMA_SHAPES)))
def test_llama_and_qwen3_round_trip_exactly(i):
    kind, kw = LLAMA_SHAPES[i]
    ref = llama_model(kind, i, **kw)
    model = GPT.from_hf(ref)
    back = model.to_hf()
    assert type(back) is type(ref)
    a, b = ref.state_dict(), back.state_dict()
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert GPT.from_hf(back).config == model.config
    assert (back.lm_head.weight is back.model.embed_tokens.weight) == kw["tie_word_embeddings"]


@pytest.mark.parametrize("qk_norm, cls", [(False, LlamaForCausalLM), (True, Qwen3ForCausalLM)])
def test_to_hf_of_a_gptmini_llama_shape(qk_norm, cls):
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=4, n_embd=32, bias=False, pos_encoding="rope",
                    norm="rmsnorm", mlp="swiglu", n_kv_head=2, qk_norm=qk_norm, tie_weights=False)  # fmt: skip
    model = GPT(cfg).eval()
    hf = model.to_hf()
    assert type(hf) is cls and hf.config.intermediate_size == cfg.ffn_dim == 128
    idx = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        assert torch.allclose(model(idx)[0], hf(idx).logits, atol=1e-5, rtol=0)
    assert GPT.from_hf(hf).config == cfg


@pytest.mark.parametrize(
    "kind, kw, message",
    [
        (
            "llama",
            dict(rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}),
            "RoPE scaling .* is not implemented",
        ),
        ("llama", dict(hidden_act="gelu"), r"LlamaConfig.hidden_act = 'gelu' is not supported"),
        ("llama", dict(attention_bias=True), "gptmini's bias covers every linear layer"),
        ("llama", dict(pretraining_tp=2), "pretraining_tp = 2"),
        ("qwen3", dict(attention_bias=True), "Qwen3Config.attention_bias = True"),
        ("qwen3", dict(use_sliding_window=True, sliding_window=8), "use_sliding_window = True"),
    ],
)
def test_unsupported_llama_and_qwen3_variants_are_refused(kind, kw, message):
    config = LLAMAS[kind][0](hidden_size=16, num_attention_heads=2, **kw)
    with pytest.raises(ValueError, match=message):
        llama_config_from_hf(config)


def test_from_hf_names_the_models_it_knows():
    from transformers import MistralConfig, MistralForCausalLM

    hf = MistralForCausalLM(MistralConfig(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    with pytest.raises(ValueError, match="from_hf knows GPT-2, Llama and Qwen3 .* model_type 'mistral'"):
        GPT.from_hf(hf)


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", rope_layout="interleaved"),
            "Llama/Qwen3-shaped",
        ),
        (dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", logit_softcap=30.0), "Llama/Qwen3-shaped"),
        (dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=True, qk_norm=True), "bias=False"),
        (dict(mlp="relu2"), "GPT-2 needs mlp = 'gelu'"),
        (dict(n_kv_head=1), "GPT-2 needs kv_heads = 2"),
        (dict(norm="rmsnorm"), "GPT-2 needs norm = 'layernorm'"),
    ],
)
def test_to_hf_refuses_shapes_without_a_transformers_class(kw, message):
    kw = dict(bias=True) | kw
    model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8, **kw))
    with pytest.raises(ValueError, match=message):
        model.to_hf()

"""The GPT model: configuration, counts, initialisation, forward, properties, optimizer, save/load."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptmini.model import GPT, GPTConfig

POS_ENCODINGS = ["learned", "sinusoidal", "rope", "none"]
IMPLS = ["sdpa", "explicit"]
SMALL = dict(vocab_size=29, block_size=12, n_layer=2, n_head=2, n_embd=16)


def small(**kw) -> GPT:
    return GPT(GPTConfig(**(SMALL | kw))).eval()


# ----- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(n_embd=10, n_head=3), r"n_embd \(10\) must be divisible by n_head \(3\)"),
        (dict(n_layer=0), "n_layer must be a positive integer, got 0"),
        (dict(vocab_size=-5), "vocab_size must be a positive integer, got -5"),
        (dict(block_size=8.0), "block_size must be a positive integer, got 8.0"),
        (dict(n_head=True), "n_head must be a positive integer, got True"),
        (dict(pos_encoding="alibi"), r"unknown pos_encoding 'alibi'; allowed: \('learned'"),
        (
            dict(pos_encoding="rope", n_embd=15, n_head=5),
            "'rope' needs an even head size, got n_embd/n_head = 3",
        ),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(attn_impl="flash"), "unknown attn_impl 'flash'"),
        (dict(rope_base=0.0), "rope_base must be positive"),
        (dict(layer_norm_eps=-1e-5), "layer_norm_eps must be positive"),
    ],
)
def test_config_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**(SMALL | kw))


def test_config_dict_round_trip_through_json():
    cfg = GPTConfig(**SMALL, pos_encoding="rope", tie_weights=False, dropout=0.1)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert GPTConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match=r"unknown GPTConfig field\(s\) \['n_heads'\]"):
        GPTConfig.from_dict(d | {"n_heads": 4})


@settings(max_examples=30, deadline=None)
@given(
    n_head=st.integers(1, 4),
    head_dim=st.sampled_from([2, 4, 6]),
    n_layer=st.integers(1, 3),
    vocab=st.integers(1, 70),
    block=st.integers(1, 40),
    bias=st.booleans(),
    tie=st.booleans(),
    pe=st.sampled_from(POS_ENCODINGS),
)
def test_param_count_formula_equals_real_count(n_head, head_dim, n_layer, vocab, block, bias, tie, pe):
    cfg = GPTConfig(
        vocab, block, n_layer, n_head, n_head * head_dim, bias=bias, pos_encoding=pe, tie_weights=tie
    )
    model = GPT(cfg)
    assert (
        model.num_params()
        == cfg.param_count_formula()
        == len(torch.nn.utils.parameters_to_vector(model.parameters()))
    )
    assert model.num_params(non_embedding=True) == cfg.param_count_formula(non_embedding=True)


def test_gpt2_small_has_124m_parameters():
    cfg = GPTConfig()  # the defaults are GPT-2 small
    assert cfg.param_count_formula() == 124_439_808  # the published figure for GPT-2 124M
    assert cfg.param_count_formula(non_embedding=True) == 124_439_808 - 1024 * 768


def test_flops_per_token_formula():
    model = small()
    n, c = model.num_params(non_embedding=True), model.config
    assert model.flops_per_token() == 6 * n + 12 * c.n_layer * c.block_size * c.n_embd
    assert model.flops_per_token(seq_len=5) == 6 * n + 12 * c.n_layer * 5 * c.n_embd
    assert c.flops_per_token(5) == model.flops_per_token(5)  # the same formula, from the shape alone


def test_flops_per_token_of_a_shape_too_large_to_build():
    gpt2 = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)
    n = 124_439_808 - 1024 * 768  # GPT-2 124M without its position table
    assert gpt2.flops_per_token() == 6 * n + 12 * 12 * 1024 * 768


def test_gpt2_initialisation():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=8, n_head=4, n_embd=128))
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(0.02 / math.sqrt(2 * 8), rel=0.05), name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert p.std().item() == pytest.approx(0.02, rel=0.05), name
        elif name.endswith("bias"):
            assert torch.all(p == 0), name
        elif ".ln_" in name or "ln_f" in name:
            assert torch.all(p == 1), name
    assert model.lm_head.weight is model.transformer.wte.weight


# ----- forward -------------------------------------------------------------------------------------


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = small()
    idx = torch.randint(0, 29, (3, 12))
    logits, loss = model(idx)
    assert logits.shape == (3, 12, 29) and loss is None
    targets = torch.randint(0, 29, (3, 12))
    targets[0, :5] = -100
    _, loss = model(idx, targets)
    keep = targets != -100
    assert loss.item() == pytest.approx(F.cross_entropy(logits[keep], targets[keep]).item(), rel=1e-6)
    assert loss.item() == pytest.approx(math.log(29), rel=0.05)  # small init: nearly uniform predictions


def test_hidden_states_feed_the_lm_head():
    model = small(tie_weights=False)
    idx = torch.randint(0, 29, (2, 7))
    h = model.hidden_states(idx)
    assert h.shape == (2, 7, 16)
    assert torch.allclose(model.lm_head(h), model(idx)[0], atol=1e-6)


def test_attention_maps():
    model = small(n_layer=3)
    maps = model.attention_maps(torch.randint(0, 29, (2, 9)))
    assert maps.shape == (3, 2, 2, 9, 9) and not maps.requires_grad
    assert torch.allclose(maps.sum(-1), torch.ones(3, 2, 2, 9), atol=1e-6)
    assert (maps.triu(diagonal=1) == 0).all()


@pytest.mark.parametrize(
    "idx, message",
    [
        (torch.zeros(2, 3), r"idx must be a torch.int64 \(long\) tensor of token ids, got torch.float32"),
        (torch.zeros(2, 3, dtype=torch.int32), "got torch.int32"),
        ([[1, 2]], "got list"),
        (
            torch.zeros(3, dtype=torch.long),
            r"idx must have shape \(batch, time\), got 1 dimension\(s\): \(3,\)",
        ),
        (torch.tensor([[1, 29]]), r"token id 29 is outside the vocabulary 0..28"),
        (torch.tensor([[-1, 3]]), r"token id -1 is outside the vocabulary 0..28"),
        (torch.zeros(1, 13, dtype=torch.long), r"sequence length 13 exceeds block_size 12"),
    ],
)
def test_bad_input_raises_value_error(idx, message):
    with pytest.raises(ValueError, match=message):
        small()(idx)


def test_targets_must_match_idx():
    with pytest.raises(ValueError, match=r"targets shape \(2, 3\) must equal idx shape \(2, 4\)"):
        small()(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))


def test_dropout_only_in_training_mode():
    model = small(dropout=0.3)
    idx = torch.randint(0, 29, (2, 8))
    assert torch.equal(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


# ----- properties (hypothesis) ----------------------------------------------------------------------


def _tokens(seed: int, shape) -> torch.Tensor:
    return torch.randint(0, 29, shape, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=8, deadline=None)
@given(t=st.integers(0, 10), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pe", POS_ENCODINGS)
def test_causality(pe, impl, t, seed):
    """Changing tokens after position t never changes the logits at positions <= t."""
    torch.manual_seed(1)
    model = small(pos_encoding=pe, attn_impl=impl)
    idx = _tokens(seed, (2, 12))
    changed = idx.clone()
    changed[:, t + 1 :] = _tokens(seed + 1, (2, 12 - t - 1))
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(
    batch=st.integers(2, 5),
    t=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    pe=st.sampled_from(POS_ENCODINGS),
)
def test_batch_rows_are_independent(batch, t, seed, pe):
    torch.manual_seed(2)
    model = small(pos_encoding=pe)
    idx = _tokens(seed, (batch, t))
    with torch.no_grad():
        together = model(idx)[0]
        alone = torch.cat([model(idx[i : i + 1])[0] for i in range(batch)])
    assert torch.allclose(together, alone, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(
    t=st.integers(1, 12), seed=st.integers(0, 2**16), pe=st.sampled_from(POS_ENCODINGS), bias=st.booleans()
)
def test_explicit_and_fast_paths_agree(t, seed, pe, bias):
    torch.manual_seed(seed)
    fast = small(pos_encoding=pe, bias=bias, n_layer=3)
    explicit = small(pos_encoding=pe, bias=bias, n_layer=3, attn_impl="explicit")
    explicit.load_state_dict(fast.state_dict())
    idx = _tokens(seed, (2, t))
    with torch.no_grad():
        assert torch.allclose(fast(idx)[0], explicit(idx)[0], atol=1e-5)


# ----- training helpers ------------------------------------------------------------------------------


def test_configure_optimizer_decays_matrices_only():
    model = small(tie_weights=False)
    opt = model.configure_optimizer(
        weight_decay=0.1, learning_rate=3e-4, betas=(0.9, 0.95), device_type="cpu"
    )
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.num_params()
    assert opt.defaults["lr"] == 3e-4 and opt.defaults["betas"] == (0.9, 0.95) and not opt.defaults["fused"]


def test_a_few_steps_overfit_one_batch():
    torch.manual_seed(0)
    model = small().train()
    idx = torch.randint(0, 29, (4, 12))
    opt = model.configure_optimizer(0.0, 1e-2, (0.9, 0.95), "cpu")
    losses = []
    for _ in range(30):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_generate_forwards_to_gptmini_generate(monkeypatch):
    calls = []
    fake = types.ModuleType("gptmini.generate")
    fake.generate = lambda model, *args, **kwargs: calls.append((model, args, kwargs)) or "out"
    monkeypatch.setitem(sys.modules, "gptmini.generate", fake)
    model = small()
    assert model.generate("idx", max_new_tokens=3) == "out"
    assert calls == [(model, ("idx",), {"max_new_tokens": 3})]


# ----- save / load ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pe, tie", [("learned", True), ("rope", False), ("sinusoidal", True)])
def test_save_load_round_trip(tmp_path, pe, tie):
    model = small(pos_encoding=pe, tie_weights=tie)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == model.config.to_dict()
    loaded = GPT.load(tmp_path / "m")
    assert loaded.config == model.config
    assert (loaded.lm_head.weight is loaded.transformer.wte.weight) == tie
    idx = torch.randint(0, 29, (2, 12))
    assert torch.equal(loaded.eval()(idx)[0], model(idx)[0])


def test_load_keeps_the_saved_precision(tmp_path):
    small().to(torch.bfloat16).save(tmp_path)
    loaded = GPT.load(tmp_path, map_location="cpu")
    assert loaded.transformer.wte.weight.dtype == torch.bfloat16


def test_saved_file_is_safetensors_not_pickle(tmp_path):
    from safetensors import safe_open

    small().save(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert "transformer.wte.weight" in f.keys() and "lm_head.weight" not in f.keys()  # tied: stored once


def test_load_reports_a_shape_mismatch(tmp_path):
    from safetensors.torch import load_file, save_file

    small().save(tmp_path)
    # weights without the config in their metadata (older files, other tools): the shapes are checked
    save_file(load_file(tmp_path / "model.safetensors"), tmp_path / "model.safetensors")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"vocab_size": 30}))
    with pytest.raises(
        ValueError, match=r"tensor 'transformer.wte.weight' has shape \(29, 16\), the config needs \(30, 16\)"
    ):
        GPT.load(tmp_path)


def test_load_reports_missing_and_unexpected_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    small().save(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    save_file(
        {k: v for k, v in state.items() if k != "transformer.ln_f.bias"}, tmp_path / "model.safetensors"
    )
    with pytest.raises(ValueError, match=r"missing tensor 'transformer.ln_f.bias'"):
        GPT.load(tmp_path)
    save_file(state | {"extra.weight": torch.zeros(2)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected tensor 'extra.weight'"):
        GPT.load(tmp_path)


def test_load_of_a_directory_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory written by GPT.save"):
        GPT.load(tmp_path)


@pytest.mark.parametrize("pe", POS_ENCODINGS)
def test_bf16_autocast_on_cpu_with_and_without_cache(pe):
    torch.manual_seed(0)
    model = small(pos_encoding=pe)
    idx = torch.randint(0, 29, (2, 12))
    ref = model(idx)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(idx)[0]
        cache = model.new_kv_cache(2)  # float32 cache, bf16 keys/values: stored and read back cast
        steps = [model(idx[:, :5], kv_cache=cache)[0]] + [
            model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(5, 12)
        ]
    assert logits.dtype == torch.bfloat16
    assert torch.allclose(logits.float(), ref, atol=0.02) and torch.allclose(
        torch.cat(steps, 1).float(), ref, atol=0.02
    )


# ----- GPU -----------------------------------------------------------------------------------------

needs_cuda = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("pe", POS_ENCODINGS)
@needs_cuda[0]
@needs_cuda[1]
def test_cuda_bf16_autocast_matches_float32(pe):
    torch.manual_seed(0)
    model = small(pos_encoding=pe).cuda()
    idx = torch.randint(0, 29, (4, 12), device="cuda")
    ref, ref_loss = model(idx, idx)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
        cache = model.new_kv_cache(4)
        cached = torch.cat(
            [model(idx[:, :4], kv_cache=cache)[0]]
            + [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(4, 12)],
            1,
        )
    loss.backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert abs(loss.item() - ref_loss.item()) < 0.02
    assert torch.allclose(logits.float(), ref, atol=0.05) and torch.allclose(cached.float(), ref, atol=0.05)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@needs_cuda[0]
@needs_cuda[1]
def test_cuda_compile_matches_eager():
    torch.manual_seed(0)
    model = small(pos_encoding="rope").cuda()
    idx = torch.randint(0, 29, (4, 12), device="cuda")
    compiled = torch.compile(model)
    eager_logits, eager_loss = model(idx, idx)
    logits, loss = compiled(idx, idx)
    loss.backward()
    assert torch.allclose(logits, eager_logits, atol=1e-4) and abs(loss.item() - eager_loss.item()) < 1e-4
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), "cuda")
    assert opt.defaults["fused"]

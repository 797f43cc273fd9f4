"""Today's model variants (chapter 12): checks, exact counts, the GQA cache, RoPE layouts, soft-capping, Muon."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gptmini.decode_step import OneTokenStep
from gptmini.generate import generate
from gptmini.model import GPT, GPTConfig
from gptmini.positional import apply_rope, apply_rope_interleaved, interleaved_to_half, rope_angles
from gptmini.train import TrainConfig, Trainer, make_optimizer

SMALL = dict(vocab_size=29, block_size=12, n_layer=2, n_head=4, n_embd=32)
LLAMA = dict(pos_encoding="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_weights=False)
VARIANTS = [  # one of each new field, and their combinations as in real models
    dict(norm="rmsnorm"),
    dict(mlp="swiglu"),
    dict(mlp="relu2", bias=False),
    dict(n_kv_head=1),
    dict(n_kv_head=2, pos_encoding="rope"),
    dict(qk_norm=True, pos_encoding="rope"),
    dict(pos_encoding="rope", rope_layout="interleaved"),
    dict(logit_softcap=3.0),
    dict(d_head=6, pos_encoding="rope"),
    LLAMA | dict(n_kv_head=2),  # Llama
    LLAMA | dict(n_kv_head=1, qk_norm=True, d_head=12),  # Qwen3
    dict(
        pos_encoding="rope", norm="rmsnorm", mlp="relu2", qk_norm=True, logit_softcap=15.0, bias=False
    ),  # nanochat
]


def make(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**(SMALL | kw))).eval()


# ----- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(norm="batchnorm"), r"unknown norm 'batchnorm'; allowed: \('layernorm', 'rmsnorm'\)"),
        (dict(mlp="geglu"), r"unknown mlp 'geglu'; allowed: \('gelu', 'swiglu', 'relu2'\)"),
        (dict(pos_encoding="rope", rope_layout="neox"), "unknown rope_layout 'neox'"),
        (dict(n_kv_head=3), r"n_kv_head \(3\) must divide n_head \(4\)"),
        (dict(n_kv_head=0), "n_kv_head must be a positive integer or None, got 0"),
        (dict(d_ff=0), "d_ff must be a positive integer or None, got 0"),
        (dict(d_ff=-64), "d_ff must be a positive integer or None, got -64"),
        (dict(d_ff=100.0), r"GPTConfig.d_ff must be an integer or None, got 100.0 \(float\)"),
        (dict(d_head=0), "d_head must be a positive integer or None, got 0"),
        (dict(d_head=3, pos_encoding="rope"), "'rope' needs an even head size, got d_head = 3"),
        (
            dict(rope_layout="interleaved"),
            "rope_layout 'interleaved' needs pos_encoding 'rope', got 'learned'",
        ),
        (dict(logit_softcap=0.0), "logit_softcap must be a positive number or None, got 0.0"),
        (
            dict(logit_softcap=True),
            r"GPTConfig.logit_softcap must be a finite number or None, got True \(bool\)",
        ),
    ],
)
def test_bad_combinations_are_value_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**(SMALL | kw))


def test_defaults_are_gpt2():
    c = GPTConfig()
    assert (c.norm, c.mlp, c.d_ff, c.n_kv_head, c.d_head, c.qk_norm, c.rope_layout, c.logit_softcap) == (
        "layernorm", "gelu", None, None, None, False, "half", None,
    )  # fmt: skip
    assert (c.ffn_dim, c.kv_heads, c.head_dim) == (3072, 12, 64)


@pytest.mark.parametrize(
    "n_embd, mlp, d_ff, expected",
    [
        (768, "gelu", None, 3072),
        (768, "relu2", None, 3072),
        (768, "swiglu", None, 2048),  # 8·768/3 = 2048 exactly
        (128, "swiglu", None, 384),  # int(341.3) = 341, up to 384
        (4096, "swiglu", None, 10944),  # Llama 7B: 11008 with Meta's multiple_of=256, 10944 with 64
        (4096, "swiglu", 11008, 11008),  # an explicit width is honoured
        (32, "gelu", 100, 100),
    ],
)
def test_ffn_dim(n_embd, mlp, d_ff, expected):
    cfg = GPTConfig(n_embd=n_embd, n_head=4, mlp=mlp, d_ff=d_ff)
    assert cfg.ffn_dim == expected


def test_config_with_every_new_field_round_trips_through_save(tmp_path):
    model = make(**VARIANTS[-2])
    model.save(tmp_path)
    again = GPT.load(tmp_path)
    assert again.config == model.config
    idx = torch.randint(0, 29, (2, 12))
    assert torch.equal(again(idx)[0], model(idx)[0])


# ----- exact counts --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    n_head=st.sampled_from([1, 2, 4]),
    kv_div=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([2, 4]),
    d_head=st.sampled_from([None, 6]),
    norm=st.sampled_from(["layernorm", "rmsnorm"]),
    mlp=st.sampled_from(["gelu", "swiglu", "relu2"]),
    d_ff=st.sampled_from([None, 1, 20]),
    qk_norm=st.booleans(),
    bias=st.booleans(),
    tie=st.booleans(),
    pe=st.sampled_from(["learned", "rope", "none"]),
)
def test_param_count_formula_equals_real_count(
    n_head, kv_div, head_dim, d_head, norm, mlp, d_ff, qk_norm, bias, tie, pe
):
    n_kv_head = n_head // kv_div if n_head % kv_div == 0 else None
    cfg = GPTConfig(vocab_size=13, block_size=7, n_layer=2, n_head=n_head, n_embd=n_head * head_dim, bias=bias,
                    pos_encoding=pe, tie_weights=tie, norm=norm, mlp=mlp, d_ff=d_ff, n_kv_head=n_kv_head,
                    d_head=d_head, qk_norm=qk_norm)  # fmt: skip
    model = GPT(cfg)
    assert model.num_params() == cfg.param_count_formula() == sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=True) == cfg.param_count_formula(non_embedding=True)
    d_attn = n_head * cfg.head_dim  # the width of the queries: attention FLOPs do not shrink with GQA
    assert cfg.flops_per_token(5) == 6 * model.num_params(non_embedding=True) + 12 * 2 * 5 * d_attn


# published shapes (config.json of each model on the hub); the counts are the package's formula,
# checked against a model built on the meta device (shapes only, no memory)
REAL = {
    "GPT-2 small": (GPTConfig(), 124_439_808),
    "Llama 3.2 1B": (
        GPTConfig(vocab_size=128256, block_size=131072, n_layer=16, n_head=32, n_kv_head=8, n_embd=2048,
                  d_ff=8192, rope_base=500000.0, **(LLAMA | dict(tie_weights=True))),
        1_235_814_400,  # the 1.24B of the model card
    ),
    "Qwen3 0.6B": (
        GPTConfig(vocab_size=151936, block_size=40960, n_layer=28, n_head=16, n_kv_head=8, n_embd=1024,
                  d_head=128, d_ff=3072, qk_norm=True, rope_base=1e6, layer_norm_eps=1e-6,
                  **(LLAMA | dict(tie_weights=True))),
        596_049_920,  # the 0.6B of the model card (0.44B without the tied embedding)
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", REAL)
def test_real_configurations(name):
    cfg, expected = REAL[name]
    assert cfg.param_count_formula() == expected
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.num_params() == expected


def test_qwen3_non_embedding_count_is_the_model_cards():
    cfg, total = REAL["Qwen3 0.6B"]
    without_embedding = total - cfg.vocab_size * cfg.n_embd  # tied: the table is also the head
    assert round(without_embedding / 1e9, 2) == 0.44


# ----- grouped-query attention ---------------------------------------------------------------------


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
def test_kv_cache_stores_only_the_kv_heads(n_kv_head):
    model = make(n_kv_head=n_kv_head, pos_encoding="rope")
    cache = model.new_kv_cache(3, max_length=12)
    assert all(k.shape == (3, n_kv_head, 12, 8) for k in cache.k + cache.v)
    full = make(pos_encoding="rope").new_kv_cache(3, max_length=12)
    size = sum(t.numel() * t.element_size() for t in cache.k + cache.v)
    full_size = sum(t.numel() * t.element_size() for t in full.k + full.v)
    assert full_size == size * 4 // n_kv_head  # the memory shrinks by n_head / n_kv_head
    idx = torch.randint(0, 29, (3, 12))
    with torch.no_grad():
        assert torch.allclose(model(idx, kv_cache=cache)[0], model(idx)[0], atol=1e-6, rtol=0)
    assert cache.length == 12


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_gqa_is_mha_with_shared_key_value_heads(n_kv_head):
    """A GQA model equals a multi-head model whose k/v heads are copies: query head h reads kv head h // group."""
    gqa = make(n_kv_head=n_kv_head, pos_encoding="rope")
    mha = make(pos_encoding="rope")
    state = gqa.state_dict()
    d, hd, group = 32, 8, 4 // n_kv_head
    for name in [n for n in state if ".attn.c_attn." in n]:  # weights and biases
        q, k, v = state[name].split((d, n_kv_head * hd, n_kv_head * hd))
        expand = lambda w: w.unflatten(0, (n_kv_head, hd)).repeat_interleave(group, dim=0).flatten(0, 1)  # noqa: E731
        state[name] = torch.cat((q, expand(k), expand(v)))
    mha.load_state_dict(state)
    idx = torch.randint(0, 29, (2, 12))
    with torch.no_grad():
        assert torch.allclose(gqa(idx)[0], mha(idx)[0], atol=1e-6, rtol=0)


# ----- RoPE layouts --------------------------------------------------------------------------------


def test_interleaved_rope_is_half_rope_on_permuted_dimensions():
    x = torch.randn(2, 3, 5, 8)
    angle = rope_angles(5, 8)
    cos, sin = angle.cos().float(), angle.sin().float()
    perm = interleaved_to_half(8)
    assert perm.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(apply_rope_interleaved(x, cos, sin)[..., perm], apply_rope(x[..., perm], cos, sin))
    # the interleaved layout rotates adjacent pairs: (x0, x1) by angle 0, (x2, x3) by angle 1, ...
    y = apply_rope_interleaved(x, cos, sin)
    assert torch.allclose(y[..., 0], x[..., 0] * cos[:, 0] - x[..., 1] * sin[:, 0])
    assert torch.allclose(y[..., 3], x[..., 2] * sin[:, 1] + x[..., 3] * cos[:, 1])


@pytest.mark.parametrize("kw", [dict(), dict(n_kv_head=2, qk_norm=True, bias=True)])
def test_interleaved_model_equals_half_model_with_permuted_qk_weights(kw):
    """Meta's interleaved checkpoints load into the half layout after permuting each head's q and k rows."""
    meta = make(1, pos_encoding="rope", rope_layout="interleaved", **kw)
    half = make(2, pos_encoding="rope", rope_layout="half", **kw)
    with torch.no_grad():
        for p in meta.parameters():
            p.mul_(3.0)  # attention that depends visibly on the rotation
    unpermuted = make(2, pos_encoding="rope", rope_layout="half", **kw)
    unpermuted.load_state_dict(meta.state_dict())
    cfg = meta.config
    hd, n_q, n_kv = cfg.head_dim, cfg.n_head, cfg.kv_heads
    perm = interleaved_to_half(hd)
    state = meta.state_dict()
    for name, tensor in list(state.items()):
        if name.endswith(("attn.c_attn.weight", "attn.c_attn.bias")):
            q, k, v = tensor.split((n_q * hd, n_kv * hd, n_kv * hd))
            q, k = (
                q.unflatten(0, (n_q, hd))[:, perm].flatten(0, 1),
                k.unflatten(0, (n_kv, hd))[:, perm].flatten(0, 1),
            )
            state[name] = torch.cat((q, k, v))
        elif name.endswith(("q_norm.weight", "k_norm.weight")):
            state[name] = tensor[perm]
    half.load_state_dict(state)
    idx = torch.randint(0, 29, (2, 12))
    with torch.no_grad():
        # the same sums in another order: float32 rounding only
        assert torch.allclose(meta(idx)[0], half(idx)[0], atol=1e-5, rtol=0)
        assert not torch.allclose(meta(idx)[0], unpermuted(idx)[0], atol=1e-2)  # the permutation matters


# ----- the other pieces ----------------------------------------------------------------------------


def test_logit_softcap_squashes_the_logits():
    capped = make(3, logit_softcap=0.5)
    plain = make(3)
    idx = torch.randint(0, 29, (2, 12))
    with torch.no_grad():
        for p in plain.parameters():
            p.mul_(4.0)
        capped.load_state_dict(plain.state_dict())
        raw, logits = plain(idx)[0], capped(idx, idx)[0]
    assert raw.abs().max() > 0.5 >= logits.abs().max()  # tanh may round to 1 in float32
    assert torch.allclose(logits, 0.5 * torch.tanh(raw / 0.5), atol=1e-6, rtol=0)
    assert torch.allclose(capped(idx, idx)[1], F.cross_entropy(logits.flatten(0, 1), idx.flatten()))


def test_relu_squared_and_swiglu_mlps_compute_their_formulas():
    x = torch.randn(2, 3, 32)
    relu2 = make(mlp="relu2").transformer.h[0].mlp
    w1, b1, w2, b2 = relu2.c_fc.weight, relu2.c_fc.bias, relu2.c_proj.weight, relu2.c_proj.bias
    assert torch.allclose(relu2(x), torch.clamp(x @ w1.T + b1, min=0) ** 2 @ w2.T + b2, atol=1e-6)
    swiglu = make(mlp="swiglu", bias=False).transformer.h[0].mlp
    gate, up, down = swiglu.c_gate.weight, swiglu.c_fc.weight, swiglu.c_proj.weight
    expected = ((x @ gate.T) * torch.sigmoid(x @ gate.T) * (x @ up.T)) @ down.T
    assert torch.allclose(swiglu(x), expected, atol=1e-6)
    assert swiglu.c_fc.weight.shape == (GPTConfig(**SMALL, mlp="swiglu").ffn_dim, 32) == (128, 32)


def test_rmsnorm_and_qk_norm():
    model = make(norm="rmsnorm", qk_norm=True, pos_encoding="rope")
    block = model.transformer.h[0]
    assert isinstance(block.ln_1, torch.nn.RMSNorm)
    assert [name for name, _ in block.ln_1.named_parameters()] == ["weight"]  # a gain, no bias
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        block.ln_1.weight.normal_()
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * block.ln_1.weight
    assert torch.allclose(block.ln_1(x), expected, atol=1e-6)
    assert (
        block.attn.q_norm.weight.shape == block.attn.k_norm.weight.shape == (8,)
    )  # one gain per head dimension


@pytest.mark.parametrize("i", range(len(VARIANTS)))
def test_variants_are_causal_and_cached_generation_agrees(i):
    model = make(i, **VARIANTS[i])
    idx = torch.randint(0, 29, (2, 12), generator=torch.Generator().manual_seed(i))
    changed = idx.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 29
    with torch.no_grad():
        a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[:, :7], b[:, :7]) and not torch.equal(a[:, 7:], b[:, 7:])
    assert OneTokenStep.unsupported(model) is None  # generate's flat cached step runs every variant
    prompt = idx[:, :3]
    n = 8 if model.config.pos_encoding == "learned" else 14  # rotary and none run past block_size
    assert torch.equal(
        generate(model, prompt, n, do_sample=False),
        generate(model, prompt, n, do_sample=False, use_cache=False),
    )


def test_variants_train():
    model = make(**VARIANTS[-3]).train()
    opt = model.configure_optimizer(0.0, 1e-2)
    idx = torch.randint(0, 29, (4, 12), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(20):
        loss = model(idx[:, :-1], idx[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ----- Muon ----------------------------------------------------------------------------------------


def muon_config(**kw) -> TrainConfig:
    base = dict(max_steps=40, batch_size=8, learning_rate=3e-3, min_lr=3e-4, warmup_steps=0, eval_interval=0,
                eval_iters=2, progress=False, device="cpu", optimizer="muon")  # fmt: skip
    return TrainConfig(**(base | kw))


def periodic_tokens() -> np.ndarray:
    return np.tile(np.arange(29), 60).astype(np.uint16)  # a sequence a model can learn in a few steps


def test_unknown_optimizer_is_a_value_error():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; allowed: adamw, muon"):
        TrainConfig(optimizer="sgd")


@pytest.mark.parametrize("kw", [dict(), LLAMA | dict(n_kv_head=2, qk_norm=True)])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(kw):
    model = make(**kw)
    opt = make_optimizer(model, muon_config())
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    names = {id(p): name for name, p in model.named_parameters()}
    in_muon = sorted(names[id(p)] for g in muon.param_groups for p in g["params"])
    matrices = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    matrices += ("mlp.c_gate.weight",) if kw else ()
    assert in_muon == sorted(f"transformer.h.{i}.{m}" for i in range(2) for m in matrices)
    decayed, plain = ([names[id(p)] for p in g["params"]] for g in adamw.param_groups)
    assert sorted(decayed) == sorted(["transformer.wte.weight"] + ([] if model.config.tie_weights else ["lm_head.weight"])
                                     + (["transformer.wpe.weight"] if not kw else []))  # fmt: skip
    assert all(
        name.endswith(("bias", "ln_1.weight", "ln_2.weight", "ln_f.weight", "norm.weight")) for name in plain
    )
    assert len(in_muon) + len(decayed) + len(plain) == len(names)  # every parameter, once
    assert muon.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"


def test_muon_ns_steps_reach_torch_muon_and_change_the_update():
    assert make_optimizer(make(), muon_config()).optimizers[0].param_groups[0]["ns_steps"] == 5
    updates = {}
    for steps in (1, 3):
        model = make()
        opt = make_optimizer(model, muon_config(muon_ns_steps=steps))
        assert opt.optimizers[0].param_groups[0]["ns_steps"] == steps
        w = model.transformer.h[0].mlp.c_fc.weight
        before = w.detach().clone()
        idx = torch.randint(0, 29, (4, 12), generator=torch.Generator().manual_seed(0))
        model(idx, idx)[1].backward()
        opt.step()
        updates[steps] = torch.linalg.svdvals(w.detach() - before)
    # more iterations bring the singular values of the update closer together (toward orthogonal)
    spread = {k: (v.max() / v.min()).item() for k, v in updates.items()}
    assert spread[3] < spread[1], spread


@pytest.mark.parametrize("bad", [0, -1, 2.5, "5"])
def test_muon_ns_steps_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="muon_ns_steps"):
        TrainConfig(optimizer="muon", muon_ns_steps=bad)


def test_muon_update_has_adamw_sized_rms():
    """match_rms_adamw: lr·0.2·√max(A, B) on an orthogonalised update of RMS 1/√max(A, B) -> RMS 0.2·lr."""
    model = make(n_embd=64, n_head=4).train()
    lr = 1e-3
    opt = make_optimizer(model, muon_config(learning_rate=lr, min_lr=lr, weight_decay=0.0))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    idx = torch.randint(0, 29, (4, 12), generator=torch.Generator().manual_seed(0))
    model(idx, idx)[1].backward()
    opt.step()
    for name, p in model.named_parameters():
        if name.endswith(("c_attn.weight", "c_fc.weight", "c_proj.weight")):  # shapes 192×64, 256×64, 64×256
            rms = (p.detach() - before[name]).pow(2).mean().sqrt().item()
            # five Newton–Schulz steps leave the singular values between about 0.7 and 1.2, not exactly
            # 1 (measured here: update RMS 0.13-0.15·lr), hence the range around 0.2·lr. (0.2·lr is the
            # RMS of AdamW's updates in a long run, Liu et al. 2025; its first step is ±lr per entry.)
            assert 0.1 * lr < rms < 0.26 * lr, (name, rms / lr)


def test_muon_lowers_the_loss_and_resumes_exactly(tmp_path):
    tokens = periodic_tokens()
    model = make(**(LLAMA | dict(n_kv_head=2)))
    trainer = Trainer(model, tokens, None, muon_config())
    h = trainer.train()
    assert np.mean(h.train_loss[-5:]) < 0.5 * np.mean(h.train_loss[:5])

    first = Trainer(make(**(LLAMA | dict(n_kv_head=2))), tokens, None, muon_config())
    first.train(until=25)
    first.save_checkpoint(tmp_path / "ckpt")
    resumed = Trainer.resume(tmp_path / "ckpt", tokens, None)
    resumed.train()
    assert resumed.history.train_loss == h.train_loss
    for name, a in trainer.model.state_dict().items():
        assert torch.equal(a, resumed.model.state_dict()[name]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_muon_trains_a_llama_shape_under_bf16_and_generates():
    tokens = periodic_tokens()
    model = make(**(LLAMA | dict(n_kv_head=2, qk_norm=True)))
    trainer = Trainer(model, tokens, None, muon_config(device="cuda", dtype="bfloat16"))
    h = trainer.train()
    assert np.mean(h.train_loss[-5:]) < 0.5 * np.mean(h.train_loss[:5])
    model.eval()
    idx = torch.randint(0, 29, (2, 4), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    assert OneTokenStep.unsupported(model) is None
    assert generate(model, idx, 12, do_sample=False).shape == (2, 16)  # the flat cached step on CUDA

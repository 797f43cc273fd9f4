"""Interoperability with ``transformers``: GPT-2, Llama and Qwen3 weights to and from gptmini.

gptmini uses GPT-2's parameter names, so the GPT-2 mapping is one to one, with one twist: GPT-2 stores
its projections (``c_attn``, ``c_proj``, ``c_fc``) in OpenAI's ``Conv1D`` layer, whose weight is
(in_features, out_features), the transpose of ``nn.Linear``'s. transformers 5.23 still uses Conv1D for
GPT-2; the conversion looks at each module's type rather than assuming it.

``LlamaForCausalLM`` and ``Qwen3ForCausalLM`` are the same block with RMSNorm, SwiGLU, rotary
positions (half-split layout), grouped-query attention and no biases; Qwen3 adds QK-norm and an
explicit head size. Their separate ``q_proj``, ``k_proj``, ``v_proj`` become gptmini's fused
``c_attn`` (concatenated rows); ``gate_proj``, ``up_proj``, ``down_proj`` are ``c_gate``, ``c_fc``,
``c_proj``. RoPE scaling (Llama 3.1's "llama3", YaRN, ...) is not implemented and is refused.
These functions are reached as ``GPT.from_hf``, ``GPT.to_hf`` and ``GPT.from_pretrained``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from gptmini.model import GPT, GPTConfig

# activation_function values of GPT2Config that are the tanh-approximated GELU gptmini computes
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
GPT2_EOS = 50256  # <|endoftext|>


def _is_transposed(hf_model: nn.Module, name: str) -> bool:
    """True if parameter ``name`` of the HF model lives in a Conv1D (stored as (in, out))."""
    module = hf_model.get_submodule(name.rsplit(".", 1)[0])
    return name.endswith(".weight") and type(module).__name__ == "Conv1D"


def _refuse_unsupported(hf_config, checks: list[tuple]) -> None:
    """Raise a ValueError naming the first (field, value, supported?, what gptmini needs) not supported."""
    for field, value, supported, needed in checks:
        if not supported:
            raise ValueError(
                f"{type(hf_config).__name__}.{field} = {value!r} is not supported by gptmini; it needs {needed}"
            )


def _like(module: nn.Module, reference: nn.Module) -> nn.Module:
    """``module`` on the device, in the dtype and in the train/eval mode of ``reference``."""
    param = next(reference.parameters())
    return module.to(device=param.device, dtype=param.dtype).train(reference.training)


def config_from_hf(hf_config) -> GPTConfig:
    """The GPTConfig of a GPT2Config, or a ValueError for a GPT-2 variant gptmini does not compute."""
    c = hf_config
    checks = [  # (field, value, supported?, what gptmini needs)
        (
            "activation_function",
            c.activation_function,
            c.activation_function in TANH_GELUS,
            f"one of {TANH_GELUS}",
        ),
        ("n_inner", c.n_inner, c.n_inner in (None, 4 * c.n_embd), f"None or 4*n_embd = {4 * c.n_embd}"),
        ("scale_attn_weights", c.scale_attn_weights, c.scale_attn_weights, "True"),
        (
            "scale_attn_by_inverse_layer_idx",
            c.scale_attn_by_inverse_layer_idx,
            not c.scale_attn_by_inverse_layer_idx,
            "False",
        ),
        ("add_cross_attention", c.add_cross_attention, not c.add_cross_attention, "False"),
    ]
    _refuse_unsupported(c, checks)
    return GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.n_positions,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_embd=c.n_embd,
        dropout=c.resid_pdrop,  # GPT-2 has three dropout rates (all 0.1 by default); gptmini one
        bias=True,
        pos_encoding="learned",
        tie_weights=c.tie_word_embeddings,
        layer_norm_eps=c.layer_norm_epsilon,
    )


LLAMA_LIKE = ("llama", "qwen3")  # the model_type values of the Llama-shaped models gptmini loads


def llama_config_from_hf(hf_config) -> GPTConfig:
    """The GPTConfig of a LlamaConfig or Qwen3Config, or a ValueError for a variant gptmini does not compute."""
    c, kind = hf_config, hf_config.model_type
    rope = getattr(c, "rope_parameters", None) or {"rope_type": "default", "rope_theta": 10000.0}
    mlp_bias = getattr(c, "mlp_bias", False)  # Qwen3's MLP never has biases
    layer_types = getattr(c, "layer_types", None) or ["full_attention"]
    checks = [  # (field, value, supported?, what gptmini needs)
        ("hidden_act", c.hidden_act, c.hidden_act == "silu", "'silu' (SwiGLU)"),
        (
            "rope_parameters",
            rope,
            rope.get("rope_type", "default") == "default",
            "rope_type 'default': RoPE scaling (llama3, yarn, linear, dynamic) is not implemented",
        ),
        (
            "attention_bias",
            c.attention_bias,
            c.attention_bias == mlp_bias,
            f"the same as the MLP's bias ({mlp_bias}): gptmini's bias covers every linear layer",
        ),
        ("pretraining_tp", getattr(c, "pretraining_tp", 1), getattr(c, "pretraining_tp", 1) == 1, "1"),
        (
            "use_sliding_window",
            getattr(c, "use_sliding_window", False),
            not getattr(c, "use_sliding_window", False),
            "False",
        ),
        (
            "layer_types",
            layer_types,
            set(layer_types) == {"full_attention"},
            "full attention in every layer",
        ),
    ]
    _refuse_unsupported(c, checks)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    n_kv_head = c.num_key_value_heads or c.num_attention_heads
    config = GPTConfig(
        vocab_size=c.vocab_size,
        block_size=c.max_position_embeddings,
        n_layer=c.num_hidden_layers,
        n_head=c.num_attention_heads,
        n_embd=c.hidden_size,
        dropout=c.attention_dropout,  # only attention dropout there; gptmini has one rate for all
        bias=c.attention_bias,
        pos_encoding="rope",
        tie_weights=c.tie_word_embeddings,
        rope_base=float(rope["rope_theta"]),
        layer_norm_eps=c.rms_norm_eps,
        norm="rmsnorm",
        mlp="swiglu",
        d_ff=c.intermediate_size,
        n_kv_head=n_kv_head,
        d_head=head_dim,
        qk_norm=kind == "qwen3",
    )
    # the defaults where they agree, so that a round trip gives back the same GPTConfig
    return dataclasses.replace(
        config,
        d_ff=None
        if c.intermediate_size == dataclasses.replace(config, d_ff=None).ffn_dim
        else c.intermediate_size,
        n_kv_head=None if n_kv_head == c.num_attention_heads else n_kv_head,
        d_head=None if head_dim * c.num_attention_heads == c.hidden_size else head_dim,
    )


def _llama_names(config: GPTConfig) -> dict[str, list[str]]:
    """gptmini tensor name -> the transformers Llama/Qwen3 tensors it is made of (concatenated rows)."""
    names = {
        "transformer.wte.weight": ["model.embed_tokens.weight"],
        "transformer.ln_f.weight": ["model.norm.weight"],
        "lm_head.weight": ["lm_head.weight"],
    }
    for i in range(config.n_layer):
        ours, theirs = f"transformer.h.{i}.", f"model.layers.{i}."
        names[ours + "ln_1.weight"] = [theirs + "input_layernorm.weight"]
        names[ours + "ln_2.weight"] = [theirs + "post_attention_layernorm.weight"]
        if config.qk_norm:
            names[ours + "attn.q_norm.weight"] = [theirs + "self_attn.q_norm.weight"]
            names[ours + "attn.k_norm.weight"] = [theirs + "self_attn.k_norm.weight"]
        for kind in ("weight", "bias") if config.bias else ("weight",):
            names[f"{ours}attn.c_attn.{kind}"] = [f"{theirs}self_attn.{x}_proj.{kind}" for x in "qkv"]
            names[f"{ours}attn.c_proj.{kind}"] = [f"{theirs}self_attn.o_proj.{kind}"]
            for a, b in (("c_gate", "gate_proj"), ("c_fc", "up_proj"), ("c_proj", "down_proj")):
                names[f"{ours}mlp.{a}.{kind}"] = [f"{theirs}mlp.{b}.{kind}"]
    return names


def _from_llama(hf_model, cls: type[GPT]) -> GPT:
    model = cls(llama_config_from_hf(hf_model.config))
    hf_state = hf_model.state_dict()
    state, used = {}, set()
    for name, parts in _llama_names(model.config).items():
        missing = [p for p in parts if p not in hf_state]
        if missing:
            raise ValueError(f"the transformers model has no tensor {missing[0]!r}; is it a *ForCausalLM?")
        state[name] = torch.cat([hf_state[p] for p in parts])  # c_attn: q, k, v rows stacked
        used.update(parts)
    unused = sorted(set(hf_state) - used)
    if unused:
        raise ValueError(f"the transformers model has tensors gptmini has no place for: {unused[:3]}")
    model.load_state_dict(state)
    return model


def _to_llama(model: GPT):
    import transformers

    c = model.config
    if c.qk_norm and c.bias:
        raise ValueError("Qwen3 (QK-norm) has no biases in its MLP: use bias=False to export it")
    kw = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.n_embd,
        intermediate_size=c.ffn_dim,
        num_hidden_layers=c.n_layer,
        num_attention_heads=c.n_head,
        num_key_value_heads=c.kv_heads,
        head_dim=c.head_dim,
        hidden_act="silu",
        max_position_embeddings=c.block_size,
        rms_norm_eps=c.layer_norm_eps,
        tie_word_embeddings=c.tie_weights,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_base},
        attention_bias=c.bias,
        attention_dropout=c.dropout,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    if c.qk_norm:
        hf_model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**kw))
    else:
        hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw, mlp_bias=c.bias))
    q, kv = c.n_head * c.head_dim, c.kv_heads * c.head_dim
    ours, state = model.state_dict(), {}
    for name, parts in _llama_names(c).items():
        pieces = ours[name].split((q, kv, kv)) if len(parts) == 3 else (ours[name],)
        state.update(zip(parts, pieces, strict=True))
    hf_model.load_state_dict(state, strict=True)
    return hf_model


def _is_llama_shaped(c: GPTConfig) -> bool:
    """True for the Llama/Qwen3 block: rotary (half layout), RMSNorm, SwiGLU, no soft-capping."""
    return (c.pos_encoding, c.rope_layout, c.norm, c.mlp, c.logit_softcap) == (
        "rope",
        "half",
        "rmsnorm",
        "swiglu",
        None,
    )


def from_hf(hf_model, cls: type[GPT] = GPT) -> GPT:
    """A gptmini GPT with the weights of ``hf_model``: a GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM."""
    model_type = getattr(hf_model.config, "model_type", None)
    if model_type in LLAMA_LIKE:
        return _like(_from_llama(hf_model, cls), hf_model)
    if model_type != "gpt2":
        raise ValueError(
            f"from_hf knows GPT-2, Llama and Qwen3 models (model_type 'gpt2', 'llama', 'qwen3'), "
            f"got a {type(hf_model).__name__} with model_type {model_type!r}"
        )
    model = cls(config_from_hf(hf_model.config))
    hf_state = hf_model.state_dict()
    state = {}
    for name in model.state_dict():
        if name not in hf_state:
            raise ValueError(f"the transformers model has no tensor {name!r}; is it a GPT2LMHeadModel?")
        tensor = hf_state[name]
        state[name] = tensor.t() if _is_transposed(hf_model, name) else tensor
    model.load_state_dict(state)
    return _like(model, hf_model)


def to_hf(model: GPT):
    """``model`` as a transformers model of its shape: Qwen3ForCausalLM, LlamaForCausalLM or GPT2LMHeadModel.

    Llama/Qwen3 shape: rotary positions (half layout), RMSNorm, SwiGLU, no soft-capping (Qwen3 when
    QK-norm is on). GPT-2 shape: learned positions, biases, LayerNorm, a GELU MLP of 4·n_embd and
    plain multi-head attention. Anything else has no transformers class here: a ValueError says why.
    """
    c = model.config
    if _is_llama_shaped(c):
        return _like(_to_llama(model), model)
    from transformers import GPT2Config, GPT2LMHeadModel

    if c.pos_encoding != "learned" or not c.bias:
        raise ValueError(
            f"GPT-2 has learned positions and biases; this model has pos_encoding={c.pos_encoding!r}, "
            f"bias={c.bias} (and it is not Llama/Qwen3-shaped either: those need pos_encoding='rope', "
            f"rope_layout='half', norm='rmsnorm', mlp='swiglu' and no logit_softcap)"
        )
    gpt2_shape = dict(norm="layernorm", mlp="gelu", ffn_dim=4 * c.n_embd, kv_heads=c.n_head,
                      head_dim=c.n_embd // c.n_head, qk_norm=False, logit_softcap=None)  # fmt: skip
    for field, needed in gpt2_shape.items():
        if getattr(c, field) != needed:
            raise ValueError(f"GPT-2 needs {field} = {needed!r}; this model has {getattr(c, field)!r}")
    eos = GPT2_EOS if c.vocab_size > GPT2_EOS else None  # only a GPT-2-sized vocabulary has <|endoftext|>
    hf_config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="gelu_new",
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        layer_norm_epsilon=c.layer_norm_eps,
        tie_word_embeddings=c.tie_weights,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    hf_model = GPT2LMHeadModel(hf_config)
    state = {
        name: tensor.t() if _is_transposed(hf_model, name) else tensor
        for name, tensor in model.state_dict().items()
    }
    hf_model.load_state_dict(state, strict=True)
    return _like(hf_model, model)


def from_pretrained(name: str = "gpt2", cls: type[GPT] = GPT, **kwargs) -> GPT:
    """GPT-2 weights by hub name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl") or local directory.

    Goes through ``transformers.GPT2LMHeadModel.from_pretrained(name, **kwargs)``; where the hub cannot
    be reached the OSError says so and how to load from a local copy instead.
    """
    from transformers import GPT2LMHeadModel

    # A hub id is "name" or "owner/name"; anything else is a local path, which must exist: failing
    # here is immediate, where the hub would be retried for half a minute first.
    looks_local = str(name).startswith(("/", ".", "~")) or str(name).count("/") > 1 or "\\" in str(name)
    if looks_local and not Path(name).expanduser().is_dir():
        raise FileNotFoundError(f"{name} is not a directory: expected a local copy of a GPT-2 model")
    try:
        hf_model = GPT2LMHeadModel.from_pretrained(name, **kwargs)
    except OSError as e:
        if Path(name).is_dir():
            raise
        raise OSError(
            f"could not load {name!r} from the Hugging Face hub: {str(e).splitlines()[0]}\n"
            f"The hub may be unreachable from this machine (no network, a firewall, or HF_HUB_OFFLINE=1), "
            f"or {name!r} may not be a model there. To load from a local directory instead: on a machine "
            f"with access run GPT2LMHeadModel.from_pretrained({name!r}).save_pretrained('gpt2-local') "
            f"(or download the repository's files), copy the folder here and call "
            f"GPT.from_pretrained('path/to/gpt2-local')."
        ) from e
    return from_hf(hf_model.eval(), cls)

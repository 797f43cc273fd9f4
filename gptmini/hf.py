"""GPT-2 interoperability: weights to and from ``transformers.GPT2LMHeadModel``.

gptmini uses GPT-2's parameter names, so the mapping is one to one, with one twist: GPT-2 stores its
projections (``c_attn``, ``c_proj``, ``c_fc``) in OpenAI's ``Conv1D`` layer, whose weight is
(in_features, out_features), the transpose of ``nn.Linear``'s. transformers 5.23 still uses Conv1D for
GPT-2; the conversion looks at each module's type rather than assuming it.
These functions are reached as ``GPT.from_hf``, ``GPT.to_hf`` and ``GPT.from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from gptmini.model import GPT, GPTConfig

# activation_function values of GPT2Config that are the tanh-approximated GELU gptmini computes
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
GPT2_EOS = 50256  # <|endoftext|>


def _is_transposed(hf_model: nn.Module, name: str) -> bool:
    """True if parameter ``name`` of the HF model lives in a Conv1D (stored as (in, out))."""
    module = hf_model.get_submodule(name.rsplit(".", 1)[0])
    return name.endswith(".weight") and type(module).__name__ == "Conv1D"


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
    for field, value, supported, needed in checks:
        if not supported:
            raise ValueError(f"GPT2Config.{field} = {value!r} is not supported by gptmini; it needs {needed}")
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


def from_hf(hf_model, cls: type[GPT] = GPT) -> GPT:
    """A gptmini GPT with the weights of ``hf_model`` (a transformers GPT2LMHeadModel)."""
    model = cls(config_from_hf(hf_model.config))
    hf_state = hf_model.state_dict()
    state = {}
    for name in model.state_dict():
        if name not in hf_state:
            raise ValueError(f"the transformers model has no tensor {name!r}; is it a GPT2LMHeadModel?")
        tensor = hf_state[name]
        state[name] = tensor.t() if _is_transposed(hf_model, name) else tensor
    model.load_state_dict(state)
    param = next(hf_model.parameters())
    return model.to(device=param.device, dtype=param.dtype).train(hf_model.training)


def to_hf(model: GPT):
    """``model`` as a transformers GPT2LMHeadModel (needs learned positions and biases, as GPT-2 has)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    if c.pos_encoding != "learned" or not c.bias:
        raise ValueError(
            f"GPT-2 has learned positions and biases; this model has pos_encoding={c.pos_encoding!r}, bias={c.bias}"
        )
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
    param = next(model.parameters())
    return hf_model.to(device=param.device, dtype=param.dtype).train(model.training)


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

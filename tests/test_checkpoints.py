"""Loading checkpoints by name or directory, and the committed character model."""

from __future__ import annotations

import pytest
import torch

import gptmini
from gptmini import GPT, CharTokenizer, GPTConfig
from gptmini.checkpoints import CHECKPOINTS_DIR, checkpoint_dir, load_checkpoint


def test_a_saved_directory_loads_with_its_tokenizer(tmp_path):
    tok = CharTokenizer.from_text("to be or not to be")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    model.save(tmp_path)
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded, tok2 = load_checkpoint(tmp_path)
    assert not loaded.training
    assert tok2.encode("not to be") == tok.encode("not to be")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_unknown_name_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no checkpoint 'no-such-model'"):
        checkpoint_dir("no-such-model")


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)).save(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found"):
        load_checkpoint(tmp_path)


@pytest.mark.skipif(not (CHECKPOINTS_DIR / "shakespeare-char").is_dir(), reason="checkpoint not present")
def test_committed_character_model_predicts_shakespeare_better_than_chance():
    model, tok = gptmini.load_checkpoint("shakespeare-char")
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    ids = torch.tensor([tok.encode(text)])
    _, loss = model(ids[:, :-1], ids[:, 1:])
    assert loss.item() < 0.6 * torch.log(torch.tensor(float(tok.vocab_size))).item()

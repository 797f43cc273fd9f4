import json

import pytest

from gptmini.__main__ import build_parser, load_config, main

CONFIG = "configs/shakespeare_char_cpu.toml"
TINY = [
    "--n_layer",
    "1",
    "--n_embd",
    "16",
    "--n_head",
    "2",
    "--block_size",
    "16",
    "--max_steps",
    "3",
    "--batch_size",
    "2",
    "--eval_iters",
    "1",
    "--eval_interval",
    "0",
    "--progress",
    "false",
]


@pytest.mark.parametrize("command", [[], ["train"], ["sample"], ["eval"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: python -m gptmini" in capsys.readouterr().out


def test_config_files_load_and_overrides_apply():
    for path in ("configs/shakespeare_char_cpu.toml", "configs/shakespeare_char_gpu.toml"):
        cfg = load_config(path, [])
        assert cfg["data"]["tokenizer"] == "char" and cfg["model"]["n_layer"] >= 1
    cfg = load_config(CONFIG, ["--max_steps", "7", "--pos_encoding", "learned", "--eval_iters", "none"])
    assert cfg["train"]["max_steps"] == 7 and cfg["model"]["pos_encoding"] == "learned"
    assert cfg["train"]["eval_iters"] is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--n_layerz", "2"], "unknown option"),
        (["--max_steps", "many"], "type int"),
        (["--max_steps"], "pairs"),
        (["--compile", "maybe"], "true or false"),
    ],
)
def test_bad_overrides_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(CONFIG, overrides)


def test_unknown_key_in_a_config_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nn_layers = 2\n")
    with pytest.raises(ValueError, match="unknown key 'n_layers'"):
        load_config(str(bad), [])


@pytest.mark.slow
def test_train_then_sample_then_eval(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--config", CONFIG, *TINY, "--out_dir", str(out)])
    for name in ("model.safetensors", "config.json", "tokenizer.json", "metrics.json", "trainer.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and "--max_steps 3" in metrics["command"]
    capsys.readouterr()
    main(["sample", "--checkpoint", str(out), "--prompt", "ROMEO:", "--max_new_tokens", "20", "--seed", "1"])
    text = capsys.readouterr().out
    assert text.startswith("ROMEO:") and len(text.rstrip("\n")) >= 20
    main(["eval", "--checkpoint", str(out), "--split", "val", "--batch_size", "256"])
    assert "val loss" in capsys.readouterr().out


def test_parser_rejects_stray_arguments_for_sample():
    with pytest.raises(SystemExit):
        main(["sample", "--checkpoint", "x", "--bogus", "1"])
    assert build_parser().prog == "python -m gptmini"

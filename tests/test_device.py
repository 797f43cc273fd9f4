import pytest
import torch

from gptmini.device import auto_device


def test_env_var_forces_cpu(monkeypatch):
    monkeypatch.setenv("GPTMINI_DEVICE", "cpu")
    assert auto_device() == torch.device("cpu")


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("GPTMINI_DEVICE", "not-a-device")
    assert auto_device("cpu") == torch.device("cpu")


def test_automatic_choice_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.delenv("GPTMINI_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert auto_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert auto_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_device() == torch.device("cuda")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu", "cpu:one"])
def test_unknown_device_is_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("GPTMINI_DEVICE", bad)
    with pytest.raises(ValueError, match="unknown device") as err:
        auto_device()
    assert "GPTMINI_DEVICE" in str(err.value) and "allowed" in str(err.value)


def test_unavailable_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="not available"):
        auto_device("cuda")


def test_missing_cuda_index_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="1 CUDA device"):
        auto_device("cuda:3")

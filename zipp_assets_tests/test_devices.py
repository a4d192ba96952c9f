from importlib.metadata import version

import dagster as dg
import pytest
import torch

from zipp_assets import devices
from zipp_assets.devices import DeviceUnavailable, dgl_has_cuda, missing_for, require_device

NO_GPU = (f"- torch {torch.__version__} sees no GPU (no NVIDIA driver or no device): run on a machine with an NVIDIA "
          "GPU and its driver, set up there with `make setup-gpu` (README, 'Running on a GPU machine'), "
          "or set device: cpu")
CPU_DGL = (f"- the installed DGL {version('dgl')} is a CPU-only build (its libdgl has no CUDA device API): "
           "install DGL's CUDA build into .venv with `make setup-gpu`")


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees n GPUs (nothing here runs on them)."""
    def see(n: int, dgl_cuda: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(devices, "dgl_has_cuda", lambda: dgl_cuda)
    return see


def test_cpu_needs_nothing():
    require_device("cpu", needs_dgl=True)
    assert missing_for("cpu", needs_dgl=True) == []


def test_no_gpu_names_what_is_missing_and_the_command(no_gpu, monkeypatch):
    monkeypatch.setattr(devices, "dgl_has_cuda", lambda: False)
    with pytest.raises(DeviceUnavailable) as raised:
        require_device("cuda", needs_dgl=False)
    assert str(raised.value) == f"device 'cuda' requested but CUDA is not available to this stage:\n{NO_GPU}"
    with pytest.raises(DeviceUnavailable) as raised:
        require_device("cuda:0", needs_dgl=True)
    assert str(raised.value) == (f"device 'cuda:0' requested but CUDA is not available to this stage:\n"
                                 f"{NO_GPU}\n{CPU_DGL}")


def test_hidden_devices_are_named(no_gpu, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    hidden = NO_GPU[2:].replace("or no device)", "or no device; CUDA_VISIBLE_DEVICES='')")
    assert missing_for("cuda", needs_dgl=False) == [hidden]


def test_cpu_only_dgl_on_a_gpu_machine(gpus):
    gpus(1, dgl_cuda=False)
    with pytest.raises(DeviceUnavailable) as raised:
        require_device("cuda", needs_dgl=True)
    assert str(raised.value) == f"device 'cuda' requested but CUDA is not available to this stage:\n{CPU_DGL}"
    require_device("cuda", needs_dgl=False)  # open_clip needs torch only


def test_gpu_index_must_exist(gpus):
    gpus(2, dgl_cuda=True)
    require_device("cuda", needs_dgl=True)
    require_device("cuda:1", needs_dgl=True)
    assert missing_for("cuda:2", needs_dgl=True) == [
        "GPU 2 does not exist: torch sees 2 GPU(s), cuda:0..cuda:1; pick one of those"]


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        require_device("gpu", needs_dgl=False)


def test_dgl_cuda_detection_agrees_with_the_installed_wheel():
    # DGL's CUDA wheels carry a local version (2.1.0+cu121); the registry's CPU wheel is plain 2.1.0.
    assert dgl_has_cuda() == ("+cu" in version("dgl"))


@pytest.mark.skipif(torch.cuda.is_available() or dgl_has_cuda(), reason="this machine has a GPU or DGL's CUDA build")
def test_this_cpu_machine_reports_both_missing_pieces():
    with pytest.raises(DeviceUnavailable) as raised:
        require_device("cuda", needs_dgl=True)
    lines = str(raised.value).splitlines()
    assert len(lines) == 3 and "sees no GPU" in lines[1] and "CPU-only build" in lines[2]


def test_training_and_open_clip_check_before_anything_is_loaded(no_gpu, monkeypatch, tmp_path):
    from zipp_assets.encoder.train import TrainConfig
    from zipp_assets.imaging.encoders import OpenClipEncoder

    monkeypatch.setattr(devices, "dgl_has_cuda", lambda: False)
    with pytest.raises(DeviceUnavailable, match="CPU-only build"):
        TrainConfig(device="cuda")
    # A missing checkpoint would fail differently: the device is checked before any weights are read.
    with pytest.raises(DeviceUnavailable, match="sees no GPU") as raised:
        OpenClipEncoder("ViT-L-14-336", str(tmp_path / "missing.safetensors"), device="cuda")
    assert "CPU-only build" not in str(raised.value)


def _failure(assets, resources, run_config=None) -> BaseException:
    with pytest.raises(Exception) as raised:
        dg.materialize(assets, resources=resources, run_config=run_config, instance=dg.DagsterInstance.ephemeral())
    error = raised.value
    while error is not None and not isinstance(error, DeviceUnavailable):
        error = error.__cause__
    assert error is not None, f"not a device error: {raised.value!r}"
    return error


def test_gpu_assets_fail_on_the_device_before_reading_the_lake(no_gpu, tmp_path):
    """The lake is empty: an asset that read it before checking the device would fail on a missing table."""
    from zipp_assets.encoder.assets import encoder_evaluation, persona_encoder
    from zipp_assets.graph.assets import image_embeddings
    from zipp_assets.imaging.resources import ImageEncoderResource
    from zipp_assets.resources import ZippLake

    resources = {"lake": ZippLake(data_dir=str(tmp_path)), "image_encoder": ImageEncoderResource()}
    for asset in (persona_encoder, encoder_evaluation):
        error = _failure([asset], resources, {"ops": {asset.op.name: {"config": {"device": "cuda"}}}})
        assert "sees no GPU" in str(error)
    clip_on_cuda = ImageEncoderResource(backend="open_clip", pretrained=str(tmp_path / "missing.safetensors"),
                                        device="cuda")
    error = _failure([image_embeddings], resources | {"image_encoder": clip_on_cuda})
    assert "sees no GPU" in str(error)

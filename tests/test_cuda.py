"""On a CUDA device (skipped without one): affinities, a training step and the Python interface
agree with the CPU; bf16 autocast stays close to float32; the trainer leaves the device running
between log intervals."""
import numpy as np
import pytest
import torch
from checkpoints import EM_OVERRIDE, project_checkpoint

import pea
from pea.affinity import EM_OFFSETS, offsets_from_shifts
from pea.inference import predict
from pea.losses import PEALoss
from pea.models import build_model
from pea.train import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _net2d(seed=0):
    torch.manual_seed(seed)
    return build_model({"backbone": "resunet", "in_channels": 3, "emb_dim": 8, "filters": [8, 8, 16, 16, 32]}).eval()


def test_2d_affinities_on_cuda_equal_the_cpu():
    image = np.random.default_rng(0).random((70, 90, 3), dtype=np.float32)
    offsets = offsets_from_shifts([1, 3, 5, 9, 27])
    model = _net2d()
    cpu = predict(model, image, offsets, normalize="imagenet")[0]
    gpu = predict(model.to(CUDA), image, offsets, normalize="imagenet")[0]
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
    bf16 = predict(model, image, offsets, normalize="imagenet", amp="bf16")[0]
    assert bf16.dtype == np.float32 and np.abs(bf16 - cpu).max() < 0.05


def test_3d_windows_on_cuda_equal_the_cpu(tmp_path):
    project_checkpoint(tmp_path / "em.ckpt", "ac3ac4_demo", EM_OVERRIDE)
    volume = (np.random.default_rng(1).random((10, 48, 40)) * 255).astype(np.uint8)
    cpu = pea.affinities(pea.load_model(tmp_path / "em.ckpt"), volume)
    gpu_model = pea.load_model(tmp_path / "em.ckpt", device="cuda")
    gpu = pea.affinities(gpu_model, volume, batch=4)
    assert gpu.shape == (12, 10, 48, 40)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
    labels = pea.segment(gpu, gpu_model.offsets, method="mutex", strides=[1, 10, 10])
    assert labels.shape == volume.shape


def _step(device, steps=1):
    model = _net2d().train()
    loss = PEALoss(offsets_from_shifts([1, 3, 5, 9, 27]), 2, ccm=False)
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, 5:30, 8:40], labels[:, 28:60, 30:62] = 1, 2
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) + labels[:, None].float()
    trainer = Trainer(model, loss, torch.optim.SGD(model.parameters(), lr=0.01), [(x, labels)],
                      run_dir="/nonexistent", iterations=steps, device=torch.device(device))
    total, parts, finite = trainer.step(x, labels)
    assert total.device.type == torch.device(device).type and bool(finite)  # tensors on the device
    grad = torch.cat([p.grad.flatten() for p in trainer.model.parameters()]).cpu()
    return float(total), grad


def test_a_training_step_on_cuda_equals_the_cpu():
    loss_cpu, grad_cpu = _step("cpu")
    loss_gpu, grad_gpu = _step("cuda")
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-4)
    assert float((grad_gpu - grad_cpu).norm() / grad_cpu.norm()) < 1e-2


def test_authors_3d_checkpoint_on_cuda():
    from pathlib import Path

    path = Path(__file__).resolve().parent / "data" / "official" / "superhuman3d_small.ckpt"
    model = pea.load_model(path, config="ac3ac4", device="cuda")
    volume = np.random.default_rng(2).random((12, 64, 64)).astype(np.float32)
    affs = pea.affinities(model, volume, window=[12, 64, 64], overlap=[0, 0, 0], context=[0, 0, 0])
    assert affs.shape == (len(EM_OFFSETS), 12, 64, 64) and np.isfinite(affs).all()

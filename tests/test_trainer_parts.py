"""The trainer built from parts: any network, loss, optimiser and batches; learning-rate
schedules (constant, warm-up + cosine or poly) against their formulas; checkpoints that resume
the schedule."""
import math

import pytest
import torch

from pea.affinity import offsets_from_shifts
from pea.losses import PEALoss
from pea.models import build_model
from pea.train import Every, Trainer, lr_factor, lr_scheduler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("schedule, warmup, i, expected", [
    ("constant", 0, 7, 1.0),
    ("constant", 4, 1, 2 / 4),                                   # linear warm-up: (i + 1) / warmup
    ("cosine", 0, 5, 0.5 * (1 + math.cos(math.pi * 5 / 10))),    # t = i / total
    ("cosine", 2, 6, 0.5 * (1 + math.cos(math.pi * 4 / 8))),     # t = (i - warmup) / (total - warmup)
    ("poly", 0, 3, (1 - 3 / 10) ** 0.9),
    ("poly", 0, 10, 0.0),
])
def test_lr_factor_follows_the_formula(schedule, warmup, i, expected):
    assert lr_factor(i, 10, schedule, warmup) == pytest.approx(expected)


def test_lr_final_is_the_floor():
    assert lr_factor(10, 10, "cosine", final=0.1) == pytest.approx(0.1)
    assert lr_factor(0, 10, "cosine", final=0.1) == pytest.approx(1.0)
    assert lr_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 10) is None  # constant


def _parts(seed=0, iterations=6):
    torch.manual_seed(seed)
    model = build_model({"backbone": "resunet", "in_channels": 1, "emb_dim": 4, "filters": [4, 4, 4, 4, 4]})
    labels = torch.zeros(2, 32, 32, dtype=torch.long)
    labels[:, 4:20, 3:15], labels[:, 18:30, 12:29] = 1, 2
    noise = torch.Generator().manual_seed(0)  # the same batches whatever the network's seed
    batches = [(torch.randn(2, 1, 32, 32, generator=noise) + labels[:, None].float(), labels) for _ in range(3)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = lr_scheduler(optimizer, iterations, "cosine", warmup=2)
    loss = PEALoss(offsets_from_shifts([1, 3]), 2, ccm=False, epm_groups=[2, 1, 1, 1])
    return model, loss, optimizer, batches, scheduler


def test_trainer_from_parts_trains_and_logs(tmp_path):
    model, loss, optimizer, batches, scheduler = _parts()
    trainer = Trainer(model, loss, optimizer, batches, run_dir=tmp_path, iterations=6, scheduler=scheduler,
                      every=Every(log=2, save=3))
    trainer.run()
    logged = [line.split() for line in (tmp_path / "log.txt").read_text().splitlines() if line.startswith("iter ")]
    assert [int(row[1]) for row in logged] == [2, 4, 6] and all(row[4:6] == ["scm", row[5]] for row in logged)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * lr_factor(6, 6, "cosine", 2))
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["iteration"] == 6 and ckpt["scheduler"]["last_epoch"] == 6


def test_resume_continues_the_schedule(tmp_path):
    whole = _parts()
    Trainer(*whole[:4], run_dir=tmp_path / "a", iterations=6, scheduler=whole[4], every=Every(save=3)).run()
    first = _parts()
    Trainer(*first[:4], run_dir=tmp_path / "b", iterations=3, scheduler=first[4], every=Every(save=3)).run()
    second = _parts(seed=1)  # other initial weights: the checkpoint replaces them
    resumed = Trainer(*second[:4], run_dir=tmp_path / "b", iterations=6, scheduler=second[4], every=Every(save=3))
    resumed.resume(tmp_path / "b" / "last.ckpt")
    # the batches of iterations 4..6 are the cycled list's 1st..3rd: the same as in the whole run
    resumed.run()
    assert second[2].param_groups[0]["lr"] == pytest.approx(whole[2].param_groups[0]["lr"])
    for a, b in zip(whole[0].state_dict().values(), second[0].state_dict().values()):
        torch.testing.assert_close(a, b)

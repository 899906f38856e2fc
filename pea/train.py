"""The training engine: one loop for every data set (2D and 3D), with validation, model
selection, atomic checkpoints, exact resumption, TensorBoard and text logs."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from pea.affinity import resolve_offsets
from pea.ccm import CrossView
from pea.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: F401  (re-exported)
from pea.config import Config
from pea.data import get_reader
from pea.errors import PEAInputError
from pea.inference import segment_sample, select_device
from pea.losses import PEALoss
from pea.metrics import evaluate, select_metrics, summarize
from pea.models import build_model, load_state_dict_checked

LOWER_IS_BETTER = {"voi", "arand", "voi_split", "voi_merge", "abs_dic"}


def validate(model: torch.nn.Module, samples, cfg: Config, offsets, device, metrics) -> tuple[dict, list[dict]]:
    """Segment the samples with TRAIN.valid_partitioner and score them against their labels;
    returns (means, rows)."""
    was_training = model.training
    model.eval()
    method = cfg.TRAIN.valid_partitioner
    rows = []
    for sample in samples:
        seg = segment_sample(model, sample, cfg, offsets, device, methods=(method,))["seg"][method]
        rows.append({"name": sample.name, **evaluate(seg, sample.gt, metrics=list(metrics))})
    model.train(was_training)
    return summarize(rows)[0], rows


def seeded_model(model_cfg: Mapping, seed: int) -> torch.nn.Module:
    """The network with its initial weights drawn from `seed` (the global generators are
    left as they were)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model_cfg)


class Trainer:
    """Trains a PEA network as the config says; `run()` returns the best validation scores."""

    def __init__(self, cfg: Config, run_dir: str | Path, device: torch.device | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device or select_device(cfg.TRAIN.device)
        self.offsets, group = resolve_offsets(cfg.DATA)
        self.reader = get_reader(cfg.DATA.dataset)
        reported = select_metrics(list(self.reader.METRICS))
        if cfg.TRAIN.select_metric not in reported:
            raise PEAInputError(f"TRAIN.select_metric = {cfg.TRAIN.select_metric!r}; "
                                f"use one of {', '.join(reported)}")
        self.model = seeded_model(cfg.MODEL, cfg.TRAIN.seed).to(self.device)
        t = cfg.TRAIN
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=t.lr, betas=tuple(t.betas), eps=t.eps,
                                          weight_decay=t.weight_decay, amsgrad=t.amsgrad)
        self.loss = PEALoss(cfg.LOSS, self.offsets, group)
        self.cross_view = CrossView(cfg.LOSS, t.seed, cfg.DATA.normalize) if cfg.LOSS.ccm else None
        self.iteration = 0
        self.best = {"score": None, "iteration": 0, "scores": {}}

    # -- checkpoints -------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model_weights": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "config": self.cfg.to_dict(),
            "best": json.dumps(self.best),
        }

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint. An official one (weights and `current_iter` only)
        continues, as the authors' code does, from its iteration with a fresh optimizer;
        its network must be the configured one (MODEL.backbone resunet_official, ...)."""
        ckpt = load_checkpoint(path)
        load_state_dict_checked(self.model, ckpt["model_weights"], str(path))
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.iteration = int(ckpt["iteration"] if "iteration" in ckpt else ckpt.get("current_iter", 0))
        self.best = json.loads(ckpt.get("best", "null")) or self.best

    # -- one step ----------------------------------------------------------------------
    def step(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict]:
        """One optimisation step on a batch; returns the loss and its terms."""
        x, labels = x.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        if self.cross_view is not None:
            out, out2 = self.cross_view(self.model, x, labels, self.iteration)
        else:
            out, out2 = self.model(x), None
        loss, parts = self.loss(out, labels, out2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), parts

    # -- the loop ----------------------------------------------------------------------
    def _loader(self) -> torch.utils.data.DataLoader:
        """Batches from the current iteration on: sample indices i * batch ... are deterministic."""
        cfg, t = self.cfg, self.cfg.TRAIN
        dataset = self.reader.train_dataset(cfg, self.reader.load_split(cfg.DATA, "train"))
        self.train_size = len(dataset.samples)
        return torch.utils.data.DataLoader(
            dataset, batch_size=t.batch_size, sampler=range(self.iteration * t.batch_size, t.iterations * t.batch_size),
            num_workers=cfg.DATA.num_workers, pin_memory=self.device.type == "cuda",
            persistent_workers=False, drop_last=True)

    def _valid_samples(self) -> list:
        samples = self.reader.load_split(self.cfg.DATA, self.reader.VALID_SPLIT)
        limit = self.cfg.TRAIN.max_valid_images
        return samples[:limit] if limit else samples

    @contextmanager
    def _logs(self) -> Iterator:
        """The TensorBoard writer and a `note(line)` that appends to log.txt, both closed on exit."""
        from tensorboardX import SummaryWriter

        self.run_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        try:
            with open(self.run_dir / "log.txt", "a") as text_log:
                def note(line: str) -> None:
                    text_log.write(line + "\n")
                    text_log.flush()

                yield writer, note
        finally:
            writer.close()

    def _better(self, score: float) -> bool:
        if self.best["score"] is None:
            return True
        lower = self.cfg.TRAIN.select_metric in LOWER_IS_BETTER
        return score < self.best["score"] if lower else score > self.best["score"]

    def _validate(self, samples, writer, note) -> str:
        """Score the validation samples, log them, keep best.ckpt; returns the scores' line."""
        scores, _ = validate(self.model, samples, self.cfg, self.offsets, self.device, self.reader.METRICS)
        for k, v in scores.items():
            writer.add_scalar(f"valid/{k}", v, self.iteration)
        line = " ".join(f"{k}={v:.4f}" for k, v in scores.items())
        note(f"valid {self.iteration} {line}")
        score = scores[self.cfg.TRAIN.select_metric]
        if self._better(score):
            self.best = {"score": score, "iteration": self.iteration, "scores": scores}
            save_checkpoint(self.run_dir / "best.ckpt", self.state())
        return line

    def _save(self) -> None:
        """model-%06d.ckpt (the authors' names, each kept unless TRAIN.keep_checkpoints says how
        many of the newest to keep) and last.ckpt, which --resume reads."""
        state = self.state()
        save_checkpoint(self.run_dir / f"model-{self.iteration:06d}.ckpt", state)
        save_checkpoint(self.run_dir / "last.ckpt", state)
        keep = self.cfg.TRAIN.keep_checkpoints
        if keep is not None:
            saved = sorted((p for p in self.run_dir.glob("model-*.ckpt") if p.stem[6:].isdigit()),
                           key=lambda p: int(p.stem[6:]))
            for old in saved[:max(0, len(saved) - int(keep))]:
                old.unlink()

    def run(self) -> dict:
        t = self.cfg.TRAIN
        loader = self._loader()
        valid_samples = self._valid_samples()
        start = self.iteration
        with self._logs() as (writer, note):
            note(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} start at iteration {start} on {self.device}; "
                 f"{self.train_size} training, {len(valid_samples)} validation samples")
            self.model.train()
            bar = tqdm(loader, total=t.iterations - start, initial=0, desc=self.cfg.NAME, dynamic_ncols=True)
            running = []
            for x, labels in bar:
                self.iteration += 1
                loss, parts = self.step(x, labels)
                running.append(loss)
                bar.set_postfix(loss=f"{loss:.4f}", best=self.best["score"])
                if self.iteration % t.log_every == 0:
                    mean, running = float(np.mean(running)), []
                    writer.add_scalar("loss/total", mean, self.iteration)
                    for k, v in parts.items():
                        writer.add_scalar(f"loss/{k}", v, self.iteration)
                    note(f"iter {self.iteration} loss {mean:.5f} " + " ".join(f"{k} {v:.5f}" for k, v in parts.items()))
                last = self.iteration == t.iterations
                if valid_samples and (self.iteration % t.valid_every == 0 or last):
                    bar.write(f"[valid] iter {self.iteration}: {self._validate(valid_samples, writer, note)}")
                if self.iteration % t.save_every == 0 or last:
                    self._save()
            bar.close()
            note(f"# done: best {t.select_metric} {self.best['score']} at iteration {self.best['iteration']}")
        return self.best

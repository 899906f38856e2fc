"""The training engine: one loop for every data set (2D and 3D), with validation, model
selection, atomic checkpoints, exact resumption, TensorBoard and text logs."""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from pea.affinity import resolve_offsets
from pea.ccm import CrossView
from pea.checkpoint import check_finite, load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: F401
from pea.config import Config, reported_metrics
from pea.data import get_reader
from pea.errors import PEAInputError, PEARunError
from pea.io import remove_stale
from pea import distributed
from pea.inference import run_model, segment_sample, select_device
from pea.losses import PEALoss
from pea.threads import worker_init
from pea.metrics import evaluate, summarize
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


class _Silent:
    """A TensorBoard writer that writes nothing (ranks other than 0)."""

    def add_scalar(self, *args, **kwargs) -> None:
        return None


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
        self.world = distributed.world()
        self.batch, self.global_batch = distributed.batch_sizes(cfg.TRAIN.batch_size, cfg.TRAIN.batch_scope, self.world)
        self.device = distributed.start(self.world, device or select_device(cfg.TRAIN.device))
        self.offsets, group = resolve_offsets(cfg.DATA)
        self.reader = get_reader(cfg.DATA.dataset)
        if cfg.TRAIN.select_metric is None:
            raise PEAInputError("TRAIN.select_metric is not set: name the validation score that picks best.ckpt")
        self.model = seeded_model(cfg.MODEL, cfg.TRAIN.seed).to(self.device)
        t = cfg.TRAIN
        if self.world.size > 1 and cfg.LOSS.ccm and cfg.LOSS.ccm_pass == "separate" and not cfg.LOSS.ccm_detach:
            raise PEAInputError("LOSS.ccm_pass separate needs LOSS.ccm_detach true when training on several "
                                "processes (DDP allows one forward pass with gradients per step)")
        self.net = self._prepare_network()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.amp == "fp16")
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
        check_finite(ckpt["model_weights"], str(path))
        load_state_dict_checked(self.model, ckpt["model_weights"], str(path))
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self._apply_lr()
        self.iteration = int(ckpt["iteration"] if "iteration" in ckpt else ckpt.get("current_iter", 0))
        self.best = json.loads(ckpt.get("best", "null")) or self.best

    def _apply_lr(self) -> None:
        """The configured TRAIN.lr wins over the one in a resumed optimizer's state (said on one line)."""
        lr = float(self.cfg.TRAIN.lr)
        old = {float(group["lr"]) for group in self.optimizer.param_groups}
        if old != {lr}:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            print(f"note: learning rate {', '.join(f'{v:g}' for v in sorted(old))} from the checkpoint "
                  f"replaced by TRAIN.lr = {lr:g}")

    # -- the network as it trains: memory format, compilation, several processes ----------
    def _prepare_network(self) -> torch.nn.Module:
        """channels_last (TRAIN.channels_last), cuDNN autotuning (TRAIN.cudnn_benchmark, CUDA),
        torch.compile (TRAIN.compile, with a notice where it cannot) and DDP across processes."""
        t = self.cfg.TRAIN
        if t.channels_last:
            fmt = torch.channels_last if getattr(self.model, "spatial_dims", 2) == 2 else torch.channels_last_3d
            self.model = self.model.to(memory_format=fmt)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(t.cudnn_benchmark)
        net = distributed.wrap(self.model, self.world, self.device, t.sync_bn)
        if t.compile:
            try:
                net = torch.compile(net)
            except Exception as err:  # no compiler, an unsupported platform or model
                print(f"notice: TRAIN.compile: torch.compile is not available here ({type(err).__name__}); "
                      f"training without it", file=sys.stderr)
        return net

    def _forward(self, x: torch.Tensor) -> dict:
        """The network's output, in TRAIN.amp precision; the loss arithmetic stays float32."""
        if self.cfg.TRAIN.channels_last:
            x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
        return run_model(self.net, x, self.cfg.TRAIN.amp)

    # -- one step ----------------------------------------------------------------------
    def step(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict]:
        """One optimisation step on a batch; returns the loss and its terms."""
        x, labels = x.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        if self.cross_view is not None:
            out, out2 = self.cross_view(self._forward, x, labels, self.iteration)
        else:
            out, out2 = self._forward(x), None
        loss, parts = self.loss(out, labels, out2)
        if self.world.size == 1:  # across processes the averaged gradient tells every rank at once
            self._stop_unless_finite(loss, parts, "loss")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
        if not self.scaler.is_enabled():  # fp16: the scaler skips steps with overflowing gradients
            self._stop_unless_finite(grad_norm, parts, "gradient")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach()), parts

    def _stop_unless_finite(self, value: torch.Tensor, parts: dict, what: str) -> None:
        """A NaN or infinite loss or gradient ends the run; the checkpoints keep the last
        finite weights (they are saved only from finite ones)."""
        if not torch.isfinite(value):
            terms = " ".join(f"{k}={v:.4g}" for k, v in parts.items())
            raise PEARunError(f"iteration {self.iteration + 1}: the {what} is not finite ({terms}); training "
                              f"stopped, {self.run_dir} keeps the checkpoints of the last finite weights "
                              f"(lower TRAIN.lr?)")

    def _save(self, name: str) -> None:
        """Save a checkpoint of the run, never of non-finite weights."""
        if not self._finite_weights():
            raise PEARunError(f"iteration {self.iteration}: the weights are no longer finite; training stopped "
                              f"before writing {self.run_dir / name} (lower TRAIN.lr?)")
        save_checkpoint(self.run_dir / name, self.state())

    def _finite_weights(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.model.state_dict().values() if p.is_floating_point())

    # -- the loop ----------------------------------------------------------------------
    def _loader(self) -> torch.utils.data.DataLoader:
        """Batches from the current iteration on: sample indices i * batch ... are deterministic."""
        cfg, t = self.cfg, self.cfg.TRAIN
        dataset = self.reader.train_dataset(cfg, self.reader.load_split(cfg.DATA, "train"))
        self.train_size = len(dataset.samples)
        indices = distributed.sample_indices(self.iteration, t.iterations, self.batch, self.global_batch, self.world)
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.batch, sampler=indices,
            num_workers=cfg.DATA.num_workers, pin_memory=self.device.type == "cuda", worker_init_fn=worker_init,
            persistent_workers=False, drop_last=True)

    def _valid_samples(self) -> list:
        samples = self.reader.load_split(self.cfg.DATA, self.reader.VALID_SPLIT)
        limit = self.cfg.TRAIN.max_valid_images
        return samples[:limit] if limit else samples

    @contextmanager
    def _logs(self) -> Iterator:
        """The TensorBoard writer and a `note(line)` that appends to log.txt, both closed on exit
        (rank 0 only; the other ranks log nothing)."""
        from tensorboardX import SummaryWriter

        if not self.world.main:
            yield _Silent(), lambda line: None
            return
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
        scores, _ = validate(self.model, samples, self.cfg, self.offsets, self.device,
                             reported_metrics(self.cfg, self.reader))
        for k, v in scores.items():
            writer.add_scalar(f"valid/{k}", v, self.iteration)
        line = " ".join(f"{k}={v:.4f}" for k, v in scores.items())
        note(f"valid {self.iteration} {line}")
        score = scores[self.cfg.TRAIN.select_metric]
        if self._better(score) and self._finite_weights():
            self.best = {"score": score, "iteration": self.iteration, "scores": scores}
            self._save("best.ckpt")
        return line

    def _save_periodic(self) -> None:
        """model-%06d.ckpt (the authors' names, each kept unless TRAIN.keep_checkpoints says how
        many of the newest to keep) and last.ckpt, which --resume reads."""
        self._save(f"model-{self.iteration:06d}.ckpt")
        self._save("last.ckpt")
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
        if not valid_samples:
            print(f"warning: no validation samples: no validation scores and no best.ckpt, only "
                  f"last.ckpt every {t.save_every} iterations", file=sys.stderr)
        if self.world.main:
            remove_stale(self.run_dir)
        start = self.iteration
        with self._logs() as (writer, note):
            note(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} start at iteration {start} on {self.device}; "
                 f"{self.train_size} training, {len(valid_samples)} validation samples")
            self.model.train()
            bar = tqdm(loader, total=t.iterations - start, initial=0, desc=self.cfg.NAME, dynamic_ncols=True,
                       disable=not self.world.main)
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
                if not self.world.main:  # rank 0 alone validates and writes checkpoints
                    continue
                if valid_samples and (self.iteration % t.valid_every == 0 or last):
                    bar.write(f"[valid] iter {self.iteration}: {self._validate(valid_samples, writer, note)}")
                if self.iteration % t.save_every == 0 or last:
                    self._save_periodic()
            bar.close()
            note(f"# done: best {t.select_metric} {self.best['score']} at iteration {self.best['iteration']}")
        return self.best

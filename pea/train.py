"""The training engine: one loop for every data set (2D and 3D), built from parts (a network, a
loss, an optimiser, batches, and optionally a learning-rate schedule, the CCM's second view and
a validator), with validation, model selection, atomic checkpoints, exact resumption,
TensorBoard and text logs. `pea.settings.trainer` builds one from a config."""
from __future__ import annotations

import itertools
import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
from tqdm import tqdm

from pea import distributed
from pea.checkpoint import check_finite, load_checkpoint, save_checkpoint
from pea.errors import PEARunError
from pea.inference import PredictOptions, SegmentOptions, run_model, segment_sample
from pea.io import remove_stale
from pea.metrics import evaluate, summarize
from pea.models import load_state_dict_checked

LOWER_IS_BETTER = {"voi", "arand", "voi_split", "voi_merge", "abs_dic"}


@dataclass
class Validator:
    """Segments validation samples with the partitioners of `segment_options` and scores them
    (`pea.metrics.evaluate` with `metric_options`): the first partitioner's scores under the
    metrics' names, the others' prefixed with their name (lmc_voi). `select_metric` picks
    best.ckpt (lower is better for the LOWER_IS_BETTER scores) by `rule`: ``best`` (the single
    best score, the authors'), ``smoothed`` (the best mean of the last `window` scores: its
    latest checkpoint), ``last`` (the latest checkpoint), or ``auto`` (smoothed, or last when the
    samples hold fewer than `min_pixels` pixels: one score of a small split is noise). `samples`
    may be a function returning them, called once when they are first needed. `panels` samples
    are drawn (image | nearest affinities | segmentation | ground truth) when a folder is given."""

    samples: Sequence | Callable[[], Sequence]
    offsets: Sequence
    metrics: Sequence[str]
    select_metric: str
    predict_options: PredictOptions = PredictOptions()
    segment_options: SegmentOptions = SegmentOptions()
    metric_options: Mapping = field(default_factory=dict)
    rule: str = "best"
    window: int = 3
    min_pixels: int = 0
    panels: int = 0

    def load(self) -> int:
        """Read the samples (when given as a function); returns their number."""
        if callable(self.samples):
            self.samples = list(self.samples())
        return len(self.samples)

    def pixels(self) -> int:
        """The pixels (voxels) of the samples, at their original resolution."""
        return int(sum(math.prod(s.shape) for s in self.samples))

    def __call__(self, model: torch.nn.Module, device: torch.device,
                 panel_dir: Path | None = None) -> dict[str, float]:
        """The mean scores over the samples (panels of the first `panels` into `panel_dir`)."""
        self.load()
        was_training = model.training
        model.eval()
        rows = []
        for n, sample in enumerate(self.samples):
            out = segment_sample(model, sample, self.offsets, device=device, predict_options=self.predict_options,
                                 segment_options=self.segment_options)
            row = {"name": sample.name}
            for i, (method, seg) in enumerate(out["seg"].items()):
                scores = evaluate(seg, sample.gt, metrics=list(self.metrics), **self.metric_options)
                row.update({k if i == 0 else f"{method}_{k}": v for k, v in scores.items()})
            rows.append(row)
            if panel_dir is not None and n < self.panels:
                first = next(iter(out["seg"].values()))
                self._panel(Path(panel_dir) / f"{sample.name}.png", sample, out["affs"], first)
        model.train(was_training)
        return summarize(rows)[0]

    def _panel(self, path: Path, sample, affs, seg) -> None:
        """2D: the image (grey or RGB: other channel counts averaged); 3D: its middle section. The
        middle tile is the lowest nearest-offset affinity."""
        from pea.visualize import save_panel

        ndim = len(self.offsets[0])
        z = (slice(None),) if ndim == 2 else (affs.shape[1] // 2,)
        zs = () if ndim == 2 else (seg.shape[0] // 2,)
        image = sample.image[zs]
        image = image if image.shape[-1] in (1, 3) else image.mean(axis=-1, keepdims=True)
        save_panel(path, image, affs[(slice(0, ndim),) + z].min(axis=0), seg[zs], sample.gt[zs])

    def better(self, score: float, best: float | None) -> bool:
        if best is None:
            return True
        return score < best if self.select_metric in LOWER_IS_BETTER else score > best

    def rule_in_use(self) -> tuple[str, str]:
        """The rule that picks best.ckpt (`auto` resolved) and why ('' when not `auto`)."""
        if self.rule != "auto":
            return self.rule, ""
        if self.pixels() < self.min_pixels:
            return "last", f"auto: {self.pixels()} validation pixels < min_valid_pixels {self.min_pixels}"
        return "smoothed", f"auto: {self.pixels()} validation pixels >= min_valid_pixels {self.min_pixels}"

    def choose(self, history: Sequence[float], best: float | None) -> tuple[float, bool, str]:
        """Rank the latest of the `history` of select_metric scores: (its ranked score, whether
        its checkpoint becomes best.ckpt, why)."""
        rule, reason = self.rule_in_use()
        reason = f" ({reason})" if reason else ""
        if rule == "last":
            return history[-1], True, f"rule last: the latest evaluation{reason}"
        recent = history[-self.window:] if rule == "smoothed" else history[-1:]
        score = sum(recent) / len(recent)
        mean = f", the mean of the last {len(recent)} evaluations," if len(recent) > 1 else ""
        why = f"rule {rule}: {self.select_metric} {score:.4f}{mean} the best so far{reason}"
        return score, self.better(score, best), why


@dataclass(frozen=True)
class Every:
    """How often (in iterations) the trainer logs, validates and saves model-%06d.ckpt (and
    last.ckpt); `keep_checkpoints` None keeps every model-%06d.ckpt, N the newest N."""

    log: int = 10
    valid: int = 1000
    save: int = 1000
    keep_checkpoints: int | None = None


@dataclass(frozen=True)
class Speed:
    """amp: the network in off | bf16 | fp16 (fp16 with a gradient scaler; the loss stays
    float32); channels_last memory format; cudnn_benchmark (CUDA); compile (torch.compile, with
    a notice and eager mode where it cannot); sync_bn (SyncBatchNorm across CUDA processes)."""

    amp: str = "off"
    channels_last: bool = False
    cudnn_benchmark: bool = True
    compile: bool = False
    sync_bn: bool = False


def lr_factor(iteration: int, total: int, schedule: str = "constant", warmup: int = 0, power: float = 0.9,
              final: float = 0.0) -> float:
    """The learning rate of `iteration` (0-based) as a fraction of the base rate: ``constant``
    (the authors'), or after a linear warm-up over `warmup` iterations ``cosine`` decay or
    ``poly`` decay ((1 - t) ** power), both from 1 down to `final` at `total`."""
    if iteration < warmup:
        return (iteration + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = min(1.0, (iteration - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * t)) if schedule == "cosine" else (1 - t) ** power
    return final + (1 - final) * shape


def lr_scheduler(optimizer: torch.optim.Optimizer, total: int, schedule: str = "constant", warmup: int = 0,
                 power: float = 0.9, final: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-iteration schedule of `lr_factor`; None for a constant rate without warm-up."""
    if schedule == "constant" and warmup == 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(i, total, schedule, warmup, power, final))


class _Silent:
    """A TensorBoard writer that writes nothing (ranks other than 0)."""

    def add_scalar(self, *args, **kwargs) -> None:
        return None


class Trainer:
    """Trains `model` with `loss` and `optimizer` on batches of (input, labels) and returns the
    best validation scores from `run()`.

    train_loader: batches, or a function of the first iteration returning them (a resumed run
        continues the sample order exactly); an iterable is cycled until `iterations`.
    scheduler: a learning-rate scheduler stepped every iteration (None: a constant rate).
    cross_view: the CCM's `pea.ccm.CrossView` (None: one view, no CCM term).
    validator: scores the network every `every.valid` iterations and picks best.ckpt (None:
        no validation; last.ckpt and model-%06d.ckpt only).
    config: stored in every checkpoint (the project's checkpoints carry their config).
    """

    def __init__(self, model: torch.nn.Module, loss: Callable, optimizer: torch.optim.Optimizer,
                 train_loader: Iterable | Callable[[int], Iterable], *, run_dir: str | Path, iterations: int,
                 scheduler=None, cross_view=None, validator: Validator | None = None,
                 device: torch.device | None = None, speed: Speed = Speed(), every: Every = Every(),
                 world: distributed.World | None = None, config: Mapping | None = None, name: str = "train"):
        self.world = world or distributed.world()
        self.device = distributed.start(self.world, device or torch.device("cpu"))
        self.model = model.to(self.device)
        self.loss, self.optimizer, self.scheduler = loss, optimizer, scheduler
        self.train_loader, self.cross_view, self.validator = train_loader, cross_view, validator
        self.run_dir, self.iterations, self.name = Path(run_dir), int(iterations), name
        self.speed, self.every, self.config = speed, every, dict(config or {})
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        self.net = self._prepare_network()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=speed.amp == "fp16")
        self.iteration = 0
        self.best = {"score": None, "iteration": 0, "scores": {}}

    def say(self, line: str, err: bool = False) -> None:
        """Print on rank 0 only."""
        if self.world.main:
            print(line, file=sys.stderr if err else sys.stdout)

    # -- checkpoints -------------------------------------------------------------------
    def state(self) -> dict:
        state = {"model_weights": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "iteration": self.iteration, "config": self.config, "best": json.dumps(self.best)}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint. An official one (weights and `current_iter` only)
        continues, as the authors' code does, from its iteration with a fresh optimizer;
        its network must be the configured one (MODEL.backbone resunet_official, ...)."""
        ckpt = load_checkpoint(path)
        check_finite(ckpt["model_weights"], str(path))
        load_state_dict_checked(self.model, ckpt["model_weights"], str(path))
        self.iteration = int(ckpt["iteration"] if "iteration" in ckpt else ckpt.get("current_iter", 0))
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None:
            if "scheduler" in ckpt:
                self.scheduler.load_state_dict(ckpt["scheduler"])
            else:  # the schedule's place at this iteration
                self.scheduler.last_epoch = self.iteration - 1
                self.scheduler.step()
        self._keep_base_lr()
        self.best = json.loads(ckpt.get("best", "null")) or self.best

    def _keep_base_lr(self) -> None:
        """The learning rate given (TRAIN.lr) wins over a resumed optimizer's (said on one line)."""
        groups = self.optimizer.param_groups
        old = [g.get("initial_lr", g["lr"]) if self.scheduler is not None else g["lr"] for g in groups]
        if old == self.base_lrs:
            return
        for g, was, base in zip(groups, old, self.base_lrs):
            g["lr"] = g["lr"] * base / was if was else base
            if "initial_lr" in g:
                g["initial_lr"] = base
        if self.scheduler is not None:
            self.scheduler.base_lrs = list(self.base_lrs)
        self.say(f"note: learning rate {', '.join(f'{v:g}' for v in sorted(set(old)))} from the checkpoint "
                 f"replaced by {', '.join(f'{v:g}' for v in sorted(set(self.base_lrs)))} (TRAIN.lr)")

    # -- the network as it trains: memory format, compilation, several processes ----------
    def _prepare_network(self) -> torch.nn.Module:
        s = self.speed
        if s.channels_last:
            fmt = torch.channels_last if getattr(self.model, "spatial_dims", 2) == 2 else torch.channels_last_3d
            self.model = self.model.to(memory_format=fmt)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(s.cudnn_benchmark)
        net = distributed.wrap(self.model, self.world, self.device, s.sync_bn)
        if s.compile:
            try:
                net = torch.compile(net)
            except Exception as err:  # no compiler, an unsupported platform or model
                self.say(f"notice: TRAIN.compile: torch.compile is not available here ({type(err).__name__}); "
                         f"training without it", err=True)
        return net

    def _forward(self, x: torch.Tensor) -> dict:
        """The network's output, in the `speed.amp` precision; the loss arithmetic stays float32."""
        if self.speed.channels_last:
            x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
        return run_model(self.net, x, self.speed.amp)

    # -- one step ----------------------------------------------------------------------
    def step(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        """One optimisation step on a batch. Returns the loss, its terms and whether loss and
        gradient were finite, all as tensors on the device: nothing here waits for the device
        (the log interval reads them back)."""
        x, labels = x.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        if self.cross_view is not None:
            out, out2 = self.cross_view(self._forward, x, labels, self.iteration)
        else:
            out, out2 = self._forward(x), None
        loss, parts = self.loss(out, labels, out2)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
        # fp16: the scaler skips steps with overflowing gradients, which are then no fault
        finite = torch.isfinite(loss) & (torch.isfinite(grad_norm) | self.scaler.is_enabled())
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), parts, finite

    def _stop_unless_finite(self, finite: torch.Tensor, first: int, parts: Mapping[str, float]) -> None:
        """A NaN or infinite loss or gradient since iteration `first` ends the run; the
        checkpoints keep the last finite weights (they are saved only from finite ones)."""
        if not bool(finite):
            terms = " ".join(f"{k}={v:.4g}" for k, v in parts.items())
            raise PEARunError(f"iterations {first}-{self.iteration}: the loss or gradient is not finite ({terms}); "
                              f"training stopped, {self.run_dir} keeps the checkpoints of the last finite weights "
                              f"(lower TRAIN.lr?)")

    def _save(self, name: str) -> None:
        """Save a checkpoint of the run, never of non-finite weights."""
        if not self._finite_weights():
            raise PEARunError(f"iteration {self.iteration}: the weights are no longer finite; training stopped "
                              f"before writing {self.run_dir / name} (lower TRAIN.lr?)")
        save_checkpoint(self.run_dir / name, self.state())

    def _finite_weights(self) -> bool:
        values = [p for p in self.model.state_dict().values() if p.is_floating_point()]
        return bool(torch.stack([torch.isfinite(p).all() for p in values]).all()) if values else True

    # -- the loop ----------------------------------------------------------------------
    def _batches(self) -> Iterator:
        """The batches of iterations self.iteration + 1 ... iterations."""
        source = self.train_loader(self.iteration) if callable(self.train_loader) else self.train_loader
        if not callable(self.train_loader):
            source = itertools.chain.from_iterable(itertools.repeat(source))
        return itertools.islice(source, max(0, self.iterations - self.iteration))

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

    def _validate(self, writer, note) -> str:
        """Score the network, log the scores, keep best.ckpt (as the validator's rule says, with
        the reason in the log); returns the scores' line."""
        panels = self.run_dir / "panels" / f"iter_{self.iteration:06d}" if self.validator.panels else None
        scores = self.validator(self.model, self.device, panels)
        for k, v in scores.items():
            writer.add_scalar(f"valid/{k}", v, self.iteration)
        line = " ".join(f"{k}={v:.4f}" for k, v in scores.items())
        note(f"valid {self.iteration} {line}")
        history = self.best.get("history", []) + [scores[self.validator.select_metric]]
        score, chosen, why = self.validator.choose(history, self.best["score"])
        self.best["history"] = history
        if chosen and self._finite_weights():
            self.best.update(score=score, iteration=self.iteration, scores=scores, why=why)
            self._save("best.ckpt")
            note(f"best.ckpt: iteration {self.iteration}, {why}")
        return line

    def _save_periodic(self) -> None:
        """model-%06d.ckpt (the authors' names, the newest `every.keep_checkpoints` kept, or
        all) and last.ckpt, which --resume reads."""
        self._save(f"model-{self.iteration:06d}.ckpt")
        self._save("last.ckpt")
        keep = self.every.keep_checkpoints
        if keep is not None:
            saved = sorted((p for p in self.run_dir.glob("model-*.ckpt") if p.stem[6:].isdigit()),
                           key=lambda p: int(p.stem[6:]))
            for old in saved[:max(0, len(saved) - int(keep))]:
                old.unlink()

    def _log(self, writer, note, losses: list, parts: list[dict], finite: torch.Tensor, first: int) -> dict:
        """Read the interval's losses back from the device once, stop on a non-finite value,
        log the means; returns them ({"total": ..., term: ...})."""
        rows = torch.stack([torch.stack([total, *terms.values()]) for total, terms in zip(losses, parts)])
        means = dict(zip(["total", *parts[-1]], rows.float().mean(0).tolist()))
        self._stop_unless_finite(finite, first, means)
        for k, v in means.items():
            writer.add_scalar(f"loss/{k}", v, self.iteration)
        note(f"iter {self.iteration} loss {means['total']:.5f} "
             + " ".join(f"{k} {v:.5f}" for k, v in means.items() if k != "total"))
        return means

    def run(self) -> dict:
        if self.world.main:
            remove_stale(self.run_dir)
        if self.validator is not None and self.world.main and not self.validator.load():
            self.say(f"warning: no validation samples: no validation scores and no best.ckpt, only last.ckpt "
                     f"every {self.every.save} iterations", err=True)
            self.validator = None
        start = self.iteration
        with self._logs() as (writer, note):
            note(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} start at iteration {start} on {self.device}, "
                 f"{self.world.size} process(es)")
            if self.validator is not None:
                rule, why = self.validator.rule_in_use()
                note(f"# best.ckpt: rule {rule} on {self.validator.select_metric}" + (f" ({why})" if why else ""))
            self.model.train()
            bar = tqdm(self._batches(), total=self.iterations - start, desc=self.name, dynamic_ncols=True,
                       disable=not self.world.main)
            losses, parts, finite, first = [], [], torch.ones((), dtype=torch.bool, device=self.device), start + 1
            for x, labels in bar:
                self.iteration += 1
                loss, terms, ok = self.step(x, labels)
                losses.append(loss)
                parts.append(terms)
                finite = finite & ok
                last = self.iteration == self.iterations
                if self.iteration % self.every.log == 0 or last:
                    means = self._log(writer, note, losses, parts, finite, first)
                    bar.set_postfix(loss=f"{means['total']:.4f}", best=self.best["score"])
                    losses, parts, first = [], [], self.iteration + 1
                if not self.world.main:  # rank 0 alone validates and writes checkpoints
                    continue
                if self.validator is not None and (self.iteration % self.every.valid == 0 or last):
                    bar.write(f"[valid] iter {self.iteration}: {self._validate(writer, note)}")
                if self.iteration % self.every.save == 0 or last:
                    self._save_periodic()
            bar.close()
            why = f", {self.best['why']}" if self.best.get("why") else ""
            note("# done: no validation, no best.ckpt" if self.validator is None
                 else f"# done: best.ckpt is iteration {self.best['iteration']}{why}")
        return self.best

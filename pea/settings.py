"""The one place where a config becomes arguments: each function reads the sections it names
and returns the keyword arguments, options or objects of the core (`pea.affinity`,
`pea.inference`, `pea.windows`, `pea.losses`, `pea.ccm`), which never see a config.
Entry points, `pea` commands and the trainer's builder call these."""
from __future__ import annotations

from functools import partial
from typing import Mapping, Sequence

from pea.affinity import Offset, offsets_from_shifts
from pea.config import Config, find_config, load_config, make_config
from pea.ccm import CrossView, official_view, second_view
from pea.errors import PEAInputError
from pea.inference import PredictOptions, SegmentOptions
from pea.losses import PEALoss


def checkpoint_config(ckpt: Mapping, name: str | None, source: str) -> Config:
    """The config of a run with checkpoint `ckpt`: the one `name` names (a shipped config or a
    .yaml path), else the checkpoint's stored one (the authors' checkpoints carry none)."""
    if name:
        return load_config(find_config(name))
    stored = ckpt.get("config")
    if isinstance(stored, Mapping):
        return make_config(stored, f"{source} (stored config)")
    raise PEAInputError(f"{source}: the checkpoint carries no config (the authors' format); "
                        f"name one (--config, or config= of pea.load_model: cvppp, bbbc039v1, ac3ac4 or a "
                        f".yaml path)")


def offsets(data: Mapping) -> tuple[list[Offset], int]:
    """Offsets and the number of channels per shift group from a DATA section: DATA.offsets
    with DATA.group_size, or DATA.shifts with DATA.neighbor."""
    if data.get("offsets"):
        found = [tuple(int(v) for v in o) for o in data["offsets"]]
        ndim = len(found[0])
        if any(len(o) != ndim for o in found):
            raise PEAInputError(f"DATA.offsets: all offsets need {ndim} entries, got {found}")
        group = data.get("group_size")
        if not isinstance(group, int) or isinstance(group, bool) or group < 1:
            raise PEAInputError(f"DATA.group_size = {group!r}: with DATA.offsets, give the number of "
                                f"offsets per shift group (a positive integer)")
        return found, group
    if not data.get("shifts"):
        raise PEAInputError("DATA: set either DATA.shifts (with DATA.neighbor) or DATA.offsets")
    neighbor = int(data.get("neighbor", 4))
    return offsets_from_shifts(data["shifts"], neighbor), 2 if neighbor == 4 else 4


def predict_options(cfg: Mapping) -> PredictOptions:
    """DATA.normalize, padded_size, pad_mode and TEST.window, overlap, window_blend, context,
    window_batch, amp."""
    data, test = cfg["DATA"], cfg["TEST"]
    return PredictOptions(normalize=data["normalize"], padded_size=data["padded_size"], pad_mode=data["pad_mode"],
                          window=test["window"], overlap=test["overlap"], blend=test["window_blend"],
                          context=test["context"], batch=test["window_batch"], amp=test["amp"])


def segment_options(test: Mapping, methods: Sequence[str] | None = None) -> SegmentOptions:
    """The TEST section's partitioners (or `methods`), strides, graph, merging, mask, the Mutex
    Watershed's numbering and when the padding is cropped."""
    return SegmentOptions(methods=tuple(methods or test["partitioners"]), strides=test["strides"],
                          fragments=test["fragments"], waterz_threshold=test["waterz_threshold"],
                          mutex_numbering=test["mutex_numbering"],
                          small_objects=tuple(test["small_objects"] or ()), merge_rule=test["merge_rule"],
                          mask=test["mask"], fg_min_size=test["fg_min_size"], fg_connectivity=test["fg_connectivity"],
                          crop_padding=test["crop_padding"])


def metric_options(test: Mapping) -> dict:
    """`pea.metrics.evaluate`'s keyword arguments from a TEST section (TEST.aji_ids)."""
    return {"aji_ids": test["aji_ids"]}


def blockwise_job(cfg: Mapping, **fields):
    """A `pea.blockwise.Job` with the DATA and TEST sections' offsets, windows, normalisation,
    fragments and strides; `fields` give the rest (input, output, checkpoint, shape, block, ...)."""
    from pea.blockwise import Job

    test = cfg["TEST"]
    return Job(offsets=offsets(cfg["DATA"])[0], window=test["window"], overlap=test["overlap"],
               blend=test["window_blend"], context=test["context"], normalize=cfg["DATA"]["normalize"],
               fragments=test["fragments"], strides=test["strides"], **fields)


def loss(cfg: Mapping, offsets_: Sequence[Offset], group_size: int) -> PEALoss:
    """`PEALoss` with the LOSS section's terms, weights and rules."""
    keys = ("scm", "ccm", "epm", "scm_weight", "ccm_weight", "epm_weight", "epm_groups", "background",
            "normalize", "outside_pairs", "epm_outside_pairs", "weight_clip", "mask_weight", "fg_weighting",
            "fg_class_weight")
    return PEALoss(offsets_, group_size, **{k: cfg["LOSS"][k] for k in keys})


def project_view_options(lo: Mapping) -> dict:
    """`pea.ccm.second_view`'s keyword arguments from a LOSS section's ccm_* keys."""
    return {"intensity": lo["ccm_intensity"], "mask_prob": lo["ccm_mask_prob"], "blank": lo["ccm_blank"],
            "flip": lo["ccm_flip"]}


def official_view_options(lo: Mapping) -> dict:
    """`pea.ccm.official_view`'s keyword arguments from a LOSS section's ccm_* keys."""
    return {"intensity": lo["ccm_intensity"], "intensity_prob": lo["ccm_intensity_prob"],
            "intensity_draw": lo["ccm_intensity_draw"], "gamma": lo["ccm_gamma"], "boxes": lo["ccm_boxes"],
            "box_min": lo["ccm_box_min"], "box_max": lo["ccm_box_max"], "blank": lo["ccm_blank"],
            "fill": lo["ccm_fill"], "min_foreground": lo["ccm_min_foreground"], "flip": lo["ccm_flip"],
            "transpose": lo["ccm_transpose"]}


def cross_view(lo: Mapping, seed: int, normalize: str | None) -> CrossView | None:
    """The CCM's second view of a LOSS section (ccm_view, ccm_pass, ccm_detach and the view's
    keys), seeded by `seed` (TRAIN.seed), the input normalised as `normalize` (DATA.normalize);
    None when LOSS.ccm is off."""
    if not lo["ccm"]:
        return None
    if lo["ccm_view"] == "official":  # on the [0, 1] image; DATA.normalize null is the unit normalisation
        view, unit = partial(official_view, **official_view_options(lo)), normalize or "unit"
    else:
        view, unit = partial(second_view, **project_view_options(lo)), None
    return CrossView(view, seed, normalize=unit, separate=lo["ccm_pass"] == "separate", detach=lo["ccm_detach"])


def seeded_model(model_section: Mapping, seed: int):
    """The network of a MODEL section with its initial weights drawn from `seed` (the global
    generators are left as they were)."""
    import torch

    from pea.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model_section)


def lr_schedule(cfg: Mapping, optimizer):
    """TRAIN.lr_schedule (constant | cosine | poly), warmup, lr_power, lr_final."""
    from pea.train import lr_scheduler

    t = cfg["TRAIN"]
    return lr_scheduler(optimizer, t["iterations"], t["lr_schedule"], t["warmup"], t["lr_power"], t["lr_final"])


def train_loader(cfg: Mapping, reader, world, batch: int, global_batch: int, device):
    """A function of the first iteration returning the DataLoader of the training split (read
    when called): sample indices i * batch ... are deterministic, so a resumed run continues
    the order."""
    import torch

    from pea import distributed
    from pea.threads import worker_init

    def loader(first: int):
        dataset = reader.train_dataset(cfg, reader.load_split(cfg["DATA"], "train"))
        indices = distributed.sample_indices(first, cfg["TRAIN"]["iterations"], batch, global_batch, world)
        return torch.utils.data.DataLoader(dataset, batch_size=batch, sampler=indices,
                                           num_workers=cfg["DATA"]["num_workers"], pin_memory=device.type == "cuda",
                                           worker_init_fn=worker_init, persistent_workers=False, drop_last=True)

    return loader


VALID_PANELS = 4  # validation samples drawn as panels at every evaluation (RUN/panels/iter_N/)


def validator(cfg: Mapping, reader, offsets_: Sequence[Offset]):
    """Validation on the reader's validation split (TRAIN.max_valid_images of it, read when
    first needed) with TRAIN.valid_partitioner (and TRAIN.valid_extra_partitioners, waterz
    scoring merges by TRAIN.valid_waterz_scoring), scored by the reported metrics; best.ckpt
    chosen by TRAIN.select_rule, select_window and min_valid_pixels."""
    from dataclasses import replace

    from pea.config import reported_metrics
    from pea.train import Validator

    t = cfg["TRAIN"]
    methods = list(dict.fromkeys([t["valid_partitioner"], *t["valid_extra_partitioners"]]))

    def samples():
        return reader.load_split(cfg["DATA"], reader.VALID_SPLIT)[: t["max_valid_images"] or None]

    segmenting = replace(segment_options(cfg["TEST"], methods), waterz_scoring=t["valid_waterz_scoring"])
    return Validator(samples, offsets_, reported_metrics(cfg, reader), t["select_metric"],
                     predict_options(cfg), segmenting, metric_options(cfg["TEST"]),
                     rule=t["select_rule"], window=t["select_window"], min_pixels=t["min_valid_pixels"],
                     panels=VALID_PANELS)


def trainer(cfg: Mapping, run_dir, device=None):
    """The `pea.train.Trainer` a config describes: the seeded network, Adam (TRAIN.lr, betas,
    eps, weight_decay, amsgrad), the schedule, the loss, the CCM view, the training batches and
    the validator, on TRAIN.device (or `device`), across torchrun's processes."""
    import torch

    from pea import distributed
    from pea.data import get_reader
    from pea.inference import select_device
    from pea.train import Every, Speed, Trainer

    t, lo = cfg["TRAIN"], cfg["LOSS"]
    if t["select_metric"] is None:
        raise PEAInputError("TRAIN.select_metric is not set: name the validation score that picks best.ckpt")
    world = distributed.world()
    if world.size > 1 and lo["ccm"] and lo["ccm_pass"] == "separate" and not lo["ccm_detach"]:
        raise PEAInputError("LOSS.ccm_pass separate needs LOSS.ccm_detach true when training on several "
                            "processes (DDP allows one forward pass with gradients per step)")
    batch, global_batch = distributed.batch_sizes(t["batch_size"], t["batch_scope"], world)
    device = distributed.start(world, device or select_device(t["device"], quiet=not world.main))
    reader = get_reader(cfg["DATA"]["dataset"])
    found, group = offsets(cfg["DATA"])
    model = seeded_model(cfg["MODEL"], t["seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"],
                                 weight_decay=t["weight_decay"], amsgrad=t["amsgrad"])
    return Trainer(model, loss(cfg, found, group), optimizer,
                   train_loader(cfg, reader, world, batch, global_batch, device),
                   run_dir=run_dir, iterations=t["iterations"], scheduler=lr_schedule(cfg, optimizer),
                   cross_view=cross_view(lo, t["seed"], cfg["DATA"]["normalize"]), validator=validator(cfg, reader, found) if world.main else None,
                   device=device, world=world, config=cfg.to_dict(), name=cfg["NAME"] or "train",
                   speed=Speed(t["amp"], t["channels_last"], t["cudnn_benchmark"], t["compile"], t["sync_bn"]),
                   every=Every(t["log_every"], t["valid_every"], t["save_every"], t["keep_checkpoints"]))

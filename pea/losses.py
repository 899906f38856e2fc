"""PEA training loss: SCM, CCM and EPM affinity losses plus the optional foreground head
(docs/method.md sections 2 and 4)."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from pea.affinity import Offset, affinity_loss, nearest_downsample


class PEALoss:
    """The loss for a batch of labels and network outputs, as LOSS configures it.

    `out` and `out2` are network outputs (dicts with "embeddings", full resolution first, and
    "foreground"); `out2` is the CCM view with its flips already undone (`pea.ccm.CrossView`).
    Targets follow LOSS.background (see `pea.affinity`).
    """

    def __init__(self, loss_cfg: Mapping, offsets: Sequence[Offset], group_size: int):
        self.cfg = loss_cfg
        self.offsets = list(offsets)
        self.group_size = group_size
        self.clip = tuple(loss_cfg["weight_clip"])
        self.background = loss_cfg["background"]
        self.normalize = loss_cfg["normalize"]
        self.outside = loss_cfg["outside_pairs"]

    def level_offsets(self) -> list[list[Offset]]:
        """The offsets supervised at 1/2, 1/4, ...: the first `epm_groups[k]` shift groups."""
        return [self.offsets[: groups * self.group_size] for groups in self.cfg["epm_groups"]]

    def _affinity(self, emb: torch.Tensor, labels: torch.Tensor, offsets: Sequence[Offset],
                  other: torch.Tensor | None = None) -> torch.Tensor:
        return affinity_loss(emb, labels, offsets, self.clip, other=other, background=self.background,
                             normalize=self.normalize, outside=self.outside)

    def foreground(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the foreground head, its class weights [1, fg_class_weight]
        (``fixed``) or, as the authors', the batch's foreground and background pixel counts
        (``batch``: background weighs #foreground, foreground #background; the rarer class
        counts more)."""
        target = (labels > 0).long()
        if self.cfg["fg_weighting"] == "batch":
            fg = target.sum()
            weight = torch.stack([fg, target.numel() - fg]).float().clamp(min=1)
        else:
            weight = torch.tensor([1.0, self.cfg["fg_class_weight"]], device=labels.device)
        return F.cross_entropy(logits, target, weight=weight)

    def __call__(self, out: Mapping, labels: torch.Tensor, out2: Mapping | None = None) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        emb = out["embeddings"]
        parts: dict[str, torch.Tensor] = {}
        if cfg["scm"]:
            parts["scm"] = cfg["scm_weight"] * self._affinity(emb[0], labels, self.offsets)
        if cfg["ccm"] and out2 is not None:
            parts["ccm"] = cfg["ccm_weight"] * self._affinity(emb[0], labels, self.offsets, out2["embeddings"][0])
        if cfg["epm"]:
            total = emb[0].new_zeros(())
            for e, offsets in zip(emb[1:], self.level_offsets()):
                total = total + self._affinity(e, nearest_downsample(labels, e.shape[2:]), offsets)
            parts["epm"] = cfg["epm_weight"] * total
        if cfg["mask_weight"] > 0 and out.get("foreground") is not None:
            parts["fg"] = cfg["mask_weight"] * self.foreground(out["foreground"], labels)
        if not parts:
            raise ValueError("LOSS: every loss term is switched off (scm, ccm, epm, mask_weight)")
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

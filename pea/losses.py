"""PEA training loss: SCM, CCM and EPM affinity losses plus the optional foreground head
(docs/method.md sections 2 and 4)."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from pea.affinity import Offset, affinity_loss, nearest_downsample


class PEALoss:
    """The loss for a batch of labels and network outputs.

    `out` and `out2` are network outputs (dicts with "embeddings", full resolution first, and
    "foreground"); `out2` is the CCM view with its flips already undone (`pea.ccm.CrossView`).

    offsets: the affinity offsets, in shift groups of `group_size` channels (shortest first).
    scm, ccm, epm: the three affinity terms (docs/method.md section 2), each times its weight;
        `epm_groups[k]` shift groups are supervised at 1/2, 1/4, ... of the resolution.
    background: target rule of background pixels (same | none, see `pea.affinity`);
    normalize, outside_pairs, weight_clip: the affinity loss's normaliser (mean | width |
        pairs), class-weight fraction (ignore | one | zero | foreground) and clip
        (`pea.affinity.affinity_loss`); epm_outside_pairs: the fraction's rule on the EPM levels
        (None: as outside_pairs).
    mask_weight: weight of the foreground head's cross-entropy (0: not trained), its class
        weights ``fixed`` [1, fg_class_weight] or from the batch's pixel counts (``batch``).
    """

    def __init__(self, offsets: Sequence[Offset], group_size: int, *, scm: bool = True, ccm: bool = True,
                 epm: bool = True, scm_weight: float = 1.0, ccm_weight: float = 1.0, epm_weight: float = 1.0,
                 epm_groups: Sequence[int] = (4, 3, 2, 1), background: str = "same", normalize: str = "mean",
                 outside_pairs: str = "ignore", epm_outside_pairs: str | None = None,
                 weight_clip: Sequence[float] = (0.05, 0.99), mask_weight: float = 0.0,
                 fg_weighting: str = "fixed", fg_class_weight: float = 10.0):
        self.offsets = list(offsets)
        self.group_size = int(group_size)
        self.weights = {"scm": scm_weight if scm else 0.0, "ccm": ccm_weight if ccm else 0.0,
                        "epm": epm_weight if epm else 0.0, "fg": float(mask_weight)}
        self.terms = {"scm": scm, "ccm": ccm, "epm": epm, "fg": mask_weight > 0}
        self.epm_groups = list(epm_groups)
        self.clip = tuple(weight_clip)
        self.background = background
        self.normalize = normalize
        self.outside = outside_pairs
        self.epm_outside = epm_outside_pairs or outside_pairs
        self.fg_weighting = fg_weighting
        self.fg_class_weight = float(fg_class_weight)

    def level_offsets(self) -> list[list[Offset]]:
        """The offsets supervised at 1/2, 1/4, ...: the first `epm_groups[k]` shift groups."""
        return [self.offsets[: groups * self.group_size] for groups in self.epm_groups]

    def _affinity(self, emb: torch.Tensor, labels: torch.Tensor, offsets: Sequence[Offset],
                  other: torch.Tensor | None = None, outside: str | None = None) -> torch.Tensor:
        return affinity_loss(emb, labels, offsets, self.clip, other=other, background=self.background,
                             normalize=self.normalize, outside=outside or self.outside)

    def foreground(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the foreground head, its class weights [1, fg_class_weight]
        (``fixed``) or, as the authors', the batch's foreground and background pixel counts
        (``batch``: background weighs #foreground, foreground #background; the rarer class
        counts more)."""
        target = (labels > 0).long()
        if self.fg_weighting == "batch":
            fg = target.sum()
            weight = torch.stack([fg, target.numel() - fg]).float().clamp(min=1)
        else:
            weight = torch.tensor([1.0, self.fg_class_weight], device=labels.device)
        return F.cross_entropy(logits, target, weight=weight)

    def _epm(self, emb: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        total = emb[0].new_zeros(())
        for e, offsets in zip(emb[1:], self.level_offsets()):
            total = total + self._affinity(e, nearest_downsample(labels, e.shape[2:]), offsets,
                                           outside=self.epm_outside)
        return total

    def __call__(self, out: Mapping, labels: torch.Tensor, out2: Mapping | None = None) -> tuple[torch.Tensor, dict]:
        """(total loss, {term: loss tensor}); the terms stay on the device (no synchronisation)."""
        emb = out["embeddings"]
        compute = {
            "scm": lambda: self._affinity(emb[0], labels, self.offsets),
            "ccm": lambda: self._affinity(emb[0], labels, self.offsets, out2["embeddings"][0]),
            "epm": lambda: self._epm(emb, labels),
            "fg": lambda: self.foreground(out["foreground"], labels),
        }
        present = {"ccm": out2 is not None, "fg": out.get("foreground") is not None}
        parts = {k: self.weights[k] * fn() for k, fn in compute.items() if self.terms[k] and present.get(k, True)}
        if not parts:
            raise ValueError("every loss term is switched off (scm, ccm, epm, mask_weight)")
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}

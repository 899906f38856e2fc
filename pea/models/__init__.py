"""The networks: every backbone maps an image (N, C, H, W) or volume (N, C, Z, Y, X) to

    {"embeddings": [5 raw embeddings (N, emb_dim, *spatial), full resolution first],
     "foreground": (N, 2, *spatial) logits or None}

Level k of the pyramid has the input's shape with the in-plane axes floor-halved k times
((H >> k, W >> k) in 2D, (Z, Y >> k, X >> k) in 3D; see `pea.models.blocks`). Every model
has `spatial_dims` (2 or 3) and `min_size` (smallest accepted spatial shape: 16 in-plane,
any z). Training (batch-norm statistics) with batch 1 needs more than one 1/16-level pixel
for resnet* and superhuman: use in-plane sizes >= 32 (or Z >= 2 in 3D) there.

Backbones: resunet (2D, paper's best, 4.71M), resnet50 / resnet101 (2D, 15.36M / 34.35M),
superhuman (3D, Lee et al. 2017), mala (3D, Funke et al.), and the authors' own layouts that
load their released checkpoints: resunet_official (2D) and superhuman_official (3D), see
`pea.models.official`. A new backbone is one module with a `@register("name")` builder plus
its import below.
"""
from pea.models.registry import DEFAULTS, MODELS, build_model, register
from pea.models.weights import PretrainedReport, load_pretrained, load_state_dict_checked
from pea.models import mala, official, resnet, resunet, superhuman  # noqa: F401  (registers the backbones)
from pea.models.official import official_model_config, strip_module_prefix

__all__ = [
    "DEFAULTS",
    "MODELS",
    "PretrainedReport",
    "build_model",
    "load_pretrained",
    "load_state_dict_checked",
    "official_model_config",
    "register",
    "strip_module_prefix",
]

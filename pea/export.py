"""`pea export`: a trained network as a bioimage.io model package (model spec 0.5.12), which
Fiji/deepImageJ, ilastik, QuPath, napari and the BioImage Model Zoo read (docs/export.md).

    pea export --model CKPT [--config NAME|PATH] --output NAME.zip [--name TEXT] [--author NAME]...
               [--license SPDX] [--cite-doi DOI] [--cite-url URL] [--test-input FILE] [--test-shape N...]

The package holds: the network from image to affinities (`pea.models.affinity_net.AffinityNet`)
as TorchScript and as a state dict; the input `input` (batch, channel, [z,] y, x), float32,
in-plane sizes multiples of 16, with the config's percentile scaling (scale_range + clip) and
input normalisation (scale_linear) as bioimage.io preprocessing; the output `affinities`
(one channel per offset, ReLU'd cosine similarities in [0, 1]) and, with a foreground head,
`foreground` (probability); test tensors computed by the project's own inference on a
look-alike sample (or --test-input); README.md, cover.png, and in `config.pea` the offsets,
the working scale and the config's segmentation settings. What preprocessing cannot say
(resizing by DATA.scale, grey to colour channels) the package README states. The package
names no URL unless --cite-url is given, so `bioimageio test` runs offline.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from pea.errors import PEAInputError
from pea.io import atomic_write

FORMAT_VERSION = "0.5.12"  # the bioimage.io model spec written; bioimageio.spec is pinned to it (extra `bioimageio`)
EXTRA = 'pip install "pea[bioimageio]"'
CITATION = ("Huang W., Deng S., Chen C., Fu X., Xiong Z.: Learning to Model Pixel-Embedded Affinity for "
            "Homogeneous Instance Segmentation. AAAI 2022.")
INPLANE_STEP = 16  # the pyramid halves in-plane axes four times
DEFAULT_TEST_SHAPE = {2: (128, 128), 3: (8, 96, 96)}
FILES = {"state": "weights.pt", "torchscript": "weights_torchscript.pt", "input": "test_input.npy",
         "readme": "README.md", "cover": "cover.png"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint: the project's (config inside) or the authors'")
    p.add_argument("--config", default=None, help="config name (cvppp, bbbc039v1, ac3ac4, ...) or a .yaml path; "
                                                  "default: the checkpoint's own (the authors' need one)")
    p.add_argument("--output", required=True, help="the package to write (NAME.zip)")
    p.add_argument("--name", default=None, help="the model's name (default: PEA and the checkpoint's file name)")
    p.add_argument("--author", dest="authors", action="append", default=[], metavar="NAME",
                   help="an author of the weights (repeat for several)")
    p.add_argument("--license", default="MIT", help="SPDX licence identifier of the weights (default MIT)")
    p.add_argument("--cite-doi", default=None, metavar="DOI", help="DOI to cite with the paper (no network check)")
    p.add_argument("--cite-url", default=None, metavar="URL",
                   help="URL to cite with the paper (bioimageio test then checks it online)")
    p.add_argument("--test-input", default=None, metavar="FILE",
                   help="test image (2D: tif, png, jpg) or volume (3D: pea predict's volume specs), cropped to "
                        "in-plane multiples of 16; default: a look-alike sample of --test-shape")
    p.add_argument("--test-shape", type=int, nargs="+", default=None, metavar="N",
                   help="shape of the look-alike test sample: H W (default 128 128) or Z Y X (default 8 96 96)")


def run(args: argparse.Namespace) -> int:
    path = export_model(args.model, args.output, config=args.config, name=args.name, authors=args.authors,
                        license=args.license, cite_doi=args.cite_doi, cite_url=args.cite_url,
                        test_input=args.test_input, test_shape=args.test_shape)
    print(f"{path}: bioimage.io model package (format {FORMAT_VERSION}); check it with: bioimageio test {path}")
    return 0


def bioimageio_spec():
    """`bioimageio.spec.model.v0_5`, checked to write format FORMAT_VERSION."""
    from pea.extras import require

    require("bioimageio.spec")
    from bioimageio.spec.model import v0_5

    if v0_5.ModelDescr.implemented_format_version != FORMAT_VERSION:
        raise PEAInputError(f"pea export writes bioimage.io model format {FORMAT_VERSION}, but the installed "
                            f"bioimageio.spec writes {v0_5.ModelDescr.implemented_format_version}: {EXTRA}")
    return v0_5


# -- the network and what it computes ---------------------------------------------------------
def load(checkpoint: str | Path, config: str | None):
    """The network (`pea.load_model`), its full MODEL section (the state dict's architecture)
    and the config's NAME."""
    import pea
    from pea.checkpoint import checkpoint_model_config, load_checkpoint
    from pea.models import DEFAULTS
    from pea.settings import checkpoint_config

    model = pea.load_model(checkpoint, config=config)
    if model.offsets is None:
        raise PEAInputError(f"{checkpoint}: no offsets (the authors' checkpoints carry no config); "
                            f"name one with --config (cvppp, bbbc039v1, ac3ac4 or a .yaml path)")
    if len(model.offsets[0]) != model.spatial_dims:
        raise PEAInputError(f"{checkpoint}: a {model.spatial_dims}D network, but the config's offsets are "
                            f"{len(model.offsets[0])}D; give the matching --config")
    ckpt = load_checkpoint(checkpoint)
    section = {**DEFAULTS, **checkpoint_model_config(ckpt), "pretrained": None}
    return model, section, checkpoint_config(ckpt, config, str(checkpoint)).NAME


def affinity_net(model: torch.nn.Module, section: Mapping):
    """`AffinityNet` of MODEL section `section` holding `model`'s weights, in eval mode."""
    from pea.models.affinity_net import AffinityNet

    net = AffinityNet(section, model.offsets)
    net.net.load_state_dict(model.state_dict())
    return net.eval()


def reference_outputs(model: torch.nn.Module, image: np.ndarray) -> dict[str, np.ndarray]:
    """The project's inference on a whole test image (`pea.inference.predict` on
    `pea.api.network_input`, as `pea.affinities` runs it, not padded, no windows): outputs
    with a batch axis, `affinities` and, with a foreground head, `foreground`."""
    from pea.api import network_input
    from pea.inference import PredictOptions, predict

    x = network_input(model, image)
    options = replace(model.predict_options or PredictOptions(), padded_size=x.shape[:-1], window=None, amp="off")
    affs, fg = predict(model, x, model.offsets, progress=False, **asdict(options))
    out = {"affinities": affs[None]}
    if fg is not None:
        out["foreground"] = fg[None, None]
    return out


def save_torchscript(net: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    """`net` traced to TorchScript on `example` and saved to `path`; checked against `net`
    there and on an input one step larger on every spatial axis (a trace that had kept a
    size would fail that)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the networks' shape checks; torch.jit's deprecation
        script = torch.jit.trace(net, example, check_trace=False)
        torch.jit.save(script, path)
    grown = torch.nn.functional.pad(example, [0, INPLANE_STEP] * 2 + [0, 1] * (example.dim() - 4))
    for x in (example, grown):
        with torch.no_grad():
            want, got = net(x), script(x)
        for a, b in zip(_as_tuple(want), _as_tuple(got)):
            if a.shape != b.shape or float((a - b).abs().max()) > 1e-5:
                raise PEAInputError(f"the traced network differs from the network at input shape {tuple(x.shape)}: "
                                    f"this backbone cannot be traced for every input size")


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


# -- the test input ---------------------------------------------------------------------------
def test_image(model: torch.nn.Module, test_input: str | None, test_shape: Sequence[int] | None) -> np.ndarray:
    """The test image in [0, 1] as the network's input takes it: (H, W, in_channels) in 2D,
    (Z, Y, X) in 3D; a look-alike sample, or `test_input` cropped (centred) to in-plane
    multiples of 16."""
    from pea.predict import read_image, unit_image
    from pea.synth.samples import sample_for
    from pea.volumes import open_volume, to_unit

    dims, channels = model.spatial_dims, model.in_channels
    if test_input is None:
        shape = tuple(test_shape or DEFAULT_TEST_SHAPE[dims])
        check_test_shape(shape, dims, model.min_size)
        raw = sample_for(dims, channels, shape)
        return unit_image(raw, channels) if dims == 2 else to_unit(raw)
    if dims == 2:
        image = read_image(Path(test_input), channels, None)
    else:
        with open_volume(test_input) as volume:
            image = to_unit(volume[:], test_input)
    spatial = image.shape[:dims]
    shape = spatial[:-2] + tuple(n - n % INPLANE_STEP for n in spatial[-2:])
    check_test_shape(shape, dims, model.min_size, f"--test-input {test_input} (shape {spatial})")
    return image[tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(spatial, shape))]


def check_test_shape(shape: Sequence[int], dims: int, min_size: Sequence[int], what: str | None = None) -> None:
    what = what or f"--test-shape {' '.join(map(str, shape))}"
    if len(shape) != dims:
        raise PEAInputError(f"{what}: the network is {dims}D; give {dims} sizes")
    if any(n < m for n, m in zip(shape, min_size)) or any(n % INPLANE_STEP for n in shape[-2:]):
        raise PEAInputError(f"{what}: in-plane sizes must be multiples of {INPLANE_STEP}, at least "
                            f"{tuple(min_size)}")


def package_input(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The test image as the package's input tensor (1, C, *spatial) float32."""
    if model.spatial_dims == 2:
        return np.ascontiguousarray(np.moveaxis(image, -1, 0)[None], dtype=np.float32)
    return np.repeat(image[None, None].astype(np.float32), model.in_channels, axis=1)


# -- the description --------------------------------------------------------------------------
def affine_normalization(mode: str, channels: int) -> tuple[list[float], list[float]] | None:
    """Gain and offset per channel of `pea.augment.normalize` in `mode` (read off its values at
    0 and 1; it is affine), or None when it leaves the input as it is."""
    from pea.augment import normalize

    zero, one = (normalize(np.full((1, channels), v, np.float32), mode)[0] for v in (0.0, 1.0))
    gain, offset = (one - zero).astype(float).tolist(), zero.astype(float).tolist()
    if all(g == 1.0 for g in gain) and all(o == 0.0 for o in offset):
        return None
    return gain, offset


def preprocessing(spec, normalize: str, percentiles: Sequence[float] | None, channels: int, dims: int) -> list:
    """The project's input pipeline after [0, 1] intensities as bioimage.io preprocessing:
    percentiles of each image (all its channels) to 0 and 1, clipped (`percentile_normalize`),
    then the normalisation."""
    steps = [spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32"))]
    if percentiles is not None:
        lo, hi = (float(p) for p in percentiles)
        kwargs = spec.ScaleRangeKwargs(axes=("channel",) + axis_ids(dims), min_percentile=lo, max_percentile=hi,
                                       eps=1e-10)
        steps += [spec.ScaleRangeDescr(kwargs=kwargs),
                  spec.ClipDescr(kwargs=spec.ClipKwargs(min=0.0, max=1.0))]
    affine = affine_normalization(normalize, channels)
    if affine is not None:
        gain, offset = affine
        kwargs = (spec.ScaleLinearKwargs(gain=gain[0], offset=offset[0]) if len(set(gain)) == len(set(offset)) == 1
                  else spec.ScaleLinearAlongAxisKwargs(axis="channel", gain=gain, offset=offset))
        steps.append(spec.ScaleLinearDescr(kwargs=kwargs))
    return steps


def axis_ids(dims: int) -> tuple[str, ...]:
    return ("z", "y", "x")[3 - dims:]


def offset_name(offset: Sequence[int]) -> str:
    """A channel name of an offset: (0, -3) -> 'y0_x-3'."""
    return "_".join(f"{a}{o}" for a, o in zip(axis_ids(len(offset)), offset))


def input_descr(spec, model: torch.nn.Module, source: Path):
    dims, ids = model.spatial_dims, axis_ids(model.spatial_dims)
    steps = [1] * (dims - 2) + [INPLANE_STEP] * 2
    percentiles = model.percentiles if dims == 2 else None  # pea.api.network_input's rule
    normalize = (model.predict_options.normalize if model.predict_options else "none")
    axes = [spec.BatchAxis(), spec.ChannelAxis(channel_names=[f"c{i}" for i in range(model.in_channels)])]
    axes += [spec.SpaceInputAxis(id=a, size=spec.ParameterizedSize(min=int(m), step=s))
             for a, m, s in zip(ids, model.min_size, steps)]
    return spec.InputTensorDescr(
        id="input", axes=axes, test_tensor=spec.FileDescr(source=source),
        description="image intensities in [0, 1] (integers over their type's maximum)",
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0) if percentiles is None else (None, None)),
        preprocessing=preprocessing(spec, normalize, percentiles, model.in_channels, dims))


def output_descrs(spec, model: torch.nn.Module, sources: Mapping[str, Path]) -> list:
    ids = axis_ids(model.spatial_dims)
    space = [spec.SpaceOutputAxis(id=a, size=spec.SizeReference(tensor_id="input", axis_id=a)) for a in ids]
    channels = {"affinities": [offset_name(o) for o in model.offsets], "foreground": ["foreground"]}
    about = {"affinities": "affinity of each pixel to the pixel the channel's offset away (config.pea.offsets)",
             "foreground": "foreground probability"}
    return [spec.OutputTensorDescr(id=name, description=about[name], test_tensor=spec.FileDescr(source=src),
                                   axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=channels[name])] + space,
                                   data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))
            for name, src in sources.items()]


def pea_config(model: torch.nn.Module, checkpoint: str | Path, config: str | None) -> dict:
    """`config.pea`: what segmenting the affinities needs, and where they came from."""
    seg = model.segment_options
    pred = model.predict_options
    return {"offsets": [list(o) for o in model.offsets], "scale": model.scale,
            "percentiles": model.percentiles, "normalize": pred.normalize,
            "partitioners": list(seg.methods), "strides": seg.strides, "fragments": seg.fragments,
            "waterz_threshold": seg.waterz_threshold, "small_objects": [list(s) if isinstance(s, (list, tuple))
                                                                         else s for s in seg.small_objects],
            "merge_rule": seg.merge_rule, "mask": seg.mask, "window": pred.window, "overlap": pred.overlap,
            "checkpoint": Path(checkpoint).name, "config": config, "citation": CITATION}


def model_name(name: str | None, run: str | None, checkpoint: str | Path) -> str:
    """`name`, or 'PEA', the config's NAME `run` and the checkpoint's file stem, in the
    characters bioimage.io allows."""
    text = name or " ".join(["PEA", *([run] if run else []), Path(checkpoint).stem])
    text = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", text)[:64]
    if len(text) < 5:
        raise PEAInputError(f"--name {name!r}: bioimage.io names need at least 5 characters")
    return text


def describe(spec, model, *, files: Mapping[str, Path], outputs: Sequence[str], section: Mapping, name: str,
             authors: Sequence[str], license: str, cite_doi: str | None, cite_url: str | None, pea: Mapping):
    """The `ModelDescr` of the package's files."""
    version = spec.Version(torch.__version__.split("+")[0])
    state = spec.PytorchStateDictWeightsDescr(
        source=files["state"], pytorch_version=version,
        architecture=spec.ArchitectureFromLibraryDescr(import_from="pea.models.affinity_net", callable="AffinityNet",
                                                       kwargs={"model": dict(section), "offsets": pea["offsets"]}))
    script = spec.TorchscriptWeightsDescr(source=files["torchscript"], pytorch_version=version,
                                          parent="pytorch_state_dict")
    cite = [spec.CiteEntry(text=CITATION, doi=cite_doi, url=cite_url)] if (cite_doi or cite_url) else []
    dims = model.spatial_dims
    return spec.ModelDescr(
        name=name, format_version=FORMAT_VERSION, type="model",
        description=(f"Pixel-Embedded Affinity (PEA, AAAI 2022) network: {len(model.offsets)} affinities of a "
                     f"{dims}D {'volume' if dims == 3 else 'image'} for instance segmentation by Mutex Watershed, "
                     f"agglomeration or multicut (offsets in config.pea)"),
        authors=[spec.Author(name=a) for a in authors], cite=cite, license=license,
        tags=["pea", "pixel-embedded-affinity", "affinities", "instance-segmentation", f"{dims}d", "pytorch"],
        documentation=spec.FileDescr(source=files["readme"]), covers=[spec.FileDescr(source=files["cover"])],
        inputs=[input_descr(spec, model, files["input"])],
        outputs=output_descrs(spec, model, {o: files[o] for o in outputs}),
        weights=spec.WeightsDescr(pytorch_state_dict=state, torchscript=script),
        config={"pea": dict(pea)})


# -- cover and README -------------------------------------------------------------------------
def cover(image: np.ndarray, affs: np.ndarray, model: torch.nn.Module) -> np.ndarray:
    """RGB uint8: the test image beside the Mutex Watershed segmentation of its affinities
    (the middle section of a volume), 2:1."""
    import pea

    labels = pea.segment(affs, model.offsets, "mutex", strides=model.segment_options.strides)
    if model.spatial_dims == 3:
        image, labels = image[image.shape[0] // 2], labels[labels.shape[0] // 2]
    grey = image if image.ndim == 2 else (image[..., :3] if image.shape[-1] >= 3 else image[..., 0])
    rgb = np.clip(grey * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(rgb[..., None], 3, axis=-1) if rgb.ndim == 2 else rgb
    colours = np.random.default_rng(0).integers(60, 256, (int(labels.max()) + 1, 3)).astype(np.uint8)
    colours[0] = 0
    return np.concatenate([rgb, colours[labels]], axis=1)


def readme(model, *, name: str, pea: Mapping, outputs: Sequence[str], test_shape: Sequence[int],
           license: str) -> str:
    dims, ids = model.spatial_dims, axis_ids(model.spatial_dims)
    rows = "\n".join(f"| {c} | {offset_name(o)} | {tuple(o)} |" for c, o in enumerate(model.offsets))
    steps = []
    if dims == 2 and model.percentiles is not None:
        steps.append(f"percentiles {model.percentiles} of the image mapped to 0 and 1, clipped (scale_range, clip)")
    if affine_normalization(pea["normalize"], model.in_channels) is not None:
        steps.append(f"normalisation `{pea['normalize']}` (scale_linear)")
    fg = ("\n- `foreground` (batch, channel, " + ", ".join(ids) + "): foreground probability of the network's "
          "foreground head (the configs with `TEST.mask: pred` segment inside `foreground > 0.5`)."
          if "foreground" in outputs else "")
    stored = "the one stored in the checkpoint"
    tiling = (f"infers inputs in overlapping windows of {pea['window']} (overlap {pea['overlap']})" if pea["window"]
              else f"pads inputs to multiples of {INPLANE_STEP} (or the config's padded size)")
    scale = ("" if pea["scale"] == 1.0 else
             f"\n- The network was trained on images resized by **{pea['scale']}** (DATA.scale): resize the image by "
             f"this factor first, and the labels back (nearest neighbour).")
    return f"""# {name}

A network of Pixel-Embedded Affinity (PEA): {CITATION}
Exported by `pea export` from `{pea['checkpoint']}` (config: {pea['config'] or stored}).

## Input

`input` (batch, channel, {', '.join(ids)}), float32: {model.in_channels} channel(s) of image intensities
in [0, 1] (integer images divided by their type's maximum, e.g. 255 for 8-bit, as `pea` reads them).
In-plane sizes must be multiples of {INPLANE_STEP} (at least {INPLANE_STEP}){'; any depth' if dims == 3 else ''}.
Preprocessing in the package: {'; '.join(steps) or 'none beyond float32'}.
Not expressed as bioimage.io preprocessing:
- A grey image for a {model.in_channels}-channel network: repeat it to {model.in_channels} channels
  (colour for a 1-channel network: average the channels).{scale}
- `pea` {tiling}; the package computes whole tiles, so tile with an overlap of about the
  longest offset and keep the tiles' centres.

## Output

- `affinities` (batch, channel, {', '.join(ids)}), float32 in [0, 1]: channel c holds the affinity of
  each pixel to the pixel `offsets[c]` away (1: the same object; 0 where that pixel lies outside).
  The offsets (also in `config.pea.offsets`):

| channel | name | offset ({', '.join(ids)}) |
|---|---|---|
{rows}{fg}

## Segmentation

Affinities become instances by a partitioner on the offsets' graph; the config used
{pea['partitioners']} with strides {pea['strides']} (`config.pea`). With `pea` installed:

    import pea
    labels = pea.segment(affinities[0], offsets, method="mutex", strides={pea['strides']})

(elf's Mutex Watershed, `elf.segmentation.mutex_watershed.mutex_watershed`, takes the same affinities and offsets.)

## Validation

The test output was computed from the test input ({tuple(test_shape)}, a `pea.synth` look-alike sample or
the image given to `pea export`) by `pea`'s own inference (`pea.inference.predict`, whole image).
`bioimageio test` reproduces it from both weight formats; `pea`'s tests check the package's output
against `pea.load_model` and `pea.affinities` to 1e-5. Scores on real data: see the `pea` README.

## Weights

TorchScript (`{FILES['torchscript']}`), and the state dict (`{FILES['state']}`) of
`pea.models.affinity_net.AffinityNet` (needs the `pea` package). Licence: {license}.

## Citation

{CITATION}
"""


# -- writing the package ----------------------------------------------------------------------
def export_model(checkpoint: str | Path, output: str | Path, *, config: str | None = None, name: str | None = None,
                 authors: Sequence[str] = (), license: str = "MIT", cite_doi: str | None = None,
                 cite_url: str | None = None, test_input: str | None = None,
                 test_shape: Sequence[int] | None = None) -> Path:
    """Write the bioimage.io package of `checkpoint` to `output` (a .zip, atomically)."""
    from PIL import Image

    spec = bioimageio_spec()
    if not str(output).endswith(".zip"):
        raise PEAInputError(f"--output {output}: a bioimage.io package is a .zip file")
    model, section, run = load(checkpoint, config)
    image = test_image(model, test_input, test_shape)
    ref = reference_outputs(model, image)
    x = package_input(model, image)
    net = affinity_net(model, section)
    pea = pea_config(model, checkpoint, config)
    name = model_name(name, run, checkpoint)
    with tempfile.TemporaryDirectory(prefix="pea-export-") as tmp:
        files = {k: Path(tmp) / f for k, f in FILES.items()} | {k: Path(tmp) / f"test_{k}.npy" for k in ref}
        torch.save(net.state_dict(), files["state"])
        save_torchscript(net, torch.from_numpy(x), files["torchscript"])
        np.save(files["input"], x)
        for key, array in ref.items():
            np.save(files[key], array.astype(np.float32))
        Image.fromarray(cover(image, ref["affinities"][0], model)).save(files["cover"])
        files["readme"].write_text(readme(model, name=name, pea=pea, outputs=list(ref), test_shape=x.shape[2:],
                                          license=license))
        descr = describe(spec, model, files=files, outputs=list(ref), section=section, name=name, authors=authors,
                         license=license, cite_doi=cite_doi, cite_url=cite_url, pea=pea)
        with atomic_write(output) as tmp_zip:
            save_package(descr, tmp_zip)
    return Path(output)


def save_package(descr, path: Path) -> None:
    from bioimageio.spec import save_bioimageio_package

    save_bioimageio_package(descr, output_path=path)

#!/usr/bin/env bash
# Build the CPU image of docker/Dockerfile and check it inside, without network: `pea --help`,
# a short CVPPP demo (look-alike data, 4 training iterations, validation inference), `pea
# predict` blockwise on a look-alike EM volume, and the fast tests. Exits non-zero on any
# failure. Run it after every change to the Docker files (it is not part of `make test`):
#   docker/check.sh
# Environment:
#   DOCKER_HOST         the Docker daemon (docker's own variable)
#   PEA_DOCKER_BASE     the base image (default: the Dockerfile's, python:3.11-slim-bookworm)
#   PEA_DOCKER_CA       a CA bundle pip trusts while building; it does not stay in the image
#   PEA_DOCKER_WHEELS   a folder of wheels pip may install from (e.g. the CPU torch wheel; with
#                       one, download.pytorch.org is not asked)
#   PEA_DOCKER_TAG      the image's name (default pea:cpu)
#   PEA_DOCKER_NETWORK  the network of the build (default host)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${PEA_DOCKER_TAG:-pea:cpu}
started=$SECONDS

# The build context: what git tracks or would track (a fresh clone, with uncommitted changes),
# plus the build-only files of docker/local/.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | tar -C "$repo" --null --files-from=- --ignore-failed-read -c | tar -C "$context" -x
args=(--build-arg TORCH_VARIANT=cpu --network "${PEA_DOCKER_NETWORK:-host}")
if [ -n "${PEA_DOCKER_BASE:-}" ]; then
    args+=(--build-arg "BASE=$PEA_DOCKER_BASE")
fi
if [ -n "${PEA_DOCKER_CA:-}" ]; then
    cp "$PEA_DOCKER_CA" "$context/docker/local/ca.crt"
fi
if [ -n "${PEA_DOCKER_WHEELS:-}" ]; then
    mkdir -p "$context/docker/local/wheels"
    cp "$PEA_DOCKER_WHEELS"/*.whl "$context/docker/local/wheels/"
    if compgen -G "$context/docker/local/wheels/torch-*+cpu-*.whl" >/dev/null; then
        args+=(--build-arg TORCH_INDEX_URL=none)
    fi
fi

echo "== docker build -t $tag (${args[*]})"
docker build -f "$context/docker/Dockerfile" -t "$tag" "${args[@]}" "$context"
built=$SECONDS
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "== built in $((built - started)) s; image size $((size / 1000000)) MB"

echo "== checks inside $tag (no network)"
inside=$(cat <<'INSIDE'
set -euxo pipefail
test "$(ls -A docker/local)" = README.md  # the build-only files stayed out
pea --help
pea synth cvppp --out data/CVPPP_synth --seed 1 --n-train 8 --n-test 2 --n-valid 2
cd scripts_cvppp
python main.py -c=cvppp_demo --set TRAIN.iterations=4 --set TRAIN.valid_every=4 --set TRAIN.save_every=4 \
    --set TRAIN.log_every=2
python inference.py -c=cvppp_demo -mn=cvppp_demo -id=best -m=validation
cd ../scripts_ac3ac4
pea synth ac3ac4 --out ../data/AC3-AC4_synth --seed 1 --depth 16 --size 96 --test-depth 12
python untrained.py -c=ac3ac4_demo
cd ..
pea predict --model models/ac3ac4_demo_untrained/init.ckpt --input data/AC3-AC4_synth/AC3_inputs.h5:main \
    --output inference/AC3.zarr --device cpu --workers 2 --block 8 48 48 --partitioner waterz,lmc
python - <<'CHECK'
import h5py
import zarr

shape = h5py.File("data/AC3-AC4_synth/AC3_inputs.h5", "r")["main"].shape
out = zarr.open_group("inference/AC3.zarr", mode="r")
for name in ("segmentation", "segmentation_lmc"):  # OME-Zarr label images
    seg = out[f"labels/{name}/0"][:]
    assert seg.shape == shape and seg.min() >= 1, (name, seg.shape, shape, seg.min())
print("pea predict wrote", {name: out[f"labels/{name}/0"].shape for name in sorted(out["labels"].group_keys())})
CHECK
xvfb-run -a python -m pytest -q -m "not slow" -p no:cacheprovider  # the napari tests open a window
echo "fast tests passed"  # a last command of its own: xvfb-run as PID 1 waits for ever for its X server
INSIDE
)
docker run --rm --network none -e OMP_NUM_THREADS=1 "$tag" bash -c "$inside"
echo "== docker/check.sh passed: build $((built - started)) s, checks $((SECONDS - built)) s, image $((size / 1000000)) MB"

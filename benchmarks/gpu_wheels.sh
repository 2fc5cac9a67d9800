#!/usr/bin/env bash
# Build the wheelhouse that benchmarks/gpu_check.sh installs from on a GPU machine that has JAX
# (with CUDA) but no TensorFlow, no Keras and no package registry.
#
#   bash benchmarks/gpu_wheels.sh [WHEELHOUSE]        # default .gpu-wheels (ignored by git)
#
# Run it here, where the registry is reachable. It writes into WHEELHOUSE:
#   - dlmine itself, built from this working tree (pure Python, --no-deps);
#   - Keras and the run-time packages of dlmine's JAX path that such a machine may lack, at the
#     versions of this repository's .venv where it has them (pure wheels once; the compiled ones,
#     optree, PyYAML and h5py, for every Python of GPU_WHEELS_PYTHONS, default this Python and
#     3.12, the GPU image's);
#   - mnist.npz, copied from $DLMINE_DATA_DIR (default ../shared/data): the GPU machine cannot
#     read ../shared. The folder is never committed; it travels to the GPU machine as a `carry`.
#
# Not carried, because the GPU image has them and their wheels are large: numpy, jax, jaxlib,
# ml_dtypes (a dependency of jax), scikit-learn and scipy. gpu_check.sh stops with a clear
# message where one is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELHOUSE=${1:-.gpu-wheels}
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DATA=${DLMINE_DATA_DIR:-../shared/data}
LOCAL_PY=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PYTHONS=${GPU_WHEELS_PYTHONS:-"$LOCAL_PY 3.12"}

# Package names (as pip knows them): pure Python, then compiled.
PURE="keras keras-rs namex absl-py rich markdown-it-py mdurl pygments click packaging typing-extensions"
COMPILED="optree pyyaml h5py"

pin() {  # NAME -> NAME==VERSION of this Python's environment, or NAME where it lacks it
    local v
    v=$("$PY" -c 'import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass' "$1")
    if [ -n "$v" ]; then echo "$1==$v"; else echo "$1"; fi
}

rm -rf "$WHEELHOUSE"
mkdir -p "$WHEELHOUSE"
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "gpu_wheels: dlmine from this tree" >&2
src=$(mktemp -d)  # build from a copy: no build/ or egg-info written into the tree
trap 'rm -rf "$src"' EXIT
cp -r pyproject.toml README.md dlmine "$src"/
find "$src" -name __pycache__ -prune -exec rm -rf {} +
"$PY" -m pip wheel -q --no-deps -w "$WHEELHOUSE" "$src"

pure=()
for name in $PURE; do pure+=("$(pin "$name")"); done
echo "gpu_wheels: ${pure[*]}" >&2
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELHOUSE" "${pure[@]}"

compiled=()
for name in $COMPILED; do compiled+=("$(pin "$name")"); done
platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
for version in $(printf '%s\n' $PYTHONS | sort -u); do
    echo "gpu_wheels: ${compiled[*]} for CPython $version" >&2
    "$PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
        --python-version "$version" "${platforms[@]}" -d "$WHEELHOUSE" "${compiled[@]}"
done

if [ -f "$DATA/mnist.npz" ]; then
    cp "$DATA/mnist.npz" "$WHEELHOUSE/mnist.npz"
else
    echo "gpu_wheels: warning: no $DATA/mnist.npz; set DLMINE_DATA_DIR" >&2
fi

ls -l "$WHEELHOUSE" | tail -n +2 | awk '{printf "%10d  %s\n", $5, $9}'
du -sh "$WHEELHOUSE"

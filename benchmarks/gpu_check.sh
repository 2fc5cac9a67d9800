#!/usr/bin/env bash
# GPU check: train the MNIST CNN of configs/mnist_cnn.yaml with KERAS_BACKEND=jax on a machine
# that has JAX with CUDA but no TensorFlow and no package registry, then print the throughput,
# the test accuracy and the GPU, all within a time budget (default 300 s).
#
#   bash benchmarks/gpu_wheels.sh                 # here, once: builds .gpu-wheels/ (see there)
#   bash benchmarks/gpu_check.sh [--device gpu|cpu|auto] [--timeout S] [--wheels DIR]
#                                [--python PY] [--set KEY=VALUE ...]
#
# It installs, with `pip --no-index --find-links WHEELHOUSE --no-deps` into a private folder put
# first on PYTHONPATH, only the packages the Python at hand lacks (Keras, namex, optree, ...)
# and always dlmine from its wheel (run from outside the tree, so the wheel is what runs).
# numpy, jax, ml_dtypes, scikit-learn and scipy are not carried: it stops if one is missing.
# MNIST is read from WHEELHOUSE/mnist.npz, or from $DLMINE_DATA_DIR where the wheelhouse has
# none. --set is handed to `dlmine train` (e.g. --set training.epochs=1 for a short trial).
# If $OUT is set, gpu_check.json (every figure), gpu_check.log (dlmine's output) and the run's
# run.json, eval.json, history.csv and train.log are copied there.
#
# Exit: 0 when the run completed and, with --device gpu, ran on a GPU; 1 otherwise.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
START=$(date +%s)

WHEELS=$REPO/.gpu-wheels
DEVICE=gpu
BUDGET=300
PY=${PYTHON:-python3}
SETS=()
while [ $# -gt 0 ]; do
    case $1 in
        --device) DEVICE=$2; shift 2 ;;
        --timeout) BUDGET=$2; shift 2 ;;
        --wheels) WHEELS=$(cd "$2" && pwd); shift 2 ;;
        --python) PY=$2; shift 2 ;;
        --set) SETS+=(--set "$2"); shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
say() { echo "gpu_check: $*"; }
fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }

WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
SITE=$WORK/site
RUN=$WORK/run
export KERAS_BACKEND=jax
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
export PYTHONUNBUFFERED=1
[ "$DEVICE" = cpu ] && export JAX_PLATFORMS=cpu
if [ -f "$WHEELS/mnist.npz" ]; then
    export DLMINE_DATA_DIR=$WHEELS
elif [ ! -f "${DLMINE_DATA_DIR:-$REPO/../shared/data}/mnist.npz" ]; then
    fail "no mnist.npz in $WHEELS nor in \$DLMINE_DATA_DIR (run benchmarks/gpu_wheels.sh)"
else
    export DLMINE_DATA_DIR=${DLMINE_DATA_DIR:-$REPO/../shared/data}
fi
[ -d "$WHEELS" ] || fail "no wheelhouse $WHEELS (run benchmarks/gpu_wheels.sh here and carry it)"
command -v "$PY" >/dev/null || fail "no Python '$PY' (--python)"

# 1. What the Python at hand has: the modules dlmine's JAX path imports, by distribution.
missing=$("$PY" - "$WHEELS" <<'EOF'
import glob, importlib.util, os, re, sys
wheels = sys.argv[1]
needed = {"numpy": "numpy", "jax": "jax", "jaxlib": "jaxlib", "ml_dtypes": "ml-dtypes",
          "sklearn": "scikit-learn", "scipy": "scipy"}          # not carried
carried = {"keras": "keras", "namex": "namex", "optree": "optree", "absl": "absl-py",
           "h5py": "h5py", "rich": "rich", "markdown_it": "markdown-it-py", "mdurl": "mdurl",
           "pygments": "pygments", "click": "click", "yaml": "pyyaml",
           "packaging": "packaging", "typing_extensions": "typing-extensions"}
absent = [d for m, d in needed.items() if importlib.util.find_spec(m) is None]
if absent:
    sys.exit(f"gpu_check: FAILED: {sys.executable} lacks {', '.join(absent)}, which the "
             "wheelhouse does not carry")
def have(module):
    if importlib.util.find_spec(module) is None:
        return False
    if module == "keras":  # dlmine needs Keras 3.10 or later
        from importlib.metadata import version
        try:
            return tuple(int(p) for p in re.findall(r"\d+", version("keras"))[:2]) >= (3, 10)
        except Exception:
            return False
    return True
todo = [d for m, d in carried.items() if not have(m)]
names = [os.path.basename(p).lower() for p in glob.glob(os.path.join(wheels, "*.whl"))]
lost = [d for d in todo if not any(n.startswith(d.replace("-", "_") + "-") for n in names)]
if lost:
    sys.exit(f"gpu_check: FAILED: {sys.executable} lacks {', '.join(lost)}, and {wheels} holds "
             "no wheel of it")
print(" ".join(todo))
EOF
) || exit 1
say "python: $("$PY" -c 'import sys; print(sys.version.split()[0], sys.executable)')"
say "installing from $WHEELS: ${missing:+$missing }dlmine"
# shellcheck disable=SC2086
"$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile \
    --no-cache-dir --target "$SITE" $missing dlmine || fail "pip install from $WHEELS"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}

# 2. The versions and the devices JAX sees (the name of the GPU), before training.
cd "$WORK" || exit 1
"$PY" - > "$WORK/env.json" <<'EOF' || fail "importing jax, keras and dlmine (above)"
import importlib.util, json, os
import jax, keras, dlmine
devices = jax.devices()
print(json.dumps({
    "jax": jax.__version__, "keras": keras.__version__, "keras_backend": keras.backend.backend(),
    "dlmine": dlmine.__version__, "dlmine_file": dlmine.__file__,
    "tensorflow_installed": importlib.util.find_spec("tensorflow") is not None,
    "jax_devices": [str(d) for d in devices],
    "device_kinds": [d.device_kind for d in devices],
    "platform": devices[0].platform}))
EOF
"$PY" - "$WORK/env.json" <<'EOF'
import json, sys
e = json.load(open(sys.argv[1]))
tf = "yes" if e["tensorflow_installed"] else "no"
print(f"gpu_check: jax {e['jax']}, keras {e['keras']} (backend {e['keras_backend']}), "
      f"dlmine {e['dlmine']} from {e['dlmine_file']}, tensorflow installed: {tf}")
print(f"gpu_check: jax.devices(): {', '.join(e['jax_devices'])} ({', '.join(e['device_kinds'])})")
EOF
if command -v nvidia-smi >/dev/null; then
    say "nvidia-smi: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
fi

# 3. Train and evaluate, inside what is left of the budget.
left=$((BUDGET - ($(date +%s) - START) - 10))
[ "$left" -gt 30 ] || fail "only ${left}s of the ${BUDGET}s budget left before training"
say "dlmine train configs/mnist_cnn.yaml --device $DEVICE ${SETS[*]} (at most ${left}s)"
t0=$(date +%s%N)
timeout -k 10 "$left" "$PY" -m dlmine train "$REPO/configs/mnist_cnn.yaml" --device "$DEVICE" \
    --run-dir "$RUN" "${SETS[@]}" > "$WORK/gpu_check.log" 2>&1
rc=$?
t1=$(date +%s%N)
[ "$rc" -eq 124 ] && say "training stopped by the ${BUDGET}s budget"
[ "$rc" -eq 0 ] || { tail -n 30 "$WORK/gpu_check.log" >&2; }

# 4. The figures, from the run directory.
"$PY" - "$RUN" "$WORK" "$rc" "$(((t1 - t0) / 1000000))" "$DEVICE" "$BUDGET" <<'EOF'
import json, os, re, shutil, sys
from pathlib import Path
run, work, rc, wall, device, budget = (Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]),
                                       float(sys.argv[4]) / 1000, sys.argv[5], int(sys.argv[6]))
env = json.loads((work / "env.json").read_text())
def read(name):
    try:
        return json.loads((run / name).read_text())
    except (OSError, ValueError):
        return {}
info, ev = read("run.json"), read("eval.json")
line = re.compile(r"^epoch (\d+)/(\d+) - .* - ([0-9.]+)s$")
try:
    log = (run / "train.log").read_text().splitlines()
except OSError:
    log = []
epoch_s = [float(m.group(3)) for s in log if (m := line.match(s.strip()))]
train_n = (info.get("samples") or {}).get("train")
metrics = ev.get("metrics") or info.get("final_metrics") or {}
used = info.get("device", "")
res = {"exit": rc, "budget_s": budget, "wall_s": round(wall, 2), "device_requested": device,
       "device_used": used, "status": info.get("status"), "train_samples": train_n,
       "epochs": len(epoch_s), "epoch_s": epoch_s,
       "samples_per_s": round(train_n * len(epoch_s) / sum(epoch_s)) if train_n and epoch_s
       and sum(epoch_s) else None,
       "samples_per_s_after_epoch_1": round(train_n * (len(epoch_s) - 1) / sum(epoch_s[1:]))
       if train_n and len(epoch_s) > 1 and sum(epoch_s[1:]) else None,
       "test_accuracy": metrics.get("accuracy"), "test_loss": metrics.get("loss"),
       "tensorflow_imported": "tensorflow" in (info.get("versions") or {}),
       "versions": info.get("versions"), **env}
print(f"gpu_check: device used (run.json): {used or '?'}; status {res['status']}; exit {rc}")
if epoch_s:
    later = res["samples_per_s_after_epoch_1"]
    print(f"gpu_check: whole dlmine process {wall:.1f} s; epochs (s): "
          + " + ".join(f"{s:.1f}" for s in epoch_s))
    print(f"gpu_check: samples/s: {res['samples_per_s']} over all {len(epoch_s)} epoch(s) of "
          f"{train_n} samples; " + (f"{later} over epochs 2-{len(epoch_s)} (epoch 1 includes "
          "the XLA compilation)" if later else "one epoch only, XLA compilation included"))
acc, loss = res["test_accuracy"], res["test_loss"]
if acc is not None:
    print(f"gpu_check: test accuracy {acc:.4f}, test loss {loss:.4f} (best checkpoint, "
          f"{(info.get('samples') or {}).get('test')} test images)")
else:
    print("gpu_check: no test accuracy: the run did not finish (dlmine's output above)")
if info:
    print("gpu_check: tensorflow loaded by dlmine (run.json versions): "
          + ("yes" if res["tensorflow_imported"] else "no"))
(work / "gpu_check.json").write_text(json.dumps(res, indent=2) + "\n")
out = os.environ.get("OUT")
if out:
    os.makedirs(out, exist_ok=True)
    for src in [work / "gpu_check.json", work / "gpu_check.log",
                *(run / n for n in ("run.json", "eval.json", "history.csv", "train.log"))]:
        if src.is_file():
            shutil.copy(src, out)
    print(f"gpu_check: figures written to {out}")
ok = rc == 0 and res["status"] == "completed" and acc is not None and (
    device != "gpu" or used.startswith("gpu"))
print(f"gpu_check: {'OK' if ok else 'FAILED'} in {wall:.1f} s of a {budget} s budget")
sys.exit(0 if ok else 1)
EOF
status=$?
say "total $(($(date +%s) - START)) s (install, probe, training, evaluation)"
rm -rf "$WORK"
exit $status

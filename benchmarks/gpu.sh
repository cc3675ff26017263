#!/usr/bin/env bash
# The GPU check of issue 16, for a CUDA machine; finishes in under 8 minutes.
#
# 1. Makes sure the interpreter has what fastcls needs (torch with CUDA, torchvision, timm, fastai, ...):
#    anything missing is installed offline, into a venv that also sees the machine's own packages,
#    from the wheels folder carried with the tree (WHEELS, default ./wheels).
# 2. Runs benchmarks/gpu_train.py: resnet50 training images/s at 224 px, bf16 + channels-last, for a
#    hand-written loop and for fastcls's memory and stream paths; then `--bs auto`, an fp16 resume and
#    the CUDA RNG restore once each. Its JSON goes to stdout and to $OUT/gpu.json when OUT is set.
#
# Usage:  bash benchmarks/gpu.sh [gpu_train.py options, e.g. --images 4000]
#         bash benchmarks/gpu.sh --smoke            # tiny; also runs on the CPU, to check the script
#         bash benchmarks/gpu.sh --download-wheels  # where PyPI is reachable: fill WHEELS with this
#                                                   # environment's versions of everything but torch/CUDA
# Environment: PYTHON (default python3), WHEELS, FASTCLS_GPU_VENV (default /tmp/fastcls-gpu-venv),
#              LIMIT (seconds for the measurements, default 420).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-$root/wheels}
VENV=${FASTCLS_GPU_VENV:-/tmp/fastcls-gpu-venv}
LIMIT=${LIMIT:-420}
started=$(date +%s)

# import name -> distribution name, for what a training run imports
modules=(torch torchvision timm fastai typer rich safetensors tomli_w sklearn matplotlib PIL numpy)
packages=(torch torchvision timm fastai typer rich safetensors tomli-w scikit-learn matplotlib pillow numpy)

if [ "${1:-}" = "--download-wheels" ]; then
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip list --format=freeze --exclude-editable \
    | grep -v -i -E '^(torch|torchvision|triton|nvidia-|cuda-|fastcls)' > "$WHEELS/requirements.txt"
  "$PYTHON" -m pip download --no-deps --only-binary=:all: --dest "$WHEELS" -r "$WHEELS/requirements.txt"
  du -sh "$WHEELS"
  exit 0
fi

missing=()
for i in "${!modules[@]}"; do
  "$PYTHON" -c "import ${modules[$i]}" 2>/dev/null || missing+=("${packages[$i]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ ! -d "$WHEELS" ]; then
    echo "error: $PYTHON lacks ${missing[*]} and there is no wheels folder at $WHEELS; set WHEELS=DIR" \
      "(fill one with: bash benchmarks/gpu.sh --download-wheels)" >&2
    exit 1
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
  "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELS" "${missing[@]}"
  PYTHON="$VENV/bin/python"
  echo "installed offline from $WHEELS: ${missing[*]}" >&2
fi

"$PYTHON" - <<'EOF' >&2
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
EOF
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv >&2; fi

result="$(PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" timeout "$LIMIT" "$PYTHON" "$root/benchmarks/gpu_train.py" "$@")"
echo "$result"
if [ -n "${OUT:-}" ]; then echo "$result" > "$OUT/gpu.json"; fi
echo "gpu.sh: $(( $(date +%s) - started )) s in all" >&2

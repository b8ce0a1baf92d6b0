#!/usr/bin/env bash
# Builds Horovod 0.28.1 (PyTorch + gloo, no MPI/TF/MXNet) from its sdist into the given venv.
# Horovod 0.28.1 hardcodes C++14 while torch >= 2.1 headers need C++17, and its bundled gloo needs
# CMAKE_POLICY_VERSION_MINIMUM with CMake 4; both are handled here. Idempotent: skips when importable.
set -euo pipefail
venv=${1:-.venv}
python="$venv/bin/python"
if "$python" -c "import horovod.torch" 2>/dev/null; then
  exit 0
fi
wrapper_dir=$(mktemp -d)
trap 'rm -rf "$wrapper_dir"' EXIT
cat > "$wrapper_dir/g++" <<'WRAP'
#!/usr/bin/env bash
exec /usr/bin/g++ "${@/-std=c++14/-std=c++17}"
WRAP
chmod +x "$wrapper_dir/g++"
PATH="$(cd "$venv/bin" && pwd):$PATH" \
CXX="$wrapper_dir/g++" \
CMAKE_POLICY_VERSION_MINIMUM=3.5 \
HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
MAKEFLAGS="-j$(nproc)" \
  "$python" -m pip install --no-build-isolation --no-deps --no-cache-dir horovod==0.28.1
"$python" -c "import horovod, horovod.torch as hvd; print('horovod', horovod.__version__, 'gloo', hvd.gloo_built(), 'nccl', hvd.nccl_built())"

#!/usr/bin/env bash
# Create/update .venv with everything amigo-burst, its tests and the demo need.
#
#   scripts/install.sh            # CPU machine: torch==2.13.0 (CPU wheel)
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" scripts/install.sh   # CUDA laptop
#   AMIGO_EXTRAS=train,dev,export scripts/install.sh   # + llama-cpp-python for `export --format gguf|ollama`
#
# The export extra builds llama.cpp from source (llama-cpp-python ships no Linux wheel on PyPI):
# ~544 CPU-s (the whole install of a fresh 2-core machine, the build included: 328 s), once; pip caches
# the wheel, so later installs take seconds. CMAKE_ARGS
# keeps it to the CPU library (no tests, examples, server, multimodal, OpenSSL); for a CUDA build on the
# laptop: CMAKE_ARGS="-DGGML_CUDA=on" AMIGO_EXTRAS=train,dev,export scripts/install.sh
#
# Versions come from constraints.txt (what the tests pass with), so a fresh
# machine gets the same set. Why three pip calls: skypilot 0.14 pins
# click<8.2 while huggingface_hub>=1.30 asks for click>=8.4.2 (only for its
# own `hf` CLI, which amigo-burst never calls). No single resolve satisfies
# both, so the cloud extra is installed last and click is pinned there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
EXTRAS=${AMIGO_EXTRAS:-train,dev}
STAMP=.venv/.amigo-installed
want="$(cat pyproject.toml constraints.txt scripts/install.sh | sha256sum | cut -c1-16) $TORCH_SPEC"
export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_CUDA=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_OPENSSL=OFF"}

# Up to date: the same files and torch, and every wanted extra already installed (`make test` installs
# train,dev,export; a later `make test-e2e` or `make demo` asks for less and must not reinstall).
# The stamp's second line lists the extras installed.
have_extras() {
  local have; have=$(sed -n 2p "$STAMP" 2>/dev/null | tr ',' ' ')
  for e in ${EXTRAS//,/ }; do [[ " $have " == *" $e "* ]] || return 1; done
}
if [ -f "$STAMP" ] && [ "$(head -n1 "$STAMP")" = "$want" ] && have_extras \
    && .venv/bin/python -c 'import amigo_burst' 2>/dev/null; then
  exit 0  # up to date
fi
# extras installed before with the same files and torch stay installed: keep them in the stamp
if [ -f "$STAMP" ] && [ "$(head -n1 "$STAMP")" = "$want" ]; then
  EXTRAS=$(printf '%s\n' ${EXTRAS//,/ } $(sed -n 2p "$STAMP" | tr ',' ' ') | sort -u | paste -sd, -)
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
# constraints without click: see above
grep -v '^click==' constraints.txt > .venv/constraints-noclick.txt
"${pip[@]}" $TORCH_SPEC
"${pip[@]}" -c .venv/constraints-noclick.txt -e ".[$EXTRAS]"
"${pip[@]}" -c .venv/constraints-noclick.txt "$(grep '^click==' constraints.txt)" -e ".[cloud]" 2>&1 \
  | grep -v "dependency resolver\|huggingface-hub .* requires click\|^$" || true
printf '%s\n%s\n' "$want" "$EXTRAS" > "$STAMP"
echo "installed into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

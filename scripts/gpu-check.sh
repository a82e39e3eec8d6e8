#!/usr/bin/env bash
# The GPU check. Runs on a machine with an NVIDIA GPU, its driver and CUDA 13 libraries, in a copy
# of the repository with target/cuda/gpu-bins.tar.xz (or target/cuda/bin) from scripts/build-cuda.sh
# (no cargo, no network):
#   1. parity   the integration tests on the GPU (LANTERN_TEST_DEVICE=cuda): every hook, logits
#               and loss of the four fixture models, zero / mean ablation and the patching sweeps
#               against TransformerLens's goldens (1e-4); the intervention stages end to end; the
#               correlation stage's tests (shards and tiles change nothing, bit for bit)
#   2. cli      `lantern run` of a small experiment with device = "cuda": activations, an
#               ablation, a patching sweep and a correlation on a fixture model
#   3. bench    benches/device.rs: the f32 matmul peak (TF32 off), forward throughput, the
#               correlation stage between two random GPT-2-small-shaped models on the GPU against
#               the CPU (1e-4) and its throughput
# Prints everything and writes it under OUT_DIR: summary.txt, gpu.txt, one log per step.
# Usage: scripts/gpu-check.sh OUT_DIR        (a few minutes on one H100; each step has a time limit
# and the whole stays under 9 minutes). Exit code 0 when every step passed.
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=$PWD/target/cuda/bin
if [ ! -x "$bin/it" ] && [ -e target/cuda/gpu-bins.tar.xz ]; then
  echo "== unpacking target/cuda/gpu-bins.tar.xz"
  if command -v xz >/dev/null; then
    xz -dc target/cuda/gpu-bins.tar.xz | tar -C target/cuda -xf -
  else
    python3 -c 'import tarfile; tarfile.open("target/cuda/gpu-bins.tar.xz").extractall("target/cuda")'
  fi
fi
for b in lantern it device; do
  if [ ! -x "$bin/$b" ]; then
    echo "missing $bin/$b: run scripts/build-cuda.sh where cargo is and copy target/cuda/gpu-bins.tar.xz here" | tee "$out/summary.txt"
    exit 2
  fi
done

# The CUDA libraries the binaries link: from the loader's path, else the usual toolkit and pip places.
missing() { ldd "$bin/lantern" | awk '/not found/ {print $1}'; }
if [ -n "$(missing)" ]; then
  for lib in $(missing); do
    dir=$(find /usr/local /usr/lib /usr/lib64 /opt /root "${HOME:-/root}" -maxdepth 9 -name "$lib" 2>/dev/null | head -1 | xargs -r dirname)
    [ -n "$dir" ] && export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
  nvidia-smi 2>&1 | head -15
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  ldd "$bin/lantern" | grep -E 'cuda|cublas|curand|nvrtc'
} | tee "$out/gpu.txt"
if [ -n "$(missing)" ]; then
  echo "CUDA libraries not found: $(missing | tr '\n' ' ')— install CUDA 13 or set LD_LIBRARY_PATH" | tee "$out/summary.txt"
  exit 2
fi

export CARGO_MANIFEST_DIR=$PWD # where the test and bench binaries find the fixtures and the text
export LANTERN_TEST_DEVICE=cuda
: >"$out/summary.txt"
failed=0
step() { # NAME SECONDS COMMAND...
  local name=$1 limit=$2 start rc
  shift 2
  echo "== $name: $*"
  start=$(date +%s)
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  rc=${PIPESTATUS[0]}
  local line
  line="$name: $([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc$([ "$rc" = 124 ] && echo ", over ${limit} s"))") in $(($(date +%s) - start)) s"
  echo "$line" | tee -a "$out/summary.txt"
  [ "$rc" = 0 ] || failed=1
}

step parity 180 "$bin/it" --test-threads 4 \
  model_parity::every_hook_logits_and_loss_match_transformer_lens \
  model_parity::zero_and_mean_ablation_match_transformer_lens \
  patching::patching_sweeps_match_transformer_lens \
  stages::intervention_stages_run_and_agree_with_the_analysis_functions \
  correlation::tiles_and_shards_change_nothing_and_self_matches_are_one \
  correlation::baselines_are_seeded_and_deterministic

# A fixture model with the small tokenizer, and an experiment that runs on the GPU.
work=$out/cli
rm -rf "$work"
mkdir -p "$work/model"
cp tests/fixtures/gpt2-tiny/{config.json,model.safetensors} "$work/model/"
cp tests/fixtures/tiny-tokenizer/tokenizer.json "$work/model/"
cat >"$work/gpu.toml" <<EOF
[experiment]
name = "gpu"
device = "cuda"

[models.tiny]
path = "model"

[datasets.en]
path = "$PWD/experiments/data/english.jsonl"
context = 64
n_tokens = 8192

[datasets.pairs]
pairs = [{ clean = "The cat sat on the mat", corrupted = "The dog sat on the mat", answer = " and", wrong = " the" }]

[stages.acts]
kind = "activations"
model = "tiny"
dataset = "en"
hooks = ["mlp.hook_post"]

[stages.ablate]
kind = "ablation"
model = "tiny"
dataset = "en"
[stages.ablate.sets.mean]
interventions = [{ hook = "blocks.1.mlp.hook_post", neurons = [7], set = { mean_of = "acts" } }]

[stages.patch]
kind = "patching"
model = "tiny"
dataset = "pairs"
sweeps = ["resid_pre", "heads", "neurons"]
neuron_layer = 1

[stages.itself]
kind = "correlation"
a = "tiny"
b = "tiny"
dataset = "en"
EOF
step cli 90 bash -c "'$bin/lantern' run '$work/gpu.toml' --out '$work/out' && '$bin/lantern' status '$work/gpu.toml' --out '$work/out' \
  && head -4 '$work/out/gpu/ablate/losses.csv' '$work/out/gpu/itself/matches.csv'"

step bench 300 "$bin/device"

echo "== summary (also in $out/summary.txt)"
cat "$out/summary.txt"
exit $failed

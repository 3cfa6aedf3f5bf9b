#!/usr/bin/env bash
# One prepared GPU check (issue 17), for a lent GPU machine: the `gpu` tests, eval.speed render / dub / peers on
# CUDA, and a 50-step render_dual_attn training in bf16-mixed on the demo shards, under about 8 minutes, ending
# with one summary table. Run from the repository root after `make install`:
#   bash eval/gpu_check.sh [OUT_DIR]        (default outputs/gpu_check; everything it prints is also in OUT_DIR)
set -uo pipefail
OUT=${1:-outputs/gpu_check}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
status=()
step() {  # step NAME SECONDS CMD...: run with a time limit, keep its output, note its status and time
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  status+=("| $name | $rc | $((SECONDS - start)) s |")
  echo "== $name (exit $rc, $((SECONDS - start)) s)"; tail -n 25 "$OUT/$name.txt"
}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" \
  || exit 2
step gpu_tests 120 "$PY" -m pytest -m gpu -q -p no:cacheprovider
step speed_render 90 "$PY" -m eval.speed render --device cuda --n-lip 5 25 100 --frames 10
step speed_render_bf16_autocast 60 "$PY" -c "
import torch, time
from torch.nn.attention import sdpa_kernel, SDPBackend
from eval.speed import build_renderer, render_inputs
import argparse
a = argparse.Namespace(size=256, dim=128, heads=4, query_chunk=1024, decoder='sampled', batch=8, n_face=5)
net = build_renderer(a).cuda(); x = render_inputs(a, 25, 'cuda')
from src.models.renderer.chunked_attention import sdpa_kernel as which
q = torch.randn(8, 4, 4096, 32, device='cuda', dtype=torch.bfloat16); print('SDPA kernel (bf16):', which(q, q, q))
with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
    net(**x); torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(5): net(**x)
    torch.cuda.synchronize(); print('renderer bf16 batch 8 N_l 25: %.1f frames/s' % (40 / (time.perf_counter() - t)))
"
step speed_peers 180 "$PY" -m eval.speed peers --device cuda --batches 1 8 32 --precision bf16
step speed_dub 120 "$PY" -m eval.speed dub --device cuda --seconds 8
if [ -f outputs/demo/shards/index.json ]; then SHARDS=outputs/demo/shards; else
  step tiny_shards 120 "$PY" -m data_prep.synthetic --out "$OUT/corpus" --speakers 4 --clips-per-speaker 1 --seconds 3
  step tiny_build 120 "$PY" -m data_prep.build --source synthetic --root "$OUT/corpus" --out "$OUT/shards" \
    --landmarks sidecar --fit-steps 60 --min-seconds 1 --val 0.25 --test 0.25
  SHARDS=$OUT/shards; fi
step train_bf16_50 150 "$PY" -m src.train experiment=render_dual_attn trainer=gpu data.root="$SHARDS" \
  trainer.max_steps=50 data.num_workers=4 model.perceptual=null model.w_perceptual=0 \
  model.lpips_metric.backbone_weights=null test=false logger=csv hydra.run.dir="$OUT/train_bf16"
echo; echo "| step | exit | time |"; echo "|---|---|---|"; printf '%s\n' "${status[@]}"

#!/usr/bin/env bash
# The GPU checks, in under five minutes on one GPU: the birds() training iteration at B=16 and B=20 at 256 px (time,
# peak memory, FLOPs and the fraction of the GPU's matmul peak, phase by phase), demo() and sampling, and one minute
# of birds() training on synthetic birds. Run it from the repository root after `pip install -e .`:
#
#     bash scripts/gpu_check.sh [OUT]        # OUT (default gpu_check/) gets every table and the training run
set -euo pipefail
out=${1:-gpu_check}
mkdir -p "$out"
python - <<'PY'
import torch
if not torch.cuda.is_available(): raise SystemExit("scripts/gpu_check.sh: no CUDA GPU is visible to torch here.")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, bfloat16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
PY
t0=$SECONDS
for b in 16 20; do
  attngan bench --device cuda --preset birds --batch $b --parts iteration | tee "$out/bench_birds_b$b.txt"
done
attngan bench --device cuda --preset birds --batch 16 --parts iteration --amp off | tee "$out/bench_birds_b16_float32.txt"
attngan bench --device cuda --preset demo --parts iteration,sampling | tee "$out/bench_demo.txt"
# one minute of training: birds() on a small synthetic set (untrained DAMSM encoders: this measures speed, not quality)
attngan train --data synth --preset birds --set data.synth_n=2000 --set train.batch_size=16 --out "$out/train_birds" \
  --minutes 1 --quiet --overwrite 2>&1 | grep -v "^step" | tee "$out/train_birds.txt" || true
python - "$out/train_birds" <<'PY' | tee -a "$out/train_birds.txt"
import sys, torch
from pathlib import Path
st = torch.load(Path(sys.argv[1])/'train_state.pt', map_location='cpu', weights_only=True)
h = st.get('history', [])
secs = [r.get('sec', 0.0) for r in h[5:]] or [0.0]
print(f"birds() at B=16: {len(h)} steps in one minute, {sum(secs) / len(secs):.3f} s per step after the first 5")
PY
echo "gpu_check: $((SECONDS - t0)) s in all; tables in $out/"

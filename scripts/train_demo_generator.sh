#!/bin/sh
# The shipped image-conditioned demo generator's recipe (issue #19), after `make demo` (it reads
# runs/demo/world). Each stage resumes or is skipped when done; OUT defaults to runs/gen19.
#   1. the autoencoder (64 px -> 32x32x4 latents), ~14 min on 2 cores
#   2. its decoder again, with latent noise (encoder and scale frozen), ~13 min
#   3. the latent UNet on aligned pairs, epsilon-prediction, 2,000 steps
#   4. the same UNet fine-tuned to v-prediction (the default now) from stage 3's EMA weights:
#      epsilon left x̂0 at high noise unconstrained, and samples started with the wrong colours
#   5. the decoder once more with 1 - SSIM in its loss (encoder frozen: the UNet's latents do not
#      change), ~11 min; identity cos of reconstructions 0.806 -> 0.848. The shipped vae is this one.
# Stages 3 and 4 run at 0.6-0.9 steps/s on 2 cores. Run it with nothing else on the machine: two
# OpenMP processes on two cores slow each other ~4x. Arguments go to stage 4 (a later --steps wins).
set -e
OUT=${OUT:-runs/gen19}
BIN=${BIN:-.venv/bin}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[ -f "$OUT/autoencoder/config.json" ] || "$BIN/ragar" train autoencoder --data runs/demo/world \
    --out "$OUT/autoencoder" --config demo
[ -f "$OUT/autoencoder-robust/config.json" ] || "$BIN/ragar" train autoencoder --data runs/demo/world \
    --out "$OUT/autoencoder-robust" --config demo --steps 1200 --set "autoencoder.init_from=$OUT/autoencoder" \
    --set autoencoder.freeze_encoder=true --set autoencoder.decoder_noise=0.4 --set autoencoder.learning_rate=0.0005
[ -f "$OUT/generator/checkpoint-2000/state.json" ] || "$BIN/ragar" train generator --data runs/demo/world \
    --out "$OUT/generator" --config demo --steps 2000 --set "generator.autoencoder=$OUT/autoencoder-robust" \
    --set generator.prediction_type=epsilon
[ -f "$OUT/autoencoder-ssim/config.json" ] || "$BIN/ragar" train autoencoder --data runs/demo/world \
    --out "$OUT/autoencoder-ssim" --config demo --steps 1200 --set "autoencoder.init_from=$OUT/autoencoder-robust" \
    --set autoencoder.freeze_encoder=true --set autoencoder.decoder_noise=0.4 --set autoencoder.learning_rate=0.0005 \
    --set autoencoder.ssim_weight=1.0
"$BIN/ragar" train generator --data runs/demo/world --out "$OUT/generator-v" --config demo \
    --set "generator.autoencoder=$OUT/autoencoder-robust" --set "generator.init_from=$OUT/generator/checkpoint-2000" \
    --steps 3000 --set generator.checkpoint_every=500 --set generator.sample_every=500 "$@"
# ship: stage 4's pipeline with stage 5's decoder as its vae, in float16, to $OUT/demo-generator
# (copy it over ragar/weights/demo-generator to release it; provenance.json is written by hand)
"$BIN/python" - "$OUT" <<'PY'
import sys
from ragar.generation.autoencoder import load_autoencoder
from ragar.generation.pipeline import RagarPipeline
out = sys.argv[1]
pipe = RagarPipeline.from_pretrained(f"{out}/generator-v", scheduler="ddpm")
pipe.register_modules(vae=load_autoencoder(f"{out}/autoencoder-ssim"))
pipe.save_pretrained(f"{out}/demo-generator", half=True)
PY

#!/bin/sh
# The shipped image-conditioned demo generator's recipe (issue #19), after `make demo` (it reads
# runs/demo/world). Each stage resumes or is skipped when done; OUT defaults to runs/gen19.
#   1. the autoencoder (64 px -> 32x32x4 latents), ~14 min on 2 cores
#   2. its decoder again, with latent noise (encoder and scale frozen), ~13 min
#   3. the latent UNet on aligned pairs, epsilon-prediction, 2,000 steps
#   4. the same UNet fine-tuned to v-prediction (the default now) from stage 3's EMA weights:
#      epsilon left x̂0 at high noise unconstrained, and samples started with the wrong colours
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
"$BIN/ragar" train generator --data runs/demo/world --out "$OUT/generator-v" --config demo \
    --set "generator.autoencoder=$OUT/autoencoder-robust" --set "generator.init_from=$OUT/generator/checkpoint-2000" \
    --steps 3000 --set generator.checkpoint_every=500 --set generator.sample_every=500 "$@"

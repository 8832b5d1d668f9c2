#!/bin/sh
# The shipped demo generator's recipe (issue #19: 8 latent channels; the weights' provenance.json lists
# the commands each stage ran), after `make demo` (it reads runs/demo/world). A stage is
# skipped when done (for a UNet run: its training.json, written when it finishes) and an interrupted
# UNet run resumes from its last checkpoint. OUT defaults to runs/gen19. The shapes are
# configs/demo.yaml's, and so is stage 1's step count:
#   1. the autoencoder (64 px -> 32x32x8 latents; 64-wide decoder, L1 + MSE + 1 - SSIM), 1,500 steps
#   2. its decoder again with latent noise (encoder and latent scale frozen, so the latents do not
#      change), 1,200 steps: robust to the sampler's latent errors; it ships as the pipeline's vae
#   3. the latent UNet on aligned pairs (v-prediction) on stage 1's latents, 5,000 steps in two runs:
#      1,500 steps, then 3,500 more from the first run's EMA weights with a fresh optimizer. Two runs
#      because a working session here is 3 hours: the first run's weights were carried to the next
#      session in float16 (15 MB, committed while they were needed), which a resumable checkpoint
#      (120 MB with the optimizer's state) could not be
# Run it with nothing else on the machine: two OpenMP processes on two cores slow each other ~4x.
# Arguments go to both runs of stage 3.
set -e
OUT=${OUT:-runs/gen19}
BIN=${BIN:-.venv/bin}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
[ -f "$OUT/autoencoder/config.json" ] || "$BIN/ragar" train autoencoder --data runs/demo/world \
    --out "$OUT/autoencoder" --config demo
[ -f "$OUT/autoencoder-robust/config.json" ] || "$BIN/ragar" train autoencoder --data runs/demo/world \
    --out "$OUT/autoencoder-robust" --config demo --steps 1200 --set "autoencoder.init_from=$OUT/autoencoder" \
    --set autoencoder.freeze_encoder=true --set autoencoder.decoder_noise=0.4 --set autoencoder.learning_rate=0.0005
[ -f "$OUT/generator-a/training.json" ] || "$BIN/ragar" train generator --data runs/demo/world \
    --out "$OUT/generator-a" --config demo --steps 1500 --set "generator.autoencoder=$OUT/autoencoder" "$@"
[ -f "$OUT/generator/training.json" ] || "$BIN/ragar" train generator --data runs/demo/world \
    --out "$OUT/generator" --config demo --steps 3500 --set "generator.autoencoder=$OUT/autoencoder" \
    --set "generator.init_from=$OUT/generator-a" "$@"
# its reconstruction quality on the renders the autoencoder held out (PSNR, NearID identity cos)
[ -f "$OUT/ae-eval/autoencoder.json" ] || "$BIN/ragar" eval autoencoder --data runs/demo/world \
    --autoencoder "$OUT/autoencoder-robust" --config demo --out "$OUT/ae-eval"
# the pipeline (stage 3's EMA weights, stage 2's decoder as its vae) in float16, with provenance.json
# from the stages' own records, to $OUT/demo-generator; without --dest it replaces the shipped one
"$BIN/python" scripts/release_generator.py --out "$OUT" --ae-eval "$OUT/ae-eval/autoencoder.json" \
    --dest "$OUT/demo-generator"

"""Training the embedded generator: a small ``UNet2DConditionModel`` (on the latents of the
autoencoder when ``generator.autoencoder`` names one, else on pixels) plus the adapter.

Pairs follow the task (one per positive event of a user): the *target* is a render of the item the
user clicked or liked; the *reference* is another item of the same identity in another style (the
thing to render); the *preference* is the retrieval-weighted embedding of the user's history
before the event with respect to that reference (``recsys.preference``). On a world, target and
reference are rendered **aligned**: the same identity in the same view (pose, scale, background,
light), differing only in style, so the concatenated reference says exactly what to keep and the
preference what to change. Each condition is dropped independently (classifier-free dropout;
dropping the reference drops its image and its tokens), so inference can guide on each.

Runs under ``accelerate`` (CPU here, one or many GPUs elsewhere). Checkpoints are safetensors +
JSON, optimizer state included, so resuming never unpickles anything; batches are drawn from a
generator seeded by (seed, step), so a resumed run is identical to an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ragar.generation.adapter import AdapterConfig, PreferenceAdapter
from ragar.generation.configs import GeneratorConfig
from ragar.generation.pairs import GeneratorPairs, make_pairs

__all__ = ["GeneratorConfig", "GeneratorPairs", "build_unet", "make_pairs", "train_generator"]


def build_unet(cfg: GeneratorConfig, channels: int = 3, sample_size: int | None = None):
    """The UNet for ``channels``-channel samples of side ``sample_size`` (default: pixels at
    ``cfg.image_size``); with ``cfg.reference_image`` it takes as many channels again of reference."""
    from diffusers import UNet2DConditionModel

    attn = cfg.cross_attention_blocks
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    return UNet2DConditionModel(
        sample_size=sample_size or cfg.image_size, in_channels=channels * (2 if cfg.reference_image else 1),
        out_channels=channels, layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels), down_block_types=tuple(down), up_block_types=tuple(up),
        cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=min(8, cfg.block_out_channels[0]))


# --- checkpoints (safetensors + JSON, no pickle) ----------------------------------------------------

def _save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / "optimizer.safetensors"))
    (path / "optimizer.json").write_text(json.dumps({"param_groups": sd["param_groups"]}))


def _load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    flat = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict] = {}
    for key, v in flat.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    groups = json.loads((path / "optimizer.json").read_text())["param_groups"]
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(path: Path, step: int, unet, adapter, opt, ema, losses: list[float],
                    rank_log: list | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(path / "unet")
    adapter.save_pretrained(path / "adapter")
    _save_optimizer(opt, path)
    shadow = {f"ema.{i}": p.detach().contiguous() for i, p in enumerate(ema.shadow_params)}
    save_file(shadow, str(path / "ema.safetensors"))
    # the EMA's decay warms up with its own step counter: it must resume too
    (path / "state.json").write_text(json.dumps({"step": step, "losses": losses, "rank": rank_log or [],
                                                 "ema_optimization_step": int(ema.optimization_step)}))
    return path


@torch.no_grad()
def sample_grid(unet, adapter, pairs: GeneratorPairs, cfg: GeneratorConfig, n: int = 8, steps: int = 20, vae=None):
    """Rows: the references of the first ``n`` pairs (when the UNet reads them), their targets,
    and samples for their conditions."""
    from diffusers import DDIMScheduler
    from PIL import Image

    from ragar.generation.pipeline import RagarPipeline

    was_training = unet.training
    unet.eval()
    pipe = RagarPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                                                            clip_sample=vae is None,
                                                            prediction_type=cfg.prediction_type),
                         adapter=adapter, vae=vae)
    pipe.set_progress_bar_config(disable=True)
    n = min(n, len(pairs.targets))
    refs = pairs.reference_images[:n] if pipe.conditions_on_image else None
    out = pipe(reference_embeds=pairs.reference[:n], preference_embeds=pairs.preference[:n], image=refs,
               num_inference_steps=steps, generator=torch.Generator(device=unet.device).manual_seed(cfg.seed)).images
    unet.train(was_training)

    def u8(x: torch.Tensor) -> np.ndarray:
        return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    rows = ([u8(refs)] if refs is not None else []) + [u8(pairs.targets[:n]), out]
    return Image.fromarray(np.concatenate([np.concatenate(list(r), 1) for r in rows], 0))


def _rank_step(unet, adapter, scheduler, rank_task, data: TrainingTensors, pairs: GeneratorPairs, rows: torch.Tensor,
               cfg: GeneratorConfig, g: torch.Generator, device) -> tuple[torch.Tensor, float]:
    """Rank-task loss on ``rows``: the same noisy target denoised with the pair's own preference
    and with the next row's (another user's), scored for the pair's user (see rank_task); latents
    are decoded (differentiably) before the ranker sees them."""
    from ragar.generation.rank_task import predicted_clean

    b = len(rows)
    x0, ref, pref = data.x0[rows], pairs.reference[rows], pairs.preference[rows]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(min(cfg.rank_max_t, cfg.num_train_timesteps), (b,), generator=g)
    xt = scheduler.add_noise(x0, noise, t).to(device)
    other = pref.roll(1, 0)
    cond = adapter(torch.cat([ref, ref]).to(device), torch.cat([pref, other]).to(device))
    x2 = torch.cat([xt, xt])
    inp = x2 if data.image is None else torch.cat([x2, torch.cat([data.image[rows]] * 2).to(device)], 1)
    out = unet(inp.contiguous(memory_format=torch.channels_last), torch.cat([t, t]).to(device),
               encoder_hidden_states=cond).sample
    clean = predicted_clean(scheduler, x2, out.float(), torch.cat([t, t]).to(device))
    consistency = _consistency(rank_task, inp[:b], t.to(device), ref, pref, scheduler, clean[:b],
                               device) if cfg.rank_consistency > 0 else None
    if data.vae is not None:
        from ragar.generation.autoencoder import decode

        clean = decode(data.vae, clean)
    own, oth = clean[:b], clean[b:]
    loss = rank_task.loss(own, oth, rows)
    if consistency is not None:
        loss = loss + cfg.rank_consistency * consistency
    return loss, rank_task.win_rate(own.detach(), oth.detach(), rows)


def _consistency(rank_task, inp, t, ref, pref, scheduler, clean_own, device) -> torch.Tensor:
    """The consistency term: the MSE between the own-preference x̂0 (in the UNet's space, before
    decoding) and the starting weights' x̂0 from the same noisy input and conditions. The ranking
    loss may then move the image only as far as it pays for in this term (a trust region around the
    generator it fine-tunes, which keeps the reference's identity)."""
    from ragar.generation.rank_task import predicted_clean

    unet0, adapter0 = rank_task.anchor
    with torch.no_grad():
        out0 = unet0(inp.contiguous(memory_format=torch.channels_last), t,
                     encoder_hidden_states=adapter0(ref.to(device), pref.to(device))).sample
        clean0 = predicted_clean(scheduler, inp[:, :out0.shape[1]], out0.float(), t)
    return torch.nn.functional.mse_loss(clean_own, clean0)


@dataclass
class TrainingTensors:
    """What the UNet trains on: the clean samples (targets, or their latents), the reference
    images concatenated with them (or their latents; ``None`` without image conditioning) and the
    frozen autoencoder (``None`` in pixel space)."""

    x0: torch.Tensor
    image: torch.Tensor | None
    vae: object | None = None


@torch.no_grad()
def training_tensors(pairs: GeneratorPairs, cfg: GeneratorConfig, vae=None) -> TrainingTensors:
    """Encode the pairs once (the autoencoder is frozen): each step then reads latents."""
    if cfg.reference_image and pairs.reference_images is None:
        raise ValueError("generator.reference_image is on but the pairs carry no reference images")
    if vae is None:
        return TrainingTensors(pairs.targets, pairs.reference_images if cfg.reference_image else None)
    from ragar.generation.autoencoder import encode

    # encoded where the autoencoder is (a GPU: seconds, not minutes), kept on the CPU with the pairs
    x0 = encode(vae, pairs.targets).float().cpu()
    image = encode(vae, pairs.reference_images).float().cpu() if cfg.reference_image else None
    return TrainingTensors(x0, image, vae)


def latest_checkpoint(out: Path) -> Path | None:
    cks = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return cks[-1] if cks else None


def train_generator(pairs: GeneratorPairs, out: str | Path, cfg: GeneratorConfig, resume: bool = True,
                    progress: bool = True, provenance: dict | None = None, rank_task=None,
                    device: torch.device | str | None = None) -> dict:
    """Train (or resume) into ``out``; returns a summary (final loss, steps, seconds).

    ``rank_task`` (a :class:`ragar.generation.rank_task.RankTask` built over ``pairs``) adds the
    ranking loss when ``cfg.rank_task``; ``cfg.init_from`` starts from a trained generator, so the
    rank task and its ablation (the same fine-tuning without it) start from the same weights."""
    if cfg.rank_task and rank_task is None:
        raise ValueError("generator.rank_task is on but no rank task (ranker) was given")
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    acc = _accelerator(cfg, device)
    unet, adapter, vae = _initial_models(pairs, cfg)
    if rank_task is not None and cfg.rank_consistency > 0:  # the starting weights, frozen, before any resume
        rank_task.anchor = tuple(copy.deepcopy(m).eval().requires_grad_(False) for m in (unet, adapter))
    if vae is not None:
        vae.to(acc.device).requires_grad_(False)
    data = training_tensors(pairs, cfg, vae)
    params = [*unet.parameters(), *adapter.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=1e-4)
    ema = EMAModel(params, decay=cfg.ema_decay)
    scheduler = _noise_schedule(cfg, latent=vae is not None)
    ck = latest_checkpoint(out) if resume else None
    start, losses, rank_log = _resume(ck, unet, adapter, opt, ema) if ck is not None else (0, [], [])
    if cfg.batch_size % acc.num_processes:
        raise ValueError(f"generator.batch_size {cfg.batch_size} must divide evenly over {acc.num_processes} processes")
    unet, adapter, opt = acc.prepare(unet, adapter, opt)
    ema.to(acc.device)  # the shadow weights live beside the weights they follow
    if rank_task is not None:
        rank_task.to(acc.device)
    # data parallel: every process draws the same global batch from (seed, step) and takes its own
    # slice, so N processes compute the gradient of the same batch as one (averaged by DDP)
    mine = slice(acc.process_index, None, acc.num_processes)
    t0 = time.perf_counter()
    bar = tqdm(range(start, cfg.steps), desc="train generator", disable=not (progress and acc.is_main_process),
               initial=start, total=cfg.steps)
    for step in bar:
        g, idx, noise, t, drop_r, drop_p = _draw(cfg, data.x0.shape, step, mine)
        x0, ref, pref = data.x0[idx], pairs.reference[idx], pairs.preference[idx]
        with acc.accumulate(unet):
            xt = scheduler.add_noise(x0, noise, t)
            if data.image is not None:  # a dropped reference is zeros, as at inference's unconditional branch
                xt = torch.cat([xt, data.image[idx] * (~drop_r).view(-1, 1, 1, 1)], 1)
            xt = xt.contiguous(memory_format=torch.channels_last)
            cond = adapter(ref.to(acc.device), pref.to(acc.device), drop_r.to(acc.device), drop_p.to(acc.device))
            pred = unet(xt.to(acc.device), t.to(acc.device), encoder_hidden_states=cond).sample
            target = noise if cfg.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
            loss = torch.nn.functional.mse_loss(pred.float(), target.to(acc.device))
            total = loss
            if cfg.rank_task:
                rl, win = _rank_step(unet, adapter, scheduler, rank_task, data, pairs, idx[:cfg.rank_batch], cfg,
                                     g, acc.device)
                total = loss + cfg.rank_weight * rl
                rank_log.append([rl.item(), win])
            acc.backward(total)
            opt.step()
            opt.zero_grad()
        ema.step(params)
        losses.append(acc.reduce(loss.detach(), "mean").item())
        bar.set_postfix(refresh=False, loss=f"{np.mean(losses[-20:]):.4f}",
                        **({"rank": f"{np.mean([r[0] for r in rank_log[-20:]]):.3f}"} if rank_log else {}))
        if acc.is_main_process:
            _write_progress(out, step + 1, cfg, acc.unwrap_model(unet), acc.unwrap_model(adapter), vae, pairs, opt,
                            ema, losses, rank_log)
    bar.close()
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return {"steps": cfg.steps, "process": acc.process_index}
    # the released weights are the EMA weights
    ema.copy_to(params)
    from ragar.generation.pipeline import RagarPipeline

    RagarPipeline(acc.unwrap_model(unet), scheduler, acc.unwrap_model(adapter), vae).save_pretrained(out)
    summary = _summary(cfg, pairs, start, losses, rank_log, time.perf_counter() - t0, acc, provenance)
    (out / "training.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _noise_schedule(cfg: GeneratorConfig, latent: bool):
    """The training scheduler, saved with the generator: x̂0 clipping to [-1, 1] suits pixels, and
    unit-variance latents would be cut off by it; the sampler reads ``prediction_type`` from it."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, clip_sample=not latent,
                         prediction_type=cfg.prediction_type)


def _write_progress(out: Path, done: int, cfg: GeneratorConfig, unet, adapter, vae, pairs: GeneratorPairs, opt, ema,
                    losses: list, rank_log: list) -> None:
    """The sample grid and the checkpoint due after step ``done``, if any. The grid is drawn with the
    EMA weights, the ones a release ships, and the training weights are put back after it."""
    if done % cfg.sample_every == 0:
        params = [*unet.parameters(), *adapter.parameters()]
        ema.store(params)
        ema.copy_to(params)
        try:
            sample_grid(unet, adapter, pairs, cfg, vae=vae).save(out / f"samples-{done}.png")
        finally:
            ema.restore(params)
    if done % cfg.checkpoint_every == 0 or done == cfg.steps:
        save_checkpoint(out / f"checkpoint-{done}", done, unet, adapter, opt, ema, losses, rank_log)


def _accelerator(cfg: GeneratorConfig, device: torch.device | str | None):
    from accelerate import Accelerator

    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                          else "cpu")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # accelerate puts a single process on the current CUDA device
    return Accelerator(mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                       cpu=device.type == "cpu")


def _draw(cfg: GeneratorConfig, shape: torch.Size, step: int, mine: slice):
    """Step ``step``'s random draws, from (seed, step) alone: the whole global batch is drawn, then
    this process's rows are kept (so N processes compute the gradient of the same batch as one).
    Returns the generator (the rank task draws on after it) and the rows, noise, timesteps, drops."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    idx = torch.randint(shape[0], (cfg.batch_size,), generator=g)
    noise = torch.randn((len(idx), *shape[1:]), generator=g)
    t = torch.randint(cfg.num_train_timesteps, (len(idx),), generator=g)
    drop_r = torch.rand(len(idx), generator=g) < cfg.drop_reference
    drop_p = torch.rand(len(idx), generator=g) < cfg.drop_preference
    return (g, *(a[mine] for a in (idx, noise, t, drop_r, drop_p)))


def _initial_models(pairs: GeneratorPairs, cfg: GeneratorConfig):
    """A new UNet and adapter, or ``cfg.init_from``'s weights (fine-tuning), and the frozen
    autoencoder (``cfg.autoencoder``, else the one ``cfg.init_from`` was trained with; ``None``:
    pixel space)."""
    from diffusers import UNet2DConditionModel

    from ragar.generation.autoencoder import downscale_of, load_autoencoder

    init = Path(cfg.init_from) if cfg.init_from else None
    vae = None
    if cfg.autoencoder:
        vae = load_autoencoder(cfg.autoencoder)
    elif init is not None and (init / "vae").is_dir():
        vae = load_autoencoder(init / "vae")
    channels, size = 3, cfg.image_size
    if vae is not None:
        f = downscale_of(vae)
        if cfg.image_size % f:
            raise ValueError(f"generator.image_size {cfg.image_size} is not a multiple of the autoencoder's "
                             f"downscale {f}")
        channels, size = vae.config.latent_channels, cfg.image_size // f
    torch.manual_seed(cfg.seed)
    unet = build_unet(cfg, channels, size).to(memory_format=torch.channels_last)  # +6% steps/s on CPU, measured
    adapter = PreferenceAdapter.from_sizes(AdapterConfig(pairs.reference.shape[1], cfg.cross_attention_dim,
                                                          cfg.adapter_tokens))
    if init is not None:
        unet.load_state_dict(UNet2DConditionModel.from_pretrained(init / "unet", torch_dtype=torch.float32)
                             .state_dict())
        adapter.load_state_dict(PreferenceAdapter.from_pretrained(init / "adapter").state_dict())
        if (init / "ema.safetensors").exists():  # a training checkpoint: start from its EMA weights
            _copy_ema(load_file(str(init / "ema.safetensors")), [*unet.parameters(), *adapter.parameters()])
    return unet, adapter, vae


def _copy_ema(shadow: dict[str, torch.Tensor], params: list[torch.nn.Parameter]) -> None:
    """Copy a checkpoint's EMA shadow (``ema.{i}``, in parameter order) into ``params``; the
    weights a finished run releases (:func:`train_generator` copies them the same way)."""
    if len(shadow) != len(params):
        raise ValueError(f"the checkpoint's EMA holds {len(shadow)} tensors for {len(params)} parameters")
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(shadow[f"ema.{i}"])


def _resume(ck: Path, unet, adapter, opt, ema) -> tuple[int, list, list]:
    """Load checkpoint ``ck`` into the models, optimizer and EMA; (step, losses, rank log) so far."""
    from diffusers import UNet2DConditionModel

    unet.load_state_dict(UNet2DConditionModel.from_pretrained(ck / "unet").state_dict())
    adapter.load_state_dict(PreferenceAdapter.from_pretrained(ck / "adapter").state_dict())
    _load_optimizer(opt, ck)
    shadow = load_file(str(ck / "ema.safetensors"))
    ema.shadow_params = [shadow[f"ema.{i}"] for i in range(len(shadow))]
    state = json.loads((ck / "state.json").read_text())
    ema.optimization_step = state["ema_optimization_step"]
    return state["step"], state["losses"], state.get("rank", [])


def _summary(cfg: GeneratorConfig, pairs: GeneratorPairs, start: int, losses: list, rank_log: list, seconds: float,
             acc, provenance: dict | None) -> dict:
    return {"steps": cfg.steps, "resumed_from": start,
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "first_loss": float(np.mean(losses[:20])) if losses else None,
            "seconds_this_run": seconds, "pairs": len(pairs.targets), "config": cfg.model_dump(),
            "style_pairs": int(pairs.style_pair.sum()) if pairs.style_pair is not None else 0,
            "torch_threads": torch.get_num_threads(), "device": str(acc.device), "processes": acc.num_processes,
            "rank_loss_final": float(np.mean([r[0] for r in rank_log[-50:]])) if rank_log else None,
            "rank_win_rate_final": float(np.mean([r[1] for r in rank_log[-50:]])) if rank_log else None,
            "rank_win_rate_first": float(np.mean([r[1] for r in rank_log[:50]])) if rank_log else None,
            **(provenance or {})}

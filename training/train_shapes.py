"""Train ``wan-shapes``: a small `WanTransformer3DModel` on procedural shapes clips.

Flow matching as `FlowMatchEulerDiscreteScheduler` (and so `WanPipeline`) reads it: the
transformer gets ``x_s = (1 - s) * x0 + s * noise`` at timestep ``1000 * s`` and predicts the
velocity ``noise - x0``. Noise levels ``s`` are drawn uniformly, then shifted by the same
``shift`` the sampler uses (``s = shift*u / (1 + (shift-1)*u)``), so training sees the noise
levels sampling visits. Clips are drawn on the device every step (`shapes_data`),
encoded by the pixel-space autoencoder and paired with their prompt's embedding from the
pipeline's own `encode_prompt` (an empty prompt, for classifier-free guidance, with
probability ``uncond_probability``). bf16 autocast, fp32 weights, AdamW.

Run from the repository root with ``dit_sparse`` importable (``pip install -e .``, or
``PYTHONPATH=.``)::

    python training/train_shapes.py --out runs/shapes --until-step 2600       # first run
    python training/train_shapes.py --resume runs/shapes --out runs/shapes    # resumes
    python training/train_shapes.py --resume runs/shapes --weights dit_sparse/data/wan-shapes \
        --config longer.json --out runs/shapes   # restarts the optimizer from shipped weights
    python training/train_shapes.py --export runs/shapes --to dit_sparse/data/wan-shapes

With ``--weights``, a config may add latent channels (``config-motion.json`` adds the motion
channels): the weights are widened with zeros first (`widen_channels`).

A run directory holds ``checkpoint/`` (weights and optimizer moments, `checkpoint`),
``run.json`` (config, latent statistics, one entry per run with its steps, speed and
evaluation), ``loss.csv`` and ``loss.png``, and ``samples.png`` (first evaluation's clips).
A run stops at ``--until-step``, at the config's ``total_steps`` or when ``--train-seconds``
have passed since it started, saves, then evaluates (`dit_sparse.synthetic.evaluate_motion`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from checkpoint import load_sharded, restore_training_state, save_sharded, training_state
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from shapes_data import latent_statistics, render_clips, sample_clip_batch, to_frames

from dit_sparse.pipelines.shapes import PixelSpaceVideoAutoencoder, assemble_pipeline
from dit_sparse.synthetic import (
    all_attributes,
    check_motion,
    evaluate_motion,
    evaluation_prompts,
    pass_rate,
)

DEFAULT_CONFIG = Path(__file__).with_name("config.json")
CSV_FIELDS = (
    "run",
    "step",
    "clips",
    "train_seconds",
    "lr",
    "loss",
    "loss_low_noise",
    "loss_mid_noise",
    "loss_high_noise",
    "grad_norm",
)


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)


def without(settings: Any, keys: tuple[str, ...]) -> Any:
    """``settings`` less ``keys`` (when it is a dict)."""
    if not isinstance(settings, dict):
        return settings
    return {k: v for k, v in settings.items() if k not in keys}


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def build_pipeline(config: dict, stats: tuple[list[float], list[float]] | None) -> WanPipeline:
    """The pipeline under training: seeded random transformer, autoencoder with ``stats``."""
    torch.manual_seed(config["seed"])
    transformer = WanTransformer3DModel(**config["transformer"])
    mean, std = stats if stats is not None else (None, None)
    autoencoder = PixelSpaceVideoAutoencoder(
        **config["autoencoder"], latents_mean=mean, latents_std=std
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=config["scheduler_shift"])
    return assemble_pipeline(transformer, autoencoder, scheduler)


def clip_statistics(config: dict) -> tuple[list[float], list[float]]:
    """Latent mean/std of a fixed set of clips, drawn on the CPU so every machine agrees."""
    data = config["data"]
    generator = torch.Generator().manual_seed(config["seed"])
    clips = sample_clip_batch(data["statistics_clips"], generator)
    frames = config["data"]["size_cycle"][0][0]
    drawn = render_clips(clips, frames, data["height"], data["width"], generator)
    return latent_statistics(PixelSpaceVideoAutoencoder(**config["autoencoder"]), *drawn)


def prompt_table(pipe: WanPipeline, device: torch.device) -> torch.Tensor:
    """Embeddings ``[V + 1, L, text_dim]`` of every prompt in vocabulary order, then of "".

    Made by the pipeline's own `encode_prompt` at its default length, so training sees exactly
    what sampling will (row ``V`` is the empty prompt, all zeros: the guidance baseline).
    """
    prompts = [a.prompt for a in all_attributes()] + [""]
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(
            prompts, do_classifier_free_guidance=False, max_sequence_length=512, device=device
        )
    return embeds.float()


def weights_only(model_dir: str) -> dict[str, torch.Tensor]:
    """A shipped model's transformer weights as a checkpoint without optimizer moments: the
    run goes on from them with a fresh AdamW (for when a run's checkpoint was not kept)."""
    from safetensors.torch import load_file

    weights = load_file(Path(model_dir) / "transformer" / "diffusion_pytorch_model.safetensors")
    return {f"model/{name}": tensor.float() for name, tensor in weights.items()}


# Config entries a fine-tune may change to add latent channels (`widen_channels`).
CHANNEL_KEYS = {
    "transformer": ("in_channels", "out_channels"),
    "autoencoder": ("z_dim", "motion_channels"),
}


def widen_channels(tensors: dict[str, torch.Tensor], model: WanTransformer3DModel) -> None:
    """Pad shipped weights, in place, to ``model``'s wider latents (motion channels appended):
    zero input weights and zero output rows, so the widened model starts as the shipped one on
    the pixel channels and predicts zero for the new ones."""
    params = dict(model.named_parameters())
    patch = math.prod(model.config.patch_size)
    for key, tensor in list(tensors.items()):
        name = key.split("/", 1)[1]
        if tensor.shape == params[name].shape:
            continue
        if name == "patch_embedding.weight":
            extra = params[name].shape[1] - tensor.shape[1]
            tensors[key] = torch.cat(
                [tensor, tensor.new_zeros(tensor.shape[0], extra, *tensor.shape[2:])], 1
            )
        elif name in ("proj_out.weight", "proj_out.bias"):
            # Output features are (position in patch, channel), channel fastest.
            grouped = tensor.reshape(patch, -1, *tensor.shape[1:])
            extra = params[name].shape[0] // patch - grouped.shape[1]
            zeros = grouped.new_zeros(patch, extra, *tensor.shape[1:])
            tensors[key] = torch.cat([grouped, zeros], 1).flatten(0, 1)
        else:
            raise SystemExit(
                f"cannot widen {name} from {tuple(tensor.shape)} to {tuple(params[name].shape)}"
            )


def lr_factor(step: int, optim: dict, warmup_from: int = 0) -> float:
    """Linear warm-up from step ``warmup_from`` (a fresh optimizer's first step), constant,
    then a cosine down to ``final_lr_fraction`` over the last ``decay_fraction`` of
    ``total_steps``."""
    warm = step - warmup_from
    if 0 <= warm < optim["warmup_steps"]:
        return (warm + 1) / optim["warmup_steps"]
    decay_start = optim["total_steps"] * (1.0 - optim["decay_fraction"])
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / (optim["total_steps"] - decay_start))
    final = optim["final_lr_fraction"]
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def training_batch(
    step: int, config: dict, pipe: WanPipeline, table: torch.Tensor, device: torch.device
):
    """Step ``step``'s inputs and target; every draw comes from a generator seeded by the step,
    so a resumed run sees the batches the uninterrupted run would have."""
    data = config["data"]
    frames, batch = data["size_cycle"][step % len(data["size_cycle"])]
    generator = torch.Generator(device).manual_seed(config["seed"] * 1_000_003 + step)
    clips = sample_clip_batch(batch, generator)
    drawn = render_clips(clips, frames, data["height"], data["width"], generator)
    x0 = pipe.vae.normalize(pipe.vae.encode(*drawn))
    uncond = torch.rand(batch, generator=generator, device=device) < data["uncond_probability"]
    text = table[torch.where(uncond, table.shape[0] - 1, clips.index)]
    shift = config["scheduler_shift"]
    u = torch.rand(batch, generator=generator, device=device)
    sigma = shift * u / (1.0 + (shift - 1.0) * u)
    noise = torch.randn(x0.shape, generator=generator, device=device)
    s = sigma.view(-1, 1, 1, 1, 1)
    return (1.0 - s) * x0 + s * noise, sigma, text, noise - x0


class LossLog:
    """Accumulates per-noise-level losses on the device; one sync per logged row."""

    def __init__(self, path: Path, run: int, device: torch.device) -> None:
        self.path, self.run, self.device = path, run, device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(3, device=self.device)
        self.counts = torch.zeros(3, device=self.device)
        self.grad = torch.zeros((), device=self.device)
        self.steps = 0

    def add(self, per_clip: torch.Tensor, sigma: torch.Tensor, grad_norm: torch.Tensor) -> None:
        bucket = (sigma * 3).long().clamp(max=2)  # thirds of the noise range
        self.sums.index_add_(0, bucket, per_clip.detach().float())
        self.counts.index_add_(0, bucket, torch.ones_like(sigma))
        self.grad += grad_norm.detach().float()
        self.steps += 1

    def write(self, step: int, clips: int, seconds: float, lr: float) -> dict[str, Any]:
        sums, counts = self.sums.tolist(), self.counts.tolist()
        by_level = [s / c if c else float("nan") for s, c in zip(sums, counts)]
        row = {
            "run": self.run,
            "step": step,
            "clips": clips,
            "train_seconds": round(seconds, 1),
            "lr": f"{lr:.3g}",
            "loss": round(sum(sums) / max(1.0, sum(counts)), 5),
            "loss_low_noise": round(by_level[0], 5),
            "loss_mid_noise": round(by_level[1], 5),
            "loss_high_noise": round(by_level[2], 5),
            "grad_norm": round(self.grad.item() / max(1, self.steps), 4),
        }
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.reset()
        return row


def keep_rows_until(path: Path, step: int) -> None:
    """Drop rows logged after ``step`` (a run killed after its last checkpoint logged them)."""
    with path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def plot_loss(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    step = [int(r["step"]) for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=[3, 1])
    for key, label in (
        ("loss", "all"),
        ("loss_low_noise", "noise < 1/3"),
        ("loss_mid_noise", "1/3 .. 2/3"),
        ("loss_high_noise", "> 2/3"),
    ):
        top.plot(step, [float(r[key]) for r in rows], label=label, lw=1.5 if key == "loss" else 1)
    top.set_yscale("log")
    top.set_ylabel("flow-matching loss (MSE)")
    top.legend(title="noise level")
    top.grid(alpha=0.3)
    for run in sorted({r["run"] for r in rows})[1:]:
        first = next(int(r["step"]) for r in rows if r["run"] == run)
        top.axvline(first, color="grey", ls=":", lw=1)
    bottom.plot(step, [float(r["lr"]) for r in rows], color="black")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    fig.suptitle("wan-shapes training (dotted: a resumed run starts)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def save_samples(frames, verdicts, path: Path, count: int = 8, columns: int = 6) -> None:
    """A grid: one generated clip a row, ``columns`` frames spread over it, verdict beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    count = min(count, len(frames))
    picks = np.linspace(0, frames.shape[1] - 1, columns).round().astype(int)
    fig, axes = plt.subplots(count, 1, figsize=(columns * 1.1, count * 1.3))
    for axis, clip, verdict in zip(np.atleast_1d(axes), frames[:count], verdicts):
        axis.imshow(np.concatenate(list(clip[picks]), 1))
        words = verdict.prompt.split()
        mark = "pass" if verdict.passed else f"FAIL: {verdict.reason}"
        axis.set_title(f"{' '.join(words[1:6])} {words[8]} | {mark}", fontsize=7)
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(pipe: WanPipeline, config: dict, device: torch.device, out: Path, start: float):
    """Motion-check pass rates per evaluation setting, and the checker's own rate on drawn
    clips (an upper bound: the checker's misses on ground truth)."""
    spec = config["eval"]
    prompts = evaluation_prompts(spec["prompts"]) * spec["repeats"]
    results: dict[str, Any] = {"prompts": len(prompts)}
    generator = torch.Generator(device).manual_seed(12345)
    clips = sample_clip_batch(spec["ground_truth_clips"], generator)
    frames = to_frames(
        render_clips(
            clips, spec["settings"][0]["frames"], spec["height"], spec["width"], generator
        ).video
    ).cpu()
    truth = [check_motion(f, p) for f, p in zip(frames, clips.prompts())]
    results["ground_truth_rate"] = pass_rate(truth)
    log(f"checker on drawn clips: {results['ground_truth_rate']:.3f}", start)
    pipe.set_progress_bar_config(disable=True)
    trained_scheduler = pipe.scheduler
    results["settings"] = []
    for index, setting in enumerate(spec["settings"]):
        began = time.perf_counter()
        # A setting may sample with another shift than training's (the shipped scheduler's).
        shift = setting.get("shift", config["scheduler_shift"])
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            evaluation = evaluate_motion(
                pipe,
                prompts,
                frames=setting["frames"],
                height=spec["height"],
                width=spec["width"],
                steps=setting["steps"],
                guidance=setting["guidance"],
                batch_size=spec["batch_size"],
            )
        verdicts = evaluation.verdicts
        failures = [f"{v.prompt}: {v.reason}" for v in verdicts if not v.passed]
        results["settings"].append(
            {
                **setting,
                "shift": shift,
                "rate": evaluation.rate,
                "shape_found_rate": sum(v.visible_frames > 0 for v in verdicts) / len(verdicts),
                "seconds": round(time.perf_counter() - began, 2),
                "failures": failures[:12],
            }
        )
        log(f"eval {setting}: pass rate {evaluation.rate:.3f}", start)
        if index == 0:
            save_samples(evaluation.frames, verdicts, out / "samples.png")
    pipe.scheduler = trained_scheduler
    return results


def train(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    if args.resume:
        previous = Path(args.resume)
        record = json.loads((previous / "run.json").read_text())
        # An explicit --config replaces the recorded one (e.g. a longer schedule); the data,
        # model and autoencoder settings must stay those the checkpoint was trained with.
        config = json.loads(Path(args.config).read_text()) if args.config else record["config"]
        # A run from --weights (a fine-tune, fresh optimizer) may change the data, and add
        # latent channels (`widen_channels`).
        fixed = ("transformer", "autoencoder", "scheduler_shift", "seed")
        for part in fixed if args.weights else (*fixed, "data"):
            free = CHANNEL_KEYS.get(part, ()) if args.weights else ()
            if without(config[part], free) != without(record["config"][part], free):
                raise SystemExit(f"--config changes {part!r}, which a resumed run cannot")
        widened = config["autoencoder"] != record["config"]["autoencoder"]
        record["config"] = config
        step = record["runs"][-1]["end_step"]
        tensors = (
            weights_only(args.weights) if args.weights else load_sharded(previous / "checkpoint")
        )
        if previous.resolve() != out.resolve():
            shutil.copy(previous / "loss.csv", out / "loss.csv")
        keep_rows_until(out / "loss.csv", step)
        stats = (record["latents_mean"], record["latents_std"])
        if widened:
            # The same statistics clips again: the pixel channels' figures must come out as
            # recorded, or the shipped weights would see other inputs.
            stats = clip_statistics(config)
            pixels = len(record["latents_mean"])
            if [stats[0][:pixels], stats[1][:pixels]] != [
                record["latents_mean"],
                record["latents_std"],
            ]:
                raise SystemExit("the pixel channels' statistics differ from the recorded ones")
            record["latents_mean"], record["latents_std"] = stats
    else:
        config = json.loads(Path(args.config or DEFAULT_CONFIG).read_text())
        step, tensors = 0, None
        stats = clip_statistics(config)
        record = {"config": config, "latents_mean": stats[0], "latents_std": stats[1], "runs": []}
    pipe = build_pipeline(config, stats).to(device)
    model = pipe.transformer
    optim = config["optimizer"]
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=optim["lr"],
        betas=tuple(optim["betas"]),
        weight_decay=0.0,
        fused=device.type == "cuda",
    )
    if tensors is not None:
        if args.weights:
            widen_channels(tensors, model)
        restore_training_state(model, optimizer, tensors, step)
    table = prompt_table(pipe, device)
    params = sum(p.numel() for p in model.parameters())
    log(f"{params / 1e6:.2f}M parameters, starting at step {step} on {device}", start)

    run = {
        "index": len(record["runs"]),
        "start_step": step,
        "end_step": step,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "command": " ".join(args.argv),
        "optimizer": config["optimizer"],
    }
    # A fresh optimizer (--weights) warms up from its first step; a plain resume of such a run
    # keeps that start.
    warmup_from = next(
        (r["start_step"] for r in reversed(record["runs"]) if "weights_from" in r), 0
    )
    if args.weights:
        # A fresh optimizer warms up again from here.
        run["weights_from"], warmup_from = args.weights, step
    if args.note:
        run["note"] = args.note
    record["runs"].append(run)
    prior_seconds = sum(r.get("train_seconds", 0.0) for r in record["runs"][:-1])
    prior_clips = sum(r.get("clips", 0) for r in record["runs"][:-1])
    losses = LossLog(out / "loss.csv", run["index"], device)
    stop_step = min(optim["total_steps"], args.until_step or optim["total_steps"])
    model.train()
    train_start = time.perf_counter()
    last_save, clips = train_start, 0

    def save() -> None:
        run.update(
            end_step=step,
            clips=clips,
            train_seconds=round(time.perf_counter() - train_start, 1),
            clips_per_second=round(clips / max(1e-9, time.perf_counter() - train_start), 1),
        )
        if device.type == "cuda":
            run["max_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
        save_sharded(training_state(model, optimizer), out / "checkpoint")
        write_json(out / "run.json", record)

    while step < stop_step and time.perf_counter() - start < args.train_seconds:
        lr = optim["lr"] * lr_factor(step, optim, warmup_from)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x_t, sigma, text, target = training_batch(step, config, pipe, table, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            prediction = model(
                x_t, timestep=sigma * 1000.0, encoder_hidden_states=text, return_dict=False
            )[0]
        per_clip = (prediction.float() - target).square().mean((1, 2, 3, 4))
        optimizer.zero_grad(set_to_none=True)
        per_clip.mean().backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim["grad_clip"])
        optimizer.step()
        losses.add(per_clip, sigma, grad_norm)
        step += 1
        clips += x_t.shape[0]
        if step % config["log_every"] == 0 or step == stop_step:
            seconds = time.perf_counter() - train_start
            row = losses.write(step, prior_clips + clips, prior_seconds + seconds, lr)
            log(
                f"step {step} loss {row['loss']:.4f} lr {lr:.2e} {clips / seconds:.1f} clips/s",
                start,
            )
        if time.perf_counter() - last_save > config["checkpoint_seconds"]:
            save()
            last_save = time.perf_counter()
    save()
    log(f"saved step {step}: {run['clips_per_second']} clips/s", start)
    plot_loss(out / "loss.csv", out / "loss.png")
    if not args.no_eval:
        model.eval()
        run["eval"] = evaluate(pipe, config, device, out, start)
        write_json(out / "run.json", record)
    log("done", start)


def save_model(pipe: WanPipeline, directory: str | Path) -> None:
    """Write what `load_wan_shapes` reads: transformer weights (fp16 safetensors) and the
    autoencoder's and scheduler's configs, in diffusers' subfolder layout."""
    directory = Path(directory)
    transformer = pipe.transformer
    copy = WanTransformer3DModel.from_config(transformer.config)
    copy.load_state_dict(transformer.state_dict())
    # Halves the file; the modules Wan keeps in fp32 (norms, time embedding) stay fp32.
    keep = set(copy._keep_in_fp32_modules or ())
    for name, param in copy.named_parameters():
        if not keep.intersection(name.split(".")):
            param.data = param.data.to(torch.float16)
    copy.save_pretrained(directory / "transformer", safe_serialization=True)
    pipe.vae.save_config(directory / "vae")
    pipe.scheduler.save_config(directory / "scheduler")


def export(args: argparse.Namespace) -> None:
    """Checkpoint -> the shipped model directory (`save_model`)."""
    run_dir = Path(args.export)
    record = json.loads((run_dir / "run.json").read_text())
    pipe = build_pipeline(record["config"], (record["latents_mean"], record["latents_std"]))
    tensors = load_sharded(run_dir / "checkpoint")
    weights = {k.split("/", 1)[1]: v.float() for k, v in tensors.items() if k.startswith("model/")}
    pipe.transformer.load_state_dict(weights)
    save_model(pipe, args.to)
    print(f"wrote {args.to} from {run_dir} at step {record['runs'][-1]['end_step']}")


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", default=None, help="settings (default: config.json here; resume: recorded)"
    )
    parser.add_argument("--out", help="run directory to write")
    parser.add_argument("--resume", help="run directory to continue from")
    parser.add_argument(
        "--weights", help="with --resume: start from this model directory, fresh optimizer"
    )
    parser.add_argument("--note", help="recorded with the run (e.g. what changed)")
    parser.add_argument("--until-step", type=int, default=None, help="stop at this step")
    parser.add_argument(
        "--train-seconds", type=float, default=math.inf, help="stop training after this long"
    )
    parser.add_argument("--device", default=None, help="default: cuda if there is one")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    parser.add_argument("--export", help="run directory whose checkpoint to export")
    parser.add_argument("--to", help="with --export: the model directory to write")
    args = parser.parse_args(argv)
    args.argv = ["python", "training/train_shapes.py", *argv]
    if args.weights and not args.resume:
        parser.error("--weights needs --resume (the run directory whose records go on)")
    if args.export:
        if not args.to:
            parser.error("--export needs --to")
        export(args)
    elif args.out:
        train(args)
    else:
        parser.error("give --out (train) or --export with --to")


if __name__ == "__main__":
    main()

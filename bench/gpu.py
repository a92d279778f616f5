"""The prepared GPU benchmark (run through bench/gpu.sh): step time masked vs dense, scoring cost, grow -> export.

    python bench/gpu.py --device cuda            # the real run, ~8 min on one GPU -> bench/results/gpu.md
    python bench/gpu.py --device cpu --smoke     # tiny sizes, seconds on a CPU: checks the script end to end

Sections:
1. resnet32, batch 128, synthetic CIFAR-shaped inputs (random normal; speed does not depend on the pixels): median
   training step time of the pwmpr Trainer, dense (no masks) vs masked (PHEW seed at density 0.1, masks enforced
   on every step), bf16 autocast and channels_last on and off. Goal: masked within 3% of dense.
2. resnet50 on ImageNet-shaped inputs: ``pwmp_scores`` + one PWMP growth step, as a share of one epoch's training
   time (the measured step time x the steps of a 1,281,167-image epoch at the same batch).
3. ``pwmpr grow --device cuda`` on the offline digits, then ``pwmpr export --provider cuda``: onnxruntime against
   PyTorch eager latency at batch 1 and 64 (from export_report.json).
4. Memory and copies: host-device copies per training step and per epoch, counted (``pwmpr.transfers``) over the
   section 1 model and batch fed by the tensor loader, on the GPU (dry run: the ``meta`` device stands in for it);
   the host memory of one rank's streamed loaders at section 2's settings (``loader_budget``); the bytes of the
   copy the trainer takes at the start of every epoch (``Trainer.snapshot_memory``, on the CPU).
Every timing is min / median / max over repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
EPOCH_IMAGES = 1_281_167  # ImageNet-1k training images


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mmm(values) -> str:
    return f"{min(values):.4g} / {statistics.median(values):.4g} / {max(values):.4g}"


def step_times(device, *, batch: int, steps: int, repeats: int, shape=(3, 32, 32), model_name="resnet32") -> list[dict]:
    """Median step time of dense vs masked training, bf16 and channels_last on/off."""
    from pwmpr.config import TrainConfig
    from pwmpr.masks import MaskSet
    from pwmpr.models import create_model
    from pwmpr.seed import phew_masks
    from pwmpr.train import Trainer

    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rows = []
    for bf16 in (False, True):
        for cl in (False, True):
            result = {}
            for kind in ("dense", "masked"):
                torch.manual_seed(0)
                model = create_model(model_name, 10, shape)
                masks = MaskSet({}) if kind == "dense" else phew_masks(model, 0.1, shape, seed=0)
                cfg = TrainConfig(bf16=bf16, channels_last=cl)
                trainer = Trainer(model, masks, cfg, device)
                xb = x.contiguous(memory_format=torch.channels_last) if trainer.channels_last else x
                loader = [(xb, y)] * steps
                trainer.train(loader[:3], 1)  # warm-up (cuDNN autotune, allocator)
                per_repeat = []
                for _ in range(repeats):
                    _sync(device)
                    t0 = time.perf_counter()
                    trainer.train(loader, 1)
                    _sync(device)
                    per_repeat.append((time.perf_counter() - t0) / steps * 1e3)
                result[kind] = per_repeat
            ratio = [m / d for m, d in zip(result["masked"], result["dense"], strict=True)]
            rows.append({"bf16": bf16, "channels_last": cl, "dense_ms": result["dense"],
                         "masked_ms": result["masked"], "ratio": ratio})
    return rows


def scoring_share(device, *, shape, batch: int, steps: int, repeats: int, model_name="resnet50") -> dict:
    """pwmp_scores + one growth step on resnet50 against one epoch of training at ``batch``."""
    from pwmpr import grow, pwmp_scores
    from pwmpr.config import TrainConfig
    from pwmpr.models import create_model
    from pwmpr.seed import phew_masks
    from pwmpr.train import Trainer

    torch.manual_seed(0)
    model = create_model(model_name, 1000, shape)
    masks = phew_masks(model, 0.1, shape, seed=0)
    trainer = Trainer(model, masks, TrainConfig(), device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    if trainer.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    trainer.train([(x, y)] * 2, 1)
    step, score, growth = [], [], []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        trainer.train([(x, y)] * steps, 1)
        _sync(device)
        step.append((time.perf_counter() - t0) / steps)
        t0 = time.perf_counter()
        scores = pwmp_scores(model, trainer.masks, shape)
        _sync(device)
        score.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        grow(trainer.masks, scores, 0.25, generator=torch.Generator().manual_seed(0))
        _sync(device)
        growth.append(time.perf_counter() - t0)
    epoch = [s * math.ceil(EPOCH_IMAGES / batch) for s in step]
    share = [(a + b) / e for a, b, e in zip(score, growth, epoch, strict=True)]
    return {"step_s": step, "score_s": score, "grow_s": growth, "epoch_s": epoch, "share": share}


def copies_per_step(device, *, batch: int, steps: int, shape, model_name: str) -> dict:
    """Host-device copies of training, per step and per epoch: one epoch of ``steps`` and one of ``2 x steps``
    batches counted (``pwmpr.transfers.count_copies``); per step = the difference / ``steps``, per epoch = the rest."""
    from pwmpr.config import TrainConfig
    from pwmpr.data import TensorLoader, TensorSplit
    from pwmpr.models import create_model
    from pwmpr.seed import phew_masks
    from pwmpr.train import Trainer
    from pwmpr.transfers import count_copies

    target = device if device.type == "cuda" else torch.device("meta")  # meta: every copy to it is counted
    torch.manual_seed(0)
    model = create_model(model_name, 10, shape)
    masks = phew_masks(model, 0.1, shape, seed=0)
    trainer = Trainer(model, masks, TrainConfig(), target)
    counts = {}
    for n in (steps, 2 * steps):
        split = TensorSplit(torch.randn(n * batch, *shape), torch.randint(0, 10, (n * batch,)))
        loader = TensorLoader(split, batch, target, shuffle=True, augment="crop-flip",
                              generator=torch.Generator().manual_seed(0), channels_last=trainer.channels_last)
        _, counts[n] = count_copies(lambda loader=loader: trainer.train(loader, 1), target)
    out = {"device": str(target)}
    for way in ("to_device", "to_host"):
        short, long = getattr(counts[steps], way), getattr(counts[2 * steps], way)
        out[way] = {"per_step": (long - short) / steps, "per_epoch": short - (long - short)}
    return out


def snapshot_memory(*, shape, model_name: str) -> dict:
    """Bytes of the trainer's epoch snapshot after one step on the CPU, for SGD (momentum) and AdamW."""
    from pwmpr.config import TrainConfig
    from pwmpr.masks import MaskSet
    from pwmpr.models import create_model
    from pwmpr.train import Trainer

    out = {}
    for optimizer in ("sgd", "adamw"):
        torch.manual_seed(0)
        trainer = Trainer(create_model(model_name, 10, shape), MaskSet({}), TrainConfig(optimizer=optimizer),
                          torch.device("cpu"))
        trainer.train([(torch.randn(2, *shape), torch.randint(0, 10, (2,)))], 1)  # the optimizer's state exists
        out[optimizer] = trainer.snapshot_memory()
    return out


def grow_and_export(device: str, provider: str, tmp: Path, *, smoke: bool) -> dict:
    """A short `pwmpr grow` on the digits, then `pwmpr export`; the export report's latencies."""
    run, exp = tmp / "run", tmp / "export"
    epochs = ["--model", "mlp", "--max-train", "200", "--phase-epochs", "1", "--final-epochs", "1", "--max-phases",
              "1", "--no-tau-core"] if smoke else \
        ["--model", "cnn", "--phase-epochs", "3", "--final-epochs", "5", "--max-phases", "4"]
    cmd = [sys.executable, "-m", "pwmpr", "grow", "--data", "digits", "--device", device, *epochs,
           "--out", str(run), "-q"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    grow_s = time.perf_counter() - t0
    subprocess.run([sys.executable, "-m", "pwmpr", "export", str(run), "--out", str(exp), "--provider", provider,
                    "--timing-runs", "3" if smoke else "50", "-q"], check=True)
    report = json.loads((exp / "export_report.json").read_text())
    return {"grow_s": grow_s, "report": report, "summary": json.loads((run / "summary.json").read_text())}


def budget_workers(workers: int) -> str:
    """The loader workers of the budget, in words."""
    from pwmpr.data.folder import PREFETCH

    if workers <= 0:
        return "no worker process (batches made in the main process)"
    return f"{workers} worker process(es) x {PREFETCH} prefetched batches"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a check of the script, not a measurement)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available here; use --device cpu --smoke for a dry run",
              file=sys.stderr)
        return 2
    smoke = args.smoke or device.type != "cuda"
    out = args.out or ROOT / "results" / ("gpu.md" if not smoke else "gpu-smoke.md")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'cpu'})"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t_start = time.perf_counter()

    # Smoke: the same code paths on models and inputs small enough for a loaded 2-core CI machine.
    steps = step_times(device, batch=4 if smoke else 128, steps=1 if smoke else 50, repeats=1 if smoke else 5,
                       shape=(3, 8, 8) if smoke else (3, 32, 32), model_name="resnet20" if smoke else "resnet32")
    r50_shape = (3, 8, 8) if smoke else (3, 224, 224)
    r50 = scoring_share(device, shape=r50_shape, batch=2 if smoke else 64, steps=1 if smoke else 20,
                        repeats=1 if smoke else 3, model_name="resnet20" if smoke else "resnet50")
    from pwmpr.data.folder import fit_workers, loader_budget

    s1_model, s1_shape, s1_batch = ("resnet20", (3, 8, 8), 4) if smoke else ("resnet32", (3, 32, 32), 128)
    copies = copies_per_step(device, batch=s1_batch, steps=2 if smoke else 4, shape=s1_shape, model_name=s1_model)
    snap = snapshot_memory(shape=s1_shape, model_name=s1_model)
    r50_batch = 2 if smoke else 64
    workers = fit_workers(None, r50_shape, r50_batch)
    budget = loader_budget(r50_shape, r50_batch, workers)
    provider = "cuda" if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        ge = grow_and_export(args.device, provider, Path(tmp), smoke=smoke)

    rep = ge["report"]
    enc = rep["encodings"][rep["onnx_weights"]]
    cmd = " ".join(["bash bench/gpu.sh", *(["--device", args.device] if args.device != "cuda" else [])])
    lines = [
        f"# GPU benchmark{' (SMOKE RUN: tiny sizes, not a measurement)' if smoke else ''}",
        "",
        f"`{cmd}` on {name}; torch {torch.__version__}; {time.perf_counter() - t_start:.0f} s in all.",
        "",
        f"## 1. {'resnet20 (smoke)' if smoke else 'resnet32'} training step, batch {4 if smoke else 128}, synthetic "
        f"{'8x8' if smoke else 'CIFAR-shaped'} inputs (random normal)",
        "",
        "Step time in ms (min / median / max over repeats, each the mean of the repeat's steps); masked = PHEW seed at"
        " density 0.1 with masks enforced every step. Goal: masked within 3% of dense.",
        "",
        "| bf16 | channels_last | dense ms | masked ms | masked / dense |",
        "|---|---|---|---|---|",
        *(f"| {r['bf16']} | {r['channels_last']} | {_mmm(r['dense_ms'])} | {_mmm(r['masked_ms'])} | "
          f"{_mmm(r['ratio'])} |" for r in steps),
        "",
        f"## 2. {'resnet20 (smoke)' if smoke else 'resnet50'}, input {r50_shape}: pwmp_scores + one growth step vs "
        "one epoch",
        "",
        f"One epoch = measured step time x {math.ceil(EPOCH_IMAGES / (2 if smoke else 64))} steps "
        f"({EPOCH_IMAGES:,} images at batch {2 if smoke else 64}).",
        "",
        "| quantity | min / median / max |",
        "|---|---|",
        f"| training step (s) | {_mmm(r50['step_s'])} |",
        f"| pwmp_scores (s) | {_mmm(r50['score_s'])} |",
        f"| one growth step (s) | {_mmm(r50['grow_s'])} |",
        f"| scores + growth as a share of one epoch | {_mmm(r50['share'])} |",
        "",
        f"## 3. pwmpr grow --device {args.device} (digits, {'mlp' if smoke else 'cnn'}), then pwmpr export "
        f"--provider {provider}",
        "",
        f"grow took {ge['grow_s']:.1f} s (density {ge['summary']['discovered_density']:.3f}, test accuracy "
        f"{ge['summary']['test_acc']:.3f}); onnxruntime providers used: {', '.join(enc['providers'])}; "
        f"median of {rep['timing']['runs']} calls.",
        "",
        "| | batch 1 (ms) | batch 64 (ms) |",
        "|---|---|---|",
        f"| onnxruntime ({rep['onnx_weights']}) | {enc['latency_ms']['1']:.3f} | {enc['latency_ms']['64']:.3f} |",
        f"| PyTorch eager ({rep['torch']['device']}) | {rep['torch']['latency_ms']['1']:.3f} | "
        f"{rep['torch']['latency_ms']['64']:.3f} |",
        "",
        "## 4. Host-device copies, loader host memory, epoch snapshot memory",
        "",
        f"Copies counted on `{copies['device']}`{' (standing in for a GPU)' if copies['device'] == 'meta' else ''} "
        f"while the section 1 model ({s1_model}, PHEW masks at density 0.1) trains one epoch of the tensor loader "
        "(crop-flip), at two epoch lengths: per step = the difference / the extra steps. Loader memory: "
        f"`loader_budget` for section 2's settings, {budget_workers(workers)}. Snapshot: measured on the CPU after "
        "one step (`Trainer.snapshot_memory`: parameters + buffers + optimizer state).",
        "",
        "| quantity | value | unit |",
        "|---|---|---|",
        f"| copies host->device per training step (measured) | {copies['to_device']['per_step']:g} | copies |",
        f"| copies device->host per training step (measured) | {copies['to_host']['per_step']:g} | copies |",
        f"| copies host->device per epoch, outside the steps (measured) | {copies['to_device']['per_epoch']:g} | "
        "copies |",
        f"| copies device->host per epoch, outside the steps (measured) | {copies['to_host']['per_epoch']:g} | "
        "copies |",
        f"| loader host memory per rank (loader_budget, batch {r50_batch} of {r50_shape}) | "
        f"{budget.host_bytes} | bytes |",
        f"| of which in /dev/shm | {budget.shm_bytes} | bytes |",
        *(f"| epoch snapshot memory ({s1_model}, {opt}) | {m.snapshot} | bytes |" for opt, m in snap.items()),
        *(f"| epoch snapshot memory / parameter bytes ({opt}; params {m.params / 2**20:.4g} MiB, buffers "
          f"{m.buffers / 2**20:.4g} MiB, optimizer state {m.optimizer / 2**20:.4g} MiB) | "
          f"{m.snapshot / m.params:.3f} | x |" for opt, m in snap.items()),
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Trainer: the one training loop; it knows masks, schedules and hooks, never the methods.

SGD (Nesterov) or AdamW; masks are enforced by zeroing masked gradients, which keeps masked weights and their
optimizer state at exactly zero once ``set_masks`` zeroed them. The loop reads back to the host once per epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pwmpr import dist
from pwmpr.config import TrainConfig
from pwmpr.counting import round_half_up, schedule_factor
from pwmpr.errors import PwmprError
from pwmpr.losses import per_target
from pwmpr.masks import MaskSet
from pwmpr.probe import class_scores
from pwmpr.train.hooks import Hook


class TrainingDiverged(PwmprError):
    """The loss or the weights became NaN or infinite."""


# torch.cuda.OutOfMemoryError is the same class (torch >= 2.5 names it torch.OutOfMemoryError).
_OOM = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError


@dataclass
class PhaseStats:
    """What one call of ``Trainer.train`` measured."""

    train_loss: float
    steps: int
    epochs: int
    samples: int
    seconds: float


@dataclass(frozen=True)
class SnapshotMemory:
    """Bytes of the copy ``Trainer.train`` takes at the start of every epoch, next to what it copies."""

    snapshot: int  # measured on a snapshot taken for the purpose
    params: int
    buffers: int
    optimizer: int  # the optimizer's state tensors (momentum; Adam's moments and step counts)


def _nbytes(tensors: Iterable) -> int:
    return sum(t.nbytes for t in tensors if isinstance(t, Tensor))


def lr_at(schedule: str, base_lr: float, step: int, total: int, warmup: int = 0) -> float:
    """Learning rate at ``step`` of ``total``: ``constant``, ``cosine`` (to 0) or ``step`` (x0.1 at 50% and 75%),
    times ``(step + 1) / warmup`` over the first ``warmup`` steps (a linear warm-up, Goyal et al. 2017)."""
    ramp = (step + 1) / warmup if step < warmup else 1.0
    if schedule == "constant" or total <= 1:
        return base_lr * ramp
    return base_lr * schedule_factor(schedule, step / total) * ramp


class Trainer:
    """Trains a masked model phase after phase, keeping weights and optimizer state between phases.

    ``masks`` is the MaskSet to enforce (``set_masks`` changes it); ``hooks`` are called at named points of the loop.
    """

    def __init__(self, model: nn.Module, masks: MaskSet, cfg: TrainConfig, device: torch.device,
                 hooks: Sequence[Hook] = ()) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.channels_last = cfg.channels_last and self.device.type == "cuda" and _has_conv(model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.model.parameters(), cfg)
        self.hooks = list(hooks)
        self.loss_fn = nn.CrossEntropyLoss()
        # Under torchrun the training forward goes through DDP (gradients all-reduced); masks, evaluation and
        # checkpoints use the plain module, whose parameters DDP shares.
        self.forward_model = self.model
        if dist.is_distributed():
            ids = [self.device.index] if self.device.type == "cuda" else None
            # A user's model may hold parameters the class scores never reach (an auxiliary head whose output
            # pwmpr does not train on, a layer its forward skips): DDP must not wait for their gradients.
            self.forward_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                     find_unused_parameters=True)
        self.global_step = 0
        self._params = dict(self.model.named_parameters())
        self.set_masks(masks)

    # -- masks --------------------------------------------------------------------------------
    @torch.no_grad()
    def set_masks(self, masks: MaskSet, added: dict[str, Tensor] | None = None) -> None:
        """Enforce ``masks`` from now on; weights in ``added`` start at zero with zero optimizer state."""
        masks.check(self.model)
        self.masks = masks.to(self.device)
        names = list(self.masks)
        self._masked_params = [self._params[n] for n in names]
        self._mask_values = [self.masks[n].to(self._params[n].dtype) for n in names]
        if self.channels_last:
            self._mask_values = [
                m.contiguous(memory_format=torch.channels_last) if m.dim() == 4 else m for m in self._mask_values
            ]
        for name, idx in (added or {}).items():
            if idx.numel() == 0:
                continue
            p = self._params[name]
            fresh = torch.zeros(p.numel(), dtype=torch.bool, device=self.device)
            fresh[idx.to(self.device)] = True
            fresh = fresh.view(p.shape)  # works for any memory format, channels_last included
            p.masked_fill_(fresh, 0.0)
            for buf in self.optimizer.state.get(p, {}).values():
                if isinstance(buf, Tensor) and buf.shape == p.shape:
                    buf.masked_fill_(fresh, 0.0)
        self.enforce_masks()

    @torch.no_grad()
    def enforce_masks(self) -> None:
        """Zero masked weights and their per-weight optimizer buffers (momentum, Adam's moments)."""
        if not self._masked_params:
            return
        torch._foreach_mul_(self._masked_params, self._mask_values)
        bufs, vals = [], []
        for p, m in zip(self._masked_params, self._mask_values, strict=True):
            for buf in self.optimizer.state.get(p, {}).values():
                if isinstance(buf, Tensor) and buf.shape == p.shape:
                    bufs.append(buf)
                    vals.append(m)
        if bufs:
            torch._foreach_mul_(bufs, vals)

    @torch.no_grad()
    def _mask_grads(self) -> None:
        grads, vals = [], []
        for p, m in zip(self._masked_params, self._mask_values, strict=True):
            if p.grad is not None:
                grads.append(p.grad)
                vals.append(m)
        if grads:
            torch._foreach_mul_(grads, vals)

    # -- training -----------------------------------------------------------------------------
    def train(self, loader: Iterable, epochs: int, *, schedule: str = "constant", lr: float | None = None,
              stage: str = "phase", first_epoch: int = 0, carry: tuple[float, int, float] | None = None,
              warmup_epochs: float = 0.0) -> PhaseStats:
        """Train for ``epochs`` epochs over ``loader`` with the learning rate following ``schedule``, ramped up
        linearly over the first ``warmup_epochs`` epochs (rounded half up to whole steps, at most all of them).

        ``first_epoch`` and ``carry`` (what ``totals`` held) continue a call cut short by a checkpoint.

        Raises:
            TrainingDiverged: a loss or weight turned non-finite; model and optimizer are back at that epoch's start.
            PwmprError: out of memory on the device (the message says what to lower); the state is restored likewise.
        """
        base_lr = self.cfg.base_lr if lr is None else lr
        n_batches = len(loader)  # type: ignore[arg-type]
        total = max(1, epochs * n_batches)
        warmup = min(total, round_half_up(warmup_epochs * n_batches))
        self.model.train()
        for h in self.hooks:
            h.on_phase_start(self, stage=stage, epochs=epochs, n_batches=n_batches)
        t0 = time.perf_counter() - (carry[2] if carry else 0.0)
        loss_sum = float(carry[0]) if carry else 0.0
        samples, step = (carry[1] if carry else 0), first_epoch * n_batches
        for epoch in range(first_epoch, epochs):
            snapshot = self._snapshot()
            epoch_loss = torch.zeros((), device=self.device)
            epoch_n = 0
            try:
                for x, y in loader:
                    lr_now = lr_at(schedule, base_lr, step, total, warmup)
                    detached = self._step(x, y, lr_now)
                    epoch_loss += detached * len(y)
                    epoch_n += len(y)
                    step += 1
                    self.global_step += 1
                    for h in self.hooks:
                        h.after_optimizer_step(self, loss=detached)
                total_loss, finite = self._epoch_result(epoch_loss)
            except _OOM as exc:
                self._restore(snapshot)
                raise self._out_of_memory(exc, stage) from None
            if not finite:
                self._restore(snapshot)
                raise TrainingDiverged(
                    f"the training {'loss' if not math.isfinite(total_loss) else 'weights'} became non-finite in "
                    f"epoch {epoch + 1} of {stage} (loss {total_loss / max(1, epoch_n):g}); the weights are back at "
                    "the start of that epoch and the run stops here (try a lower --lr)"
                )
            loss_sum += total_loss
            samples += epoch_n
            self.totals = (loss_sum, samples, time.perf_counter() - t0)
            for h in self.hooks:
                h.on_epoch_end(self, epoch=epoch, loss=total_loss / max(1, epoch_n))
        stats = PhaseStats(loss_sum / max(1, samples), step, epochs, samples, time.perf_counter() - t0)
        for h in self.hooks:
            h.on_phase_end(self, stats=stats)
        return stats

    def _step(self, x: Tensor, y: Tensor, lr: float) -> Tensor:
        """One optimizer step on the batch ``(x, y)`` at learning rate ``lr``; the detached float32 loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self._autocast():
            loss = self.loss_fn(*per_target(class_scores(self.forward_model(x)), y))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._mask_grads()
        self.optimizer.step()
        return loss.detach().float()

    @torch.no_grad()
    def _epoch_result(self, epoch_loss: Tensor) -> tuple[float, bool]:
        """(summed loss, every rank's loss and weights finite) of an epoch, read to the host in one transfer."""
        state = [t for t in self._state_tensors() if t.is_floating_point() and t.numel()]
        worst = torch.stack(torch._foreach_norm(state, float("inf"))).max() if state else epoch_loss.new_zeros(())
        bad = (~torch.isfinite(epoch_loss) | ~torch.isfinite(worst)).float()
        if dist.is_distributed():
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        total, flag = torch.stack([epoch_loss.float(), bad]).tolist()
        return total, flag == 0.0

    def _state_tensors(self) -> list[Tensor]:
        """The model's parameters and buffers, the tensors a snapshot keeps."""
        return [*self._params.values(), *(b for _, b in self.model.named_buffers())]

    @torch.no_grad()
    def _snapshot(self) -> tuple[list[Tensor], dict]:
        """Copies, on the device, of the weights, buffers and optimizer state (what ``_restore`` puts back)."""
        tensors = [t.detach().clone() for t in self._state_tensors()]
        optim = {p: {k: v.clone() if isinstance(v, Tensor) else v for k, v in st.items()}
                 for p, st in self.optimizer.state.items()}
        return tensors, optim

    def snapshot_memory(self) -> SnapshotMemory:
        """The bytes an epoch's snapshot takes now (params + buffers + optimizer state, so SGD with momentum holds
        about 2x the parameters' bytes, AdamW 3x), measured on a snapshot, beside the bytes of what it copies."""
        tensors, optim = self._snapshot()
        taken = _nbytes(tensors) + sum(_nbytes(st.values()) for st in optim.values())
        return SnapshotMemory(taken, _nbytes(self._params.values()), _nbytes(b for _, b in self.model.named_buffers()),
                              sum(_nbytes(st.values()) for st in self.optimizer.state.values()))

    @torch.no_grad()
    def _restore(self, snapshot: tuple[list[Tensor], dict]) -> None:
        """Put a ``_snapshot`` back in place (so a module handed in by the caller holds it too)."""
        tensors, optim = snapshot
        self.optimizer.zero_grad(set_to_none=True)
        for live, saved in zip(self._state_tensors(), tensors, strict=True):
            live.copy_(saved)
        self.optimizer.state.clear()
        for p, st in optim.items():
            self.optimizer.state[p] = st

    def _out_of_memory(self, exc: BaseException, what: str) -> PwmprError:
        """The one-line error for running out of device memory during ``what``, saying what to lower."""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PwmprError(f"out of memory on {self.device} during {what} (batch size {self.cfg.batch_size} per "
                          f"device): {first}; lower --batch-size, or use --bf16, a smaller model or a device with "
                          "more memory")

    @torch.no_grad()
    def evaluate(self, loader: Iterable) -> tuple[float, float]:
        """(accuracy, mean loss) of the model over ``loader``, in eval mode: per sample for a label per sample, per
        position for a target per position (next-token accuracy and cross-entropy)."""
        was = self.model.training
        self.model.eval()
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        loss = torch.zeros((), device=self.device)
        n = 0
        try:
            with self._autocast():
                for x, y in loader:
                    out, target = per_target(class_scores(self.model(x)), y)
                    correct += (out.argmax(dim=1) == target).sum()
                    loss += nn.functional.cross_entropy(out.float(), target, reduction="sum")
                    n += target.numel()
        except _OOM as exc:
            raise self._out_of_memory(exc, "evaluation") from None
        finally:
            self.model.train(was)
        return (float(correct) / n if n else 0.0), (float(loss) / n if n else 0.0)

    def _autocast(self):
        """bfloat16 autocast when ``cfg.bf16``, else no context (autocast knows no ``meta`` device, even disabled)."""
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # -- state for checkpoints ------------------------------------------------------------------
    def optimizer_tensors(self) -> dict[str, Tensor]:
        """Optimizer state as named tensors (``<param name>/<state key>``)."""
        names = {id(p): n for n, p in self._params.items()}
        out: dict[str, Tensor] = {}
        for p, state in self.optimizer.state.items():
            for key, val in state.items():
                if isinstance(val, Tensor):
                    out[f"{names[id(p)]}/{key}"] = val
        return out

    @torch.no_grad()
    def load_optimizer_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore optimizer state written by ``optimizer_tensors``."""
        self.optimizer.state.clear()
        for key, val in tensors.items():
            name, _, sub = key.rpartition("/")
            if name not in self._params:
                raise PwmprError(f"checkpoint optimizer state names unknown parameter {name!r}")
            p = self._params[name]
            # Scalars (Adam's step count) stay on the CPU, where torch keeps them unless capturable or fused.
            v = val if val.dim() == 0 else val.to(self.device)
            if v.shape == p.shape and self.channels_last and p.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
            self.optimizer.state[p][sub] = v


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names, at its base learning rate (the schedule sets it each step)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.base_lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.base_lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    raise PwmprError(f"unknown optimizer {cfg.optimizer!r}")


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())

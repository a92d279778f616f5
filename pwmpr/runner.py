"""The phase loop: drives any method through phases, records history, checkpoints, resumes, finishes the run.

Each phase trains, evaluates, costs, measures the tau-core, records a row, asks the method what next and writes a
checkpoint; then final training and the run's files. Under torchrun rank 0 decides and writes, and passes its
result or error to every rank (``dist.on_primary``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from pwmpr import checkpoint, dist, rundir
from pwmpr.config import RunConfig
from pwmpr.cost import phase_cost, training_flops
from pwmpr.data import MIN_VAL_SAMPLES, DataBundle, load_data
from pwmpr.errors import PwmprError
from pwmpr.final_training import pack_start, start_final_training, train_final, unpack_start
from pwmpr.graph.mask_hold import check_masks_hold
from pwmpr.graph.reach import input_reaches_output, no_path_error
from pwmpr.interrupts import deferred_interrupt
from pwmpr.masks import MaskSet, prunable
from pwmpr.methods import METHODS, Decision, Method, RunContext
from pwmpr.methods.final_init import needs_start
from pwmpr.models import check_input_shape, create_model
from pwmpr.probe import check_float32, check_output_width, declare_input_dtype, declared_dtype_name
from pwmpr.progress import Reporter
from pwmpr.seed.scale import INIT_SCALES, scale_model
from pwmpr.stop.decision import growth_rows
from pwmpr.stop.plateau import doublings, resolvable_span, window_fits
from pwmpr.taucore import check_tau_core, tau_core
from pwmpr.train import ProgressHook, Trainer
from pwmpr.train.hooks import Hook


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PwmprError("device 'cuda' was asked for but CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


class PhaseLoop:
    """One run folder being produced: the model, its masks, the trainer, the history."""

    def __init__(self, cfg: RunConfig, out_dir: Path | None, reporter: Reporter | None = None, *,
                 model: torch.nn.Module | None = None, bundle: DataBundle | None = None) -> None:
        self.cfg = cfg
        self.out = Path(out_dir) if out_dir is not None else None
        self.reporter = reporter if reporter is not None and dist.is_primary() else Reporter()
        self.device = dist.rank_device(resolve_device(cfg.device))
        # `bundle` / `model`: the user's own data and network (pwmpr.grow_module) instead of registered names.
        self.bundle: DataBundle = bundle if bundle is not None else load_data(
            cfg.data, cfg.data_dir, val_fraction=cfg.val_fraction, max_train=cfg.max_train, min_val=MIN_VAL_SAMPLES,
            context=cfg.context, augment=cfg.augment)
        self.bundle.workers = cfg.workers
        if cfg.model == "auto":
            cfg.model = self.bundle.auto_model()
        self.input_shape = tuple(self.bundle.input_shape)
        self.method: Method = METHODS.get(cfg.method)(cfg)
        INIT_SCALES.get(cfg.growth.init_scale)  # an unknown name fails here, before any folder is written
        torch.manual_seed(cfg.seed)  # model initialisation
        if model is not None:
            declare_input_dtype(model, self.bundle.input_dtype)
            check_input_shape(model, self.input_shape)
            self.model = model
        else:
            self.model = create_model(cfg.model, self.bundle.num_classes, self.input_shape,
                                      input_dtype=self.bundle.input_dtype)
        if not prunable(self.model):
            raise PwmprError(f"model {cfg.model} has no Conv or Linear layer: pwmpr has no weight to grow or prune")
        check_float32(self.model, cfg.model)
        check_output_width(self.model, self.input_shape, self.bundle.num_classes, cfg.model)
        self._test_loader = None  # built once: IMP evaluates the test split after every level
        self._val_majority = self.bundle.majority_share("val")
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.grow_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.history: list[dict[str, Any]] = []
        self.phase = 0
        self.stage = "phase"  # phase -> final -> done
        self.stop_reason = ""
        self.initial_state: dict[str, torch.Tensor] | None = None
        # The run's start (initial weights before the seed mask, seed masks), kept for --final-init until it is used.
        self.start: tuple[dict[str, torch.Tensor], MaskSet] | None = None
        self.aside: Path | None = None  # --force: the replaced run's files, deleted after the first checkpoint
        self.lr_change: dict[str, float] | None = None  # --lr given with --resume: recorded in the next history row
        self.progress: dict[str, Any] | None = None  # resumed from a checkpoint written during final training
        dense_flops = training_flops(self.model, MaskSet.dense(self.model), self.input_shape)
        self.dense_fwd = float(dense_flops.dense)

    # -- set-up -------------------------------------------------------------------------------
    def start_fresh(self) -> None:
        """Seed masks and the trainer for a new run; config.json is written first, once the config is known to work."""
        step = self.method.rewind_step
        if step:
            n_batches = len(self.bundle.loader("train", self.cfg.train.batch_size, torch.device("cpu"), train=True))
            if step > self.method.phase_epochs(0) * n_batches:
                raise PwmprError(f"--rewind-step {step} is past the end of level 0 "
                                 f"({self.method.phase_epochs(0) * n_batches} steps); pick a smaller one")
        masks = dist.broadcast_masks(self.method.initial_masks(self.model, self.input_shape))
        empty = check_start_masks(self.model, masks, self.input_shape)
        if empty:
            self.reporter.message(
                f"the starting masks leave {len(empty)} layer(s) with no edge ({_first_names(empty)}), off the path "
                "from input to output they keep: each computes nothing while it has no edge")
        if self.cfg.tau_core:  # every rank: the same model is refused on each, so none waits for rank 0
            check_tau_core(self.model, masks, self.input_shape)
        # After the seed and the checks above: a model they refuse leaves no config.json.
        dist.on_primary(lambda: self.cfg.save(self.out / rundir.CONFIG), "writing config.json", share=False)
        if self.method.has_final and self.cfg.final_epochs > 0 and needs_start(self.cfg.final_init):  # on the host
            self.start = ({k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
                          masks.clone())  # the weights as drawn: each --final-init scales them for its own mask
        scale_model(self.model, masks, self.cfg.growth.init_scale)
        masks.apply(self.model)
        self.initial_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        hooks: list[Hook] = [ProgressHook(self.reporter)]
        if self.method.rewind_step:
            hooks.append(_SnapshotHook(self.method.rewind_step, self))
        self.trainer = Trainer(self.model, masks, self.cfg.train, self.device, hooks=hooks)

    def _pick_checkpoint(self, shapes: dict[str, tuple[int, ...]]) -> tuple[Path, checkpoint.Checkpoint]:
        """The newest checkpoint that verifies, read; newer unreadable ones are renamed ``*.corrupt`` (rank 0)."""
        cks = rundir.checkpoints(self.out)
        if not cks:
            raise PwmprError(f"nothing to resume in {self.out}: it has no checkpoint yet; start it again with --force")
        skipped: list[str] = []
        for ck in reversed(cks):
            try:
                saved = checkpoint.read(ck, shapes)
                break
            except PwmprError as exc:
                skipped.append(f"{ck.name} ({str(exc).replace(str(ck), 'file')})")
        else:
            raise PwmprError(f"cannot resume {self.out}: no checkpoint verifies: {'; '.join(skipped)}")
        if skipped:  # kept under another name for a look, out of the way of the phases to come
            for bad in cks[cks.index(ck) + 1:]:
                os.replace(bad, bad.with_name(bad.name + ".corrupt"))
            self.reporter.message(f"skipped unreadable checkpoint(s) {'; '.join(skipped)}, renamed to *.corrupt; "
                                  f"resuming from {ck.name}, the newest that verifies")
        return ck, saved

    def resume(self) -> None:
        """Restore the newest checkpoint of the run folder that verifies; say which ones were skipped."""
        shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        picked: list[checkpoint.Checkpoint] = []

        def pick() -> str:
            ck, saved = self._pick_checkpoint(shapes)
            picked.append(saved)
            return ck.name

        name = dist.on_primary(pick, "choosing the checkpoint to resume from")
        saved = picked[0] if picked else checkpoint.read(Path(self.out) / rundir.CHECKPOINTS / name, shapes)
        ck_name = name
        checkpoint.load_state(self.model, saved.model_state)
        self.trainer = Trainer(self.model, MaskSet(saved.masks), self.cfg.train, self.device,
                               hooks=[ProgressHook(self.reporter)])
        self.trainer.load_optimizer_tensors(saved.optimizer)
        checkpoint.set_rng_states(saved.rng, self.data_gen, self.grow_gen, self.device)
        self.initial_state = saved.rewind
        self.start = unpack_start(saved.start)
        self.history = saved.history
        self.method.restore(saved.method_state, self.history)  # what a method keeps between phases
        self.phase = saved.next_phase
        self.stage = saved.stage
        self.stop_reason = saved.stop_reason
        self.trainer.global_step = saved.global_step
        self.progress = saved.progress
        if self.lr_change is not None:
            dist.on_primary(lambda: self.cfg.save(self.out / rundir.CONFIG), "writing config.json", share=False)
        # A kill between the checkpoint and history.jsonl left the latter one row short.
        dist.on_primary(self._write_history, "writing history.jsonl", share=False)
        self.reporter.message(f"resuming {self.out} at {self.stage} {self.phase} (from {ck_name})")

    def _write_history(self) -> None:
        rundir.write_history(self.out, self.history)
        self._plot()

    # -- the loop -----------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        """Train every phase, then the final training; return the summary."""
        train_loader = self.bundle.loader("train", self.cfg.train.batch_size, self.device, train=True,
                                          generator=self.data_gen, channels_last=self.trainer.channels_last)
        val_loader = self.bundle.loader("val", self.bundle.eval_batch(self.cfg.train.batch_size), self.device)
        while self.stage == "phase":
            self._phase(train_loader, val_loader)
        if self.stage == "final":
            train_final(self, train_loader, val_loader)
        dist.check_masks_agree(self.trainer.masks)
        return self._finish()

    def _phase(self, train_loader, val_loader) -> None:
        masks = self.trainer.masks
        epochs = self.method.phase_epochs(self.phase)
        self.reporter.phase_start(self.phase, masks.density(), "phase")
        stats = self.trainer.train(train_loader, epochs, schedule=self.method.phase_schedule(self.phase),
                                   lr=self.method.phase_lr(self.phase), stage=f"phase {self.phase}",
                                   warmup_epochs=self.method.phase_warmup(self.phase))
        val_acc, val_loss = self.trainer.evaluate(val_loader)
        row = self.history_row("phase", epochs, masks, stats, val_acc, val_loss)
        if self.method.records_test:
            row["test_acc"], row["test_loss"] = self.trainer.evaluate(self._test())
            row.update(self._perplexity("test_ppl", row["test_loss"]))
        self.history.append(row)
        ctx = RunContext(self.cfg, self.model, masks, self.input_shape, self.history, self.grow_gen,
                         sample_batch=self._scoring_batch, initial_state=self.initial_state,
                         num_classes=self.bundle.num_classes)
        decision = dist.broadcast_decision(lambda: self.method.after_phase(ctx))
        row.update(decision.info)
        self._note_tolerance()
        self._note_reach()
        if decision.reason == "max-cost":
            guard = row["cost_guard"]
            self.reporter.message(
                f"the cost guard stopped growth: one more phase and the final training would cost "
                f"{guard['projected']:.2f} dense runs, over --max-cost {guard['limit']:g} (--max-cost 0 turns it off)")
        row["decision"] = decision.reason if decision.stop or decision.reason else (
            "grow" if decision.added else "continue")
        if decision.stop:
            self.stop_reason = decision.reason
            self.stage = "final" if self.method.has_final and self.cfg.final_epochs > 0 else "done"
            if self.stage == "final":
                start_final_training(self)
        else:
            self._apply(decision)
        dist.check_masks_agree(self.trainer.masks, f"after the decision of phase {self.phase}")
        self.phase += 1
        self.save_checkpoint()
        self.reporter.phase_done(row)

    def _test(self):
        """The test split's loader, built once (a tensor split is copied to the device once, not every level)."""
        if self._test_loader is None:
            self._test_loader = self.bundle.loader("test", self.bundle.eval_batch(self.cfg.train.batch_size),
                                                   self.device)
        return self._test_loader

    def _scoring_batch(self):
        """One training batch for gradient scores, from its own generator (the shared one must not move on rank 0)."""
        gen = torch.Generator().manual_seed(self.cfg.seed + 3 + self.phase)
        cpu = torch.device("cpu")
        if self.bundle.make_loader is None:
            loader = self.bundle.loader("train", self.cfg.train.batch_size, cpu, train=True, generator=gen)
        else:  # one batch: no worker processes to start
            loader = self.bundle.make_loader(self.bundle.train, self.cfg.train.batch_size, cpu, train=True,
                                             generator=gen, workers=0)
        x, y = next(iter(loader))
        x = x.to(self.device)
        if self.trainer.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device)

    def _apply(self, decision: Decision) -> None:
        if decision.rewind is not None:
            with torch.no_grad():
                checkpoint.load_state(self.model, {**self.model.state_dict(), **decision.rewind})
        if decision.reset_optimizer:
            self.trainer.optimizer.state.clear()
        if decision.masks is not None:
            self.trainer.set_masks(decision.masks, decision.added)
        with torch.no_grad():
            for name, values in (decision.values or {}).items():  # grown entries are 0 here: add their start
                param = self.model.get_parameter(name)
                param.add_(values.to(param.device, param.dtype))

    def _note_tolerance(self) -> None:
        """Say once when the stop rule decides at a larger gain than ``--stop-tol``, once when the plateau test
        widens its window (the validation set cannot resolve what was asked: docs/method.md, "gain", "plateau"),
        once when the last points it reads instead span less than the validation set resolves, and once when a
        stop is held back because the network is at chance (docs/method.md, "Stop")."""
        asked = self.cfg.stop.tol
        used = [r.get("stop_tol_used") for r in self.history]
        wider = [u for u in used if u is not None and u > asked + 1e-12]
        if len(wider) == 1 and used[-1] is not None and used[-1] > asked + 1e-12:
            n = self.history[-1].get("val_n")
            self.reporter.message(
                f"--stop-tol {asked:g} is below what {n or 'the'} validation samples can resolve: the stop rule "
                f"decides at a gain of {used[-1]:.3g} instead (recorded as stop_tol_used in history.jsonl)")
        stop, grown = self.cfg.stop, growth_rows(self.history)
        if self.method.stops_growth and stop.plateau_resolve and stop.plateau_tol > 0 and len(grown) == 1:
            n, start = grown[0].get("val_n"), grown[0]["density"]
            need = resolvable_span(n, stop.plateau_tol, stop.alpha)
            if not window_fits(need, start, stop.max_density):
                self.reporter.message(
                    f"{n} validation samples resolve --plateau-tol {stop.plateau_tol:g} per doubling only over "
                    f"{need:.2g} doublings of density, more than lie between {start:.3g} and --max-density "
                    f"{stop.max_density:g}: the plateau test cannot stop this run, and --max-cost, --max-phases or "
                    f"--max-density will (more validation samples, a larger --plateau-tol or --no-plateau-resolve "
                    f"let it decide)")
        held = [bool(r.get("chance_status")) for r in self.history]
        if held and held[-1] and sum(held) == 1:
            self.reporter.message(f"{self.history[-1]['chance_status']} (chance_status in history.jsonl; the cost "
                                  "guard, --max-phases and --max-density still end the run)")
        window = self.cfg.stop.min_points + 1
        fits = [r.get("plateau_fit") for r in self.history if r.get("plateau_fit")]
        line = self.history[-1].get("plateau_fit") if self.history else None
        if line and len(fits) == 1 and not stop.plateau_resolve and line.get("resolves_over"):
            have = doublings(line["from"], line["to"])
            if have < line["resolves_over"] - 1e-12:  # the first full window: its span is what the test will read
                self.reporter.message(
                    f"{self.history[-1].get('val_n')} validation samples resolve --plateau-tol {line['tol']:g} per "
                    f"doubling only over {line['resolves_over']:.2g} doublings of density, and the plateau test's "
                    f"last {line['points']} points span {have:.2g}: a plateau it finds may be flat only within what "
                    f"the validation set can tell (a larger --val-fraction gives it more samples; --plateau-resolve "
                    f"waits for that span)")
        wide = [(r.get("plateau_fit") or {}).get("points", 0) > window for r in self.history]
        if wide and wide[-1] and sum(wide) == 1:
            line = self.history[-1]["plateau_fit"]
            self.reporter.message(
                f"{self.history[-1].get('val_n')} validation samples resolve --plateau-tol {line['tol']:g} per "
                f"doubling only over {line['min_span']:.2g} doublings of density: the plateau test reads "
                f"{line['points']} points back (min_span in history.jsonl; --no-plateau-resolve: the last {window})")

    def _note_reach(self) -> None:
        """Say once, at the first growth step the guard lets through, how far it lets growth go when that is short
        of --max-density: past it the budget, not the accuracy curve, decides (docs/method.md, "Cost guard")."""
        guards = [r["cost_guard"] for r in self.history if "reach" in (r.get("cost_guard") or {})]
        g = self.history[-1].get("cost_guard") or {}
        if len(guards) != 1 or "reach" not in g or g["over"]:  # a guard that stops growth says so itself
            return
        cfg = self.cfg
        self.reporter.message(
            f"with {cfg.phase_epochs} epochs per phase, {cfg.final_epochs} final epochs and --max-cost "
            f"{g['limit']:g}, the cost guard will stop growth near density {g['reach']:.2g} (an estimate: each step "
            f"grows by --gamma), whatever the accuracy curve does; fewer --phase-epochs or a larger --max-cost reach "
            f"further (cost_guard.reach in history.jsonl)")

    def _perplexity(self, key: str, loss: float | None) -> dict[str, float]:
        """``{key: exp(loss)}`` for a language model (token inputs: loss per token, in nats), else nothing."""
        if loss is None or self.bundle.input_dtype.is_floating_point:
            return {}
        return {key: math.exp(min(loss, 700.0))}

    def history_row(self, stage: str, epochs: int, masks: MaskSet, stats, val_acc: float, val_loss: float) -> dict:
        """The history row of a phase or of final training: its density, accuracy, loss, cost and tau-core."""
        flops = training_flops(self.model, masks, self.input_shape)
        prev = self.history[-1] if self.history else None
        row: dict[str, Any] = {
            "phase": self.phase,
            "stage": stage,
            "epochs": epochs,
            "density": masks.density(),
            "n_nonzero": masks.n_nonzero(),
            "layer_density": masks.layer_density(),
            "train_loss": stats.train_loss,
            "val_acc": val_acc,
            "val_loss": val_loss,
            **self._perplexity("val_ppl", val_loss),
            "val_n": self.bundle.n_targets("val"),  # the accuracy's denominator (positions, for a language model)
            "val_majority": self._val_majority,  # guessing the commonest class: the stop rules' chance level
            **phase_cost(prev, sparse_fwd=flops.sparse, dense_fwd=self.dense_fwd, n_train=self.bundle.n_train,
                         epochs=epochs, reference_epochs=self.cfg.dense_reference_epochs),
            "wall_time": stats.seconds,
            "wall_total": (prev["wall_total"] if prev else 0.0) + stats.seconds,
        }
        if self.cfg.tau_core:  # a metric for the record: rank 0 alone measures and writes it
            entry = dist.on_primary(lambda: self._tau_core(masks, stats.seconds), "measuring the tau-core",
                                    share=False)
            if entry is not None:
                row["tau_core"] = entry
        if self.lr_change is not None:  # the first row trained at a learning rate given with --resume
            row["lr_change"] = self.lr_change
            self.lr_change = None
        return row

    def _tau_core(self, masks: MaskSet, train_seconds: float) -> dict[str, Any]:
        """The tau-core's history entry: its size, and its cost next to the phase's training time."""
        t0 = time.perf_counter()
        tc = tau_core(self.model, masks, self.input_shape)
        seconds = time.perf_counter() - t0
        # Its cost per phase next to the phase's training time (the tau-core is not counted in the cost).
        return {"size": tc.size, "n_hidden": tc.n_hidden, "ratio": tc.ratio, "seconds": seconds,
                "share_of_training": seconds / train_seconds if train_seconds > 0 else None}

    # -- files --------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Write the checkpoint, history.jsonl and curve.png on rank 0 (``write_checkpoint``); its failure ends every
        rank."""
        dist.on_primary(self.write_checkpoint, "writing the checkpoint", share=False)

    def write_checkpoint(self, progress: dict[str, Any] | None = None) -> None:
        """The checkpoint after phase ``self.phase - 1``, or with ``progress`` the one during final training
        (under the name the final training's own checkpoint takes when it ends)."""
        rewind = self.initial_state if self.method.rewind_step is not None else None
        index = self.phase - 1 if progress is None else self.phase
        checkpoint.write(rundir.checkpoint_path(self.out, index), checkpoint.Checkpoint(
            model_state=self.model.state_dict(), masks=self.trainer.masks.to_dict(),
            optimizer=self.trainer.optimizer_tensors(),
            rng=checkpoint.rng_states(self.data_gen, self.grow_gen, self.device),
            next_phase=self.phase, stage=self.stage, history=self.history, stop_reason=self.stop_reason,
            global_step=self.trainer.global_step, method_state=self.method.state_tensors(), rewind=rewind,
            start=pack_start(self.start), progress=progress,
            extra_meta={"config": self.cfg.to_dict(), "input_shape": list(self.input_shape),
                        "input_dtype": declared_dtype_name(self.model), "num_classes": self.bundle.num_classes}))
        if self.aside is not None:  # the new run has started properly: the replaced run's files can go
            rundir.drop_set_aside(self.aside)
            self.aside = None
        self._prune_checkpoints()
        if progress is None:
            rundir.write_history(self.out, self.history)
            self._plot()

    def _prune_checkpoints(self) -> None:
        """Delete all but the newest ``--keep-checkpoints`` checkpoints (the history is in each of them)."""
        keep = self.cfg.keep_checkpoints
        if keep:
            for old in rundir.checkpoints(self.out)[:-keep]:
                old.unlink(missing_ok=True)

    def _plot(self, summary: dict[str, Any] | None = None) -> None:
        """Draw curve.png; with the summary, once more at the end, so that it shows the test accuracy."""
        from pwmpr.plot import plot_curve

        try:
            with deferred_interrupt():  # a Ctrl-C here is raised once the plot is done, not inside it
                plot_curve(self.history, self.out / rundir.CURVE, title=f"{self.cfg.method} · {self.cfg.model} · "
                           f"{self.cfg.data}", summary=summary)
        except ImportError:
            self.reporter.message("matplotlib is not installed: curve.png is not drawn")

    def _finish(self) -> dict[str, Any]:
        if self.bundle.test is not None:
            test_acc, test_loss = self.trainer.evaluate(self._test())
        else:  # pwmpr.grow_module without a test split: nothing to report, rather than a number that is not one
            test_acc = test_loss = None
        last = self.history[-1]
        fits = [r["fit"] for r in self.history if r.get("fit") and r["fit"].get("identifiable")]
        fit = fits[-1] if fits else None
        summary = {
            "method": self.cfg.method,
            "model": self.cfg.model,
            "data": self.cfg.data,
            "seed": self.cfg.seed,
            "growth_rule": self.cfg.growth.rule if self.cfg.method == "pwmpr" else None,
            "seed_density": self.history[0]["density"],
            "discovered_density": last["density"],
            "rho_star": fit.get("rho_star") if fit else None,
            "fit": fit,
            "stop_reason": self.stop_reason,
            "n_phases": sum(1 for r in self.history if r["stage"] == "phase"),
            "val_acc": last["val_acc"],
            "test_acc": test_acc,
            "test_loss": test_loss,
            **self._perplexity("test_ppl", test_loss),
            "cost_flops": last["cost_flops"],
            "cost_epochs": last["cost_epochs"],
            "dense_reference_epochs": self.cfg.dense_reference_epochs,
            "train_flops_total": last["train_flops_total"],
            "wall_time": last["wall_total"],
            "tau_core": last.get("tau_core"),
            "layer_density": last["layer_density"],
            "device": self.device.type,  # the device trained on (torchrun: each rank's, for world_size ranks)
            "world_size": dist.world_size(),
            **self.method.summary(self.history),  # a method's own entries (PWMPR's shrink: both ends)
        }
        dist.on_primary(lambda: self._write_final(summary), "writing final.safetensors", share=False)
        return summary

    def _write_final(self, summary: dict[str, Any]) -> None:
        tensors = {rundir.MODEL_PREFIX + k: v for k, v in self.model.state_dict().items()}
        tensors.update({rundir.MASK_PREFIX + k: v for k, v in self.trainer.masks.to_dict().items()})
        meta = {"kind": "final", "config": self.cfg.to_dict(), "summary": summary,
                "input_shape": list(self.input_shape), "input_dtype": declared_dtype_name(self.model),
                "num_classes": self.bundle.num_classes}
        rundir.save_tensors(self.out / rundir.FINAL, tensors, meta)
        rundir.atomic_write_json(self.out / rundir.SUMMARY, summary)
        self._plot(summary)


def check_start_masks(model: torch.nn.Module, masks: MaskSet, input_shape: tuple[int, ...]) -> list[str]:
    """Refuse starting masks with no input-to-output path through their edges (or, where the model's unit graph
    cannot be read, with a layer left empty), or that a layer's forward does not hold (pwmpr.graph.mask_hold); the
    layers they leave with no edge, in a branch the path does not need (HRNet's fuse layers, a relative-position MLP
    fed by constants)."""
    empty = [name for name, mask in masks.items() if not bool(mask.any())]
    reaches = input_reaches_output(model, masks.to_dict(), input_shape)  # None: the unit graph cannot be read
    if empty and not reaches:
        raise PwmprError(f"the starting density {masks.density():.3g} leaves {len(empty)} layer(s) with no edge "
                         f"({_first_names(empty)}): no input reaches the outputs; raise the density")
    if reaches is False:
        raise no_path_error(masks.to_dict(), f"the starting masks (density {masks.density():.3g})")
    check_masks_hold(model, masks.to_dict(), input_shape)
    return empty


def _first_names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


class _SnapshotHook(Hook):
    """Keeps the weights after global step ``step`` as the run's rewind point (IMP weight rewinding)."""

    def __init__(self, step: int, run: PhaseLoop) -> None:
        self.step = step
        self.run = run

    def after_optimizer_step(self, trainer, *, loss):
        if trainer.global_step == self.step:
            self.run.initial_state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

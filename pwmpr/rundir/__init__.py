"""The run folder on disk: its layout, atomic writes, JSON and history, safetensors files and the ``--out`` policy.

A run folder holds::

    config.json          the complete RunConfig (written first; reproduces the run)
    history.jsonl        one JSON line per phase
    curve.png            accuracy vs density (vs epochs at one density), the stop rule's view, why it stopped
    checkpoints/phase-NNNN.safetensors   state after phase NNNN (weights, masks, optimizer, RNG, history)
    final.safetensors    final weights and masks
    summary.json         discovered density, test accuracy, cost vs dense, stop reason

Every file is written atomically (temporary name, then rename); checkpoints are safetensors only.
"""

from __future__ import annotations

from pwmpr.rundir.atomic import (
    USER_OS_ERRORS,
    atomic_save_figure,
    atomic_write,
    atomic_write_text,
    umask,
    write_error,
)
from pwmpr.rundir.jsonio import (
    SUMMARY_NUMBERS,
    atomic_write_json,
    finished_summary,
    json_default,
    read_history,
    read_summary,
    write_history,
)
from pwmpr.rundir.layout import (
    CHECKPOINTS,
    CONFIG,
    CURVE,
    FINAL,
    HISTORY,
    MASK_PREFIX,
    META_KEY,
    MODEL_PREFIX,
    OPTIM_PREFIX,
    RNG_PREFIX,
    SET_ASIDE,
    SUMMARY,
    TMP_SUFFIX,
    checkpoint_path,
    checkpoints,
    default_run_dir,
    folder_name,
    is_run_dir,
)
from pwmpr.rundir.outdir import (
    check_out_dir,
    check_replaceable,
    clean_leftovers,
    clear_run_dir,
    is_leftover,
    make_out_dir,
    remove_if_empty,
)
from pwmpr.rundir.setaside import drop_set_aside, recover_set_aside, restore_set_aside, set_aside
from pwmpr.rundir.tensors import load_tensors, save_tensors, split_prefix

__all__ = [
    "CHECKPOINTS", "CONFIG", "CURVE", "FINAL", "HISTORY", "MASK_PREFIX", "META_KEY", "MODEL_PREFIX", "OPTIM_PREFIX",
    "RNG_PREFIX", "SET_ASIDE", "SUMMARY", "SUMMARY_NUMBERS", "TMP_SUFFIX",
    "USER_OS_ERRORS", "atomic_save_figure", "atomic_write", "atomic_write_json", "atomic_write_text",
    "check_out_dir", "check_replaceable", "checkpoint_path", "checkpoints", "clean_leftovers", "clear_run_dir",
    "default_run_dir", "drop_set_aside", "finished_summary", "folder_name", "is_leftover", "is_run_dir",
    "json_default", "load_tensors", "make_out_dir", "read_history", "read_summary", "recover_set_aside",
    "remove_if_empty", "restore_set_aside", "save_tensors", "set_aside", "split_prefix", "umask", "write_error",
    "write_history",
]  # fmt: skip

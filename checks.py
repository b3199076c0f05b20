"""
Flag checks for the three command lines (train.py, probes.py, evaluate.py), run right after
parsing: a bad value stops the script in about a second, before a model loads, a folder is
made or a teacher is asked, with one line that names the flag, the value and what is allowed,
and exit status 2.

    ap = checks.one_line(argparse.ArgumentParser())   # argparse's own errors: one line too
    args = ap.parse_args()
    ranges(ap, args, {"limit": AT_LEAST_0, "batch_size": AT_LEAST_1})
    checks.train_flags(ap, args)                      # everything else train.py takes

tests/test_bad_input.py runs every bad value of the three scripts.
"""

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import torch

import data
import dist
import models
import runs
import teachers
from data import real, synth

# -----------------------------------------------------------------------------
# ranges: (test, what is allowed); values must also be finite (a NaN passes no comparison)

AT_LEAST_0 = (lambda v: v >= 0, ">= 0")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
POSITIVE = (lambda v: v > 0, "> 0")
FRACTION = (lambda v: 0 <= v <= 1, "in [0, 1]")

# train.py's flags that a range alone decides (the rest: train_flags below)
TRAIN_RANGES = {
    "train_n": (AT_LEAST_0[0], ">= 0 (0 = all)"), "eval_n": AT_LEAST_1, "eval_max_new_tokens": AT_LEAST_1,
    "save_every": (AT_LEAST_0[0], ">= 0 (0 = by time)"), "save_minutes": POSITIVE,
    "rollout_batch": (AT_LEAST_0[0], ">= 0 (0 = all)"), "tau_hard": FRACTION, "sft_probes": AT_LEAST_0,
    "sft_dialogues": AT_LEAST_0,
    "sft_batch": AT_LEAST_1, "sft_micro": AT_LEAST_1, "sft_lr": POSITIVE, "sft_warmup": AT_LEAST_0,
    "beta": AT_LEAST_0, "clip_eps": POSITIVE, "aux_weight": AT_LEAST_0,
    "eval_every": (AT_LEAST_0[0], ">= 0 (0 = never)"), "eval_every_n": AT_LEAST_1, "rl_lr": POSITIVE,
    "rl_micro": AT_LEAST_1, "max_new_tokens": AT_LEAST_1, "temperature": POSITIVE, "ppo_epochs": AT_LEAST_1,
    "grad_clip": (AT_LEAST_0[0], ">= 0 (0 = no clipping)"),
    "gpus": (AT_LEAST_0[0], ">= 0 (0 = torchrun's processes, else 1)"),
}

# -----------------------------------------------------------------------------
# --help: one line per flag where it fits, its default beside it


class CompactHelp(argparse.HelpFormatter):
    """`--flag N   what it does (default: 4)`: short metavars (N an int, X a float, S a string)
    and a fixed width, so that a help page lists every flag of a group in a glance."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=110)

    def _get_default_metavar_for_optional(self, action):
        return {int: "N", float: "X"}.get(action.type, "S")

    def _get_help_string(self, action):
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        return (action.help or "") + (f" (default: {action.default})" if shown else "")


# -----------------------------------------------------------------------------
# the checks


def fail(ap, message):
    """One line on stderr, exit 2 (argparse's status for a bad command line), no usage block."""
    print(f"{ap.prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def one_line(ap):
    """Make argparse's own errors (a bad type, an unknown flag, a bad choice) one line too."""
    ap.error = lambda message: fail(ap, message)
    return ap


def ranges(ap, args, table):
    """Every flag of `table` ({dest: (test, allowed)}) that is set must be finite and pass its test."""
    for dest, (ok, allowed) in table.items():
        v = getattr(args, dest)
        if v is not None and (isinstance(v, float) and not math.isfinite(v) or not ok(v)):
            fail(ap, f"--{dest.replace('_', '-')} {v}: must be {allowed}")


def must_exist(ap, args, *dests, what="folder"):
    """Paths that must already be there (a file or a folder, as `what` says)."""
    for dest in dests:
        v = getattr(args, dest)
        if v is not None and not (Path(v).is_dir() if what == "folder" else Path(v).is_file()):
            fail(ap, f"--{dest.replace('_', '-')} {v}: no {what} at {Path(v).resolve()}")


def student(ap, flag, name, allow_none=False):
    """An alias of sample.py, an existing folder, or a hub id (org/name; checked when it loads)."""
    if allow_none and name == "none":
        return
    if runs.read_config(name)[0] is not None:   # a train.py run folder: its models are inside
        fail(ap, f"{flag} {name}: that is a run folder; its trained model is {Path(name) / 'rl' / 'final'} "
                 f"(the warm-up: {Path(name) / 'sft' / 'final'})")
    if name in models.STUDENTS or Path(name).expanduser().exists():
        return
    if "/" in name and not models.is_path(name):
        return
    fail(ap, f"{flag} {name}: unknown student {name!r}: not an alias ({', '.join(models.STUDENTS)}) nor a "
             f"hub id (org/name), and no folder at {Path(name).expanduser().resolve()}")


def device(ap, name):
    """--device: a torch device this machine has."""
    if name is None:
        return
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        fail(ap, f"--device {name}: {e}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        fail(ap, f"--device {name}: no CUDA device here; use cpu, or leave --device out")


def level(ap, value):
    if value is not None and value not in synth.LEVELS:
        fail(ap, f"--level {value}: must be one of {', '.join(map(str, synth.LEVELS))}")


def oracle_on_text(ap, args, instead):
    """The oracle computes answers from the synthetic world's structure: a text dataset has none."""
    if args.dataset != "synth" and args.teacher == "oracle" and not args.teacher_url:
        fail(ap, f"--teacher oracle: answers only the synthetic world, not --dataset {args.dataset}; "
                 f"use {instead}")


def teacher(ap, args):
    problem = teachers.check_args(args)
    if problem:
        fail(ap, problem)


def raises(ap, flag, value, check):
    """A module's own check of its input (it raises ValueError) as one line naming the flag,
    e.g. raises(ap, "--rules", "why,telepathy", probes.parse_rules)."""
    try:
        check(value)
    except ValueError as e:
        fail(ap, f"{flag} {value}: {e}")


SHAPE = ("arch", "hidden", "layers", "heads", "kv_heads", "head_dim", "intermediate")   # of models.compact


def sft_from(ap, path, student):
    """--sft-from: a saved model folder (RUN/sft/final) of the student's shape, not a run folder,
    an empty one, or another architecture's warm-up (a screen of size mismatches after stage 1)."""
    folder = Path(path)
    if runs.read_config(folder)[0] is not None:   # a train.py run folder: point at its warm-up
        fail(ap, f"--sft-from {path}: that is a run folder; its warm-up is {folder / 'sft' / 'final'}")
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        fail(ap, f"--sft-from {path}: no checkpoint there (a model folder holds config.json and "
                 f"*.safetensors, e.g. runs/x/sft/final)")
    want, got = models.architecture(student), models.architecture(str(folder))
    if want and got and any(want[k] != got[k] for k in SHAPE):
        fail(ap, f"--sft-from {path}: a warm-up of another shape than --student {student} ("
                 + ", ".join(f"{k} {got[k]} != {want[k]}" for k in SHAPE if want[k] != got[k]) + ")")


def train_flags(ap, args):
    """train.py's flags, in the order a user reads them (--rules: train.get_args, with probes.parse_rules)."""
    if args.dataset not in data.DATASETS:
        fail(ap, f"--dataset {args.dataset}: unknown; choose one of {', '.join(data.DATASETS)}")
    if not 0 < args.data_fraction <= 1:
        fail(ap, f"--data-fraction {args.data_fraction}: must be in (0, 1]")
    for flag, ok, allowed in (("k", args.k >= 1, ">= 1"), ("rl_questions", args.rl_questions >= 1, ">= 1"),
                              ("G", args.G >= 2, ">= 2 (a group of one has no advantage)"),
                              ("delta", args.delta >= 0, ">= 0"), ("nu", args.nu >= 1, ">= 1 (a margin)"),
                              ("rl_steps", args.rl_steps >= 1 or args.no_rl, ">= 1 (or --no-rl)"),
                              ("sft_epochs", args.sft_epochs >= 1 or args.no_sft, ">= 1 (or --no-sft)")):
        if not ok:
            fail(ap, f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be {allowed}")
    if args.k < 2 and not (args.no_probes or args.no_rl or args.teacher == "none"):
        # Scenario B keeps the first k' in [1, k-1] probes: with k = 1 that range is empty
        fail(ap, f"--k {args.k}: ExGRPO needs k >= 2 (Scenario B keeps k' in [1, k-1] of Scenario A's "
                 f"k probes); use --k 2 or more, or --no-probes for plain GRPO")
    if args.k_partial is not None and not 1 <= args.k_partial < args.k:
        fail(ap, f"--k-partial must be in [1, k-1] = [1, {args.k - 1}], got {args.k_partial}")
    ranges(ap, args, TRAIN_RANGES)
    student(ap, "--student", args.student)
    student(ap, "--difficulty-student", args.difficulty_student, allow_none=True)
    device(ap, args.device)
    must_exist(ap, args, "data_dir")
    level(ap, args.level)
    if args.resume and (problem := runs.read_config(args.resume)[1]):
        fail(ap, f"--resume {args.resume}: {problem}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        fail(ap, f"--out {args.out}: a file is there, not a folder")
    if args.sft_from:
        sft_from(ap, args.sft_from, args.student)
    if args.report_to != "none" and importlib.util.find_spec(args.report_to) is None:
        fail(ap, f"--report-to {args.report_to}: the package is not installed; pip install {args.report_to}")
    if args.teacher == "none":
        return
    teacher(ap, args)
    oracle_on_text(ap, args,
                   "--teacher hf:<model>, --teacher-url URL --teacher-model NAME, or --teacher none")


def several_processes(args):
    """Under torchrun (dist.py), on the run's final flags (a resumed run's saved ones): FSDP2 shards
    fp32 weights with torch's AdamW (bf16 compute on GPUs); the single-GPU memory schemes and the
    baselines not written for it are refused. Returns why not (one line), or None."""
    n = dist.world()
    if args.optimizer not in ("master", "adamw") or (args.resume and args.optimizer != "adamw"):
        return (f"--optimizer {args.optimizer}: a one-process scheme (a run started in one process resumes "
                f"in one); under torchrun the weights and AdamW moments are sharded fp32")
    args.optimizer = "adamw"
    if args.method in ("step-by-step", "revthink", "gkd"):
        return f"--method {args.method} runs in one process only; drop torchrun, or use exgrpo, grpo or sft"
    if not args.no_rl and args.rl_questions < n:
        return f"--rl-questions {args.rl_questions}: at least one question per process ({n} processes)"
    return None


def evaluate_flags(ap, args):
    """evaluate.py's ranges, paths, student, device, level and dtype."""
    ranges(ap, args, {"limit": (AT_LEAST_0[0], ">= 0 (0 = the whole split)"), "batch_size": AT_LEAST_1,
                      "max_new_tokens": AT_LEAST_1, "samples": (AT_LEAST_0[0], ">= 0 (0 = off)")})
    student(ap, "--student", args.student)
    device(ap, args.device)
    level(ap, args.level)
    must_exist(ap, args, "data_dir")
    if args.dtype not in (None, "fp32", "bf16", "fp16"):
        fail(ap, f"--dtype {args.dtype}: must be fp32, bf16 or fp16")
    if args.ei_test not in (None, "synth"):
        must_exist(ap, args, "ei_test", what="file")


def probes_flags(ap, args):
    """probes.py's flags, before any data is read, model loaded or teacher asked (--rules: probes.main)."""
    if args.dataset not in data.DATASETS:
        fail(ap, f"--dataset {args.dataset}: unknown; choose one of {', '.join(data.DATASETS)}")
    have = synth.SPLITS if args.dataset == "synth" else list(real.DATASETS[args.dataset]["files"])
    if args.split not in have:
        fail(ap, f"--split {args.split}: {args.dataset} has {', '.join(have)}")
    ranges(ap, args, {"limit": AT_LEAST_1, "tau_hard": FRACTION, "chunk": AT_LEAST_1,
                      "student_max_tokens": AT_LEAST_1, "student_batch_size": AT_LEAST_1})
    must_exist(ap, args, "data_dir")
    student(ap, "--student", args.student, allow_none=True)
    teacher(ap, args)
    oracle_on_text(ap, args, "--teacher hf:<model> or --teacher-url URL --teacher-model NAME")
    if args.out and Path(args.out).is_dir():
        fail(ap, f"--out {args.out}: is a folder; give the D_EI file to write (a .jsonl path)")

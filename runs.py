"""
The run folder: config, state, metrics, checkpoints. Plumbing of train.py, not the method.

    runs/<student>-<time>/
        config.json     the flags of the run (a resumed run keeps them)
        state.json      finished stages and their results, written atomically
        metrics.jsonl   one line per optimizer step ({"stage": "sft" | "rl" | "rl_eval", "step": ...})
        tensorboard/, wandb/    the same scalars, with --report-to tensorboard | wandb
        dei.jsonl       D_EI of stage 1
        sft/final, rl/final     save_pretrained folders (AutoModelForCausalLM.from_pretrained loads them)
        <stage>/ckpt            the newest checkpoint of an unfinished stage (+ trainer.pt: optimizer,
                                RNG, step)

A crash loses at most --save-minutes of work; `python train.py --resume RUN` continues it.
Under torchrun (dist.py) rank 0 writes every file; a checkpoint gathers the sharded weights and
optimizer state to it first (every process takes part), and holds each process's RNG state.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

import dist

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}   # --report-to -> the package it needs


def write_atomic(path, text):
    """Write a file of the run folder whole or not at all: a temp file beside it, then a rename. A
    crash or a full disk leaves the old file, never half a new one (a cut results.json would mark
    the run finished; a cut config.json would leave it unresumable)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl(path, what="log"):
    """The rows of a JSONL file; a line that does not parse (a run killed mid-write leaves one cut
    last line) is skipped and counted on stderr, not fatal."""
    rows, bad = [], 0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    if bad:
        print(f"note: {path}: {bad} {what} line(s) that do not parse (cut by a crash?) skipped",
              file=sys.stderr)
    return rows


class Tracker:
    """metrics.jsonl's scalars mirrored to TensorBoard or Weights & Biases, as "<stage>/<key>" at
    the row's step (e.g. rl/reward at step 3). wandb runs offline when WANDB_MODE=offline is set
    (then `wandb sync` uploads later); TensorBoard writes event files under <run>/tensorboard."""

    def __init__(self, kind, path, config):
        self.kind = kind
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(log_dir=str(Path(path) / "tensorboard"))
        elif kind == "wandb":
            import wandb
            self.writer = wandb.init(project="exgrpo", name=Path(path).name, dir=str(path), config=config,
                                     resume="allow", id=Path(path).name)
        else:
            raise ValueError(f"unknown tracker {kind!r}; choose one of {', '.join(TRACKERS)}")

    def log(self, row):
        stage, step = row.get("stage", "run"), row.get("step", 0)
        scalars = {f"{stage}/{k}": float(v) for k, v in row.items()
                   if isinstance(v, (int, float)) and k != "step" and v == v}   # v == v: not NaN
        if self.kind == "tensorboard":
            for tag, v in scalars.items():
                self.writer.add_scalar(tag, v, step)
            self.writer.flush()
        else:
            self.writer.log(scalars, step=step)

    def close(self):
        (self.writer.close if self.kind == "tensorboard" else self.writer.finish)()


class Run:
    """A run folder: config.json (the args), state.json (finished stages and their results),
    metrics.jsonl (one line per optimizer step), <stage>/ckpt and <stage>/final checkpoints."""

    def __init__(self, path):
        self.path = Path(path)
        self.state_path = self.path / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"done": {}}
        self.tracker = None   # a Tracker with --report-to
        self.start_clock()

    # The stage clock: the seconds the running stage has trained, earlier killed attempts included
    # up to their last checkpoint (the checkpoint stores them, resume_trainer reads them back), so
    # a resumed run reports what it cost, not only its last process. Work after that checkpoint is
    # redone on resume and counted once.
    def start_clock(self):
        self.clock_t0, self.clock_before = time.time(), 0.0

    def seconds(self):
        return self.clock_before + time.time() - self.clock_t0

    def finished(self, stage):
        return stage in self.state["done"]

    def finish(self, stage, result):
        self.state["done"][stage] = result
        if not dist.is_main():   # every process keeps the state; rank 0 writes it
            return
        write_atomic(self.state_path, json.dumps(self.state, indent=2))

    def log(self, row):
        if not dist.is_main():
            return
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tracker is not None:
            self.tracker.log(row)

    def close(self):
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None

    def trim_log(self, stage, from_step):
        """Drop log lines of `stage` (and its held-out evals) at or after `from_step`: they are redone."""
        path = self.path / "metrics.jsonl"
        if path.exists() and dist.is_main():
            keep = [r for r in read_jsonl(path, "metrics")
                    if not (r.get("stage") in (stage, stage + "_eval") and r.get("step", 0) >= from_step)]
            write_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))

    def save(self, stage, name, model, tok, trainer_state=None):
        """save_pretrained (loadable by AutoModelForCausalLM.from_pretrained) + trainer state +
        the SHA-256 of every file, written to a temp folder, flushed to disk and renamed. A
        checkpoint ("ckpt") keeps its predecessor as "ckpt.prev" until the next one is complete,
        so a crash or a corrupted file costs at most one checkpoint interval more."""
        whole = dist.full_state_dict(model) if dist.on() else None   # a collective: every process
        if not dist.is_main():
            return dist.barrier()   # ... then wait until rank 0 has written it
        target = self.path / stage / name
        tmp = target.with_name(name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, state_dict=whole) if whole is not None else model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        write_checksums(tmp)
        old = target.with_name(name + (".prev" if name == "ckpt" else ".old"))
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if name != "ckpt":
            shutil.rmtree(old, ignore_errors=True)
        dist.barrier()

    def save_final(self, stage, model, tok):
        """<stage>/final, then the stage's checkpoints are no longer needed."""
        self.save(stage, "final", model, tok)
        for name in ("ckpt", "ckpt.prev") if dist.is_main() else ():
            shutil.rmtree(self.path / stage / name, ignore_errors=True)

    def checkpoint(self, stage):
        """The newest usable checkpoint of `stage` (verified: every file as written, finite
        weights), the previous one with a notice if the newest is damaged, or None if there is
        none. Both damaged: a one-line error that says which folder to delete."""
        found, damaged = [self.path / stage / n for n in ("ckpt", "ckpt.prev")
                          if (self.path / stage / n).exists()], []
        for ckpt in found:
            problem = verify(ckpt)
            if problem is None:
                if damaged:
                    print(f"notice: {damaged[0][0]} is unusable ({problem_of(damaged)}); "
                          f"resuming from {ckpt}")
                return ckpt
            damaged.append((ckpt, problem))
        if damaged:
            sys.exit(f"error: no usable checkpoint of stage {stage} ({problem_of(damaged)}); delete "
                     f"{self.path / stage} to restart the stage from its beginning")
        return None


def problem_of(damaged):
    return "; ".join(f"{path.name}: {why}" for path, why in damaged)

# -----------------------------------------------------------------------------
# checkpoint integrity


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checksums(folder):
    """checksums.json: the SHA-256 of every file of a checkpoint folder; every file is flushed to
    disk first, so a power cut cannot leave a renamed folder with half-written files."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    for p in files:
        with open(p, "rb+") as f:
            os.fsync(f.fileno())
    sums = {p.name: _sha256(p) for p in files}
    with open(Path(folder) / "checksums.json", "w") as f:
        json.dump(sums, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def verify(folder):
    """None if a checkpoint folder is usable, else why not: a file missing, truncated or changed
    since it was written (checksums.json), or a non-finite weight."""
    folder = Path(folder)
    try:
        sums = json.loads((folder / "checksums.json").read_text())
    except (OSError, ValueError) as e:
        return f"checksums.json unreadable: {e.__class__.__name__}"
    for name, digest in sums.items():
        if not (folder / name).is_file():
            return f"{name} missing"
        if _sha256(folder / name) != digest:
            return f"{name} damaged (checksum differs)"
    from safetensors.torch import load_file
    for f in folder.glob("*.safetensors"):
        if not all(torch.isfinite(t).all() for t in load_file(f).values() if t.is_floating_point()):
            return f"{f.name} holds non-finite weights"
    return None


# flags a resumed run may take anew (--resume DIR --teacher-url ...): where it runs, how often it
# saves and logs, how it reaches its teacher (answers are cached by teacher, settings and prompt,
# not by address). Any other flag must match the run's config.json: it would change the run.
RESUME_MAY_CHANGE = {"save_every", "save_minutes", "report_to", "device", "teacher_url", "teacher_cache",
                     "teacher_concurrency", "teacher_timeout", "teacher_retries", "teacher_backoff",
                     "teacher_deadline"}


def read_config(path):
    """(the saved flags of the train.py run in folder `path`, None), or (None, a one-line problem):
    no config.json, one that does not parse, or one that is not a run's (a model folder's)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None, f"no run there to resume (no config.json in {Path(path).resolve()})"
    try:
        saved = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"{cfg} does not parse ({e}); the run cannot be resumed"
    if not isinstance(saved, dict) or not {"student", "rl_steps", "seed"} <= saved.keys():
        return None, (f"{cfg} is not a train.py run's (a model folder? a run folder holds config.json, "
                      f"metrics.jsonl and its stages' folders)")
    return saved, None


def resolve_run(args, anew=()):
    """(args, run folder path): a new folder, or the one named by --resume: its saved config wins,
    but for the flags in `anew` (given on the command line, in RESUME_MAY_CHANGE). Checked before
    anything is loaded or written: a folder is never overwritten."""
    if args.resume:
        path = Path(args.resume)
        saved, problem = read_config(path)
        if problem:
            sys.exit(f"error: --resume {path}: {problem}")
        if (path / "results.json").exists():
            sys.exit(f"error: {path} holds a finished run; nothing to resume")
        new = {k: getattr(args, k) for k in anew
               if k in RESUME_MAY_CHANGE and getattr(args, k) != saved.get(k)}
        for k, v in sorted(new.items()):
            print(f"resume: --{k.replace('_', '-')} {v} (the run had {saved.get(k)})")
        # flags added since the run started take their defaults
        return argparse.Namespace(**{**vars(args), **saved, **new, "resume": args.resume}), path
    path = Path(args.out or f"runs/{Path(args.student).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if path.exists() and any(path.iterdir()):
        what = "a finished run" if (path / "results.json").exists() else "an unfinished run"
        sys.exit(f"error: {path} already holds {what}; pick another --out, or --resume {path}")
    return args, path


def open_run(args, path):
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "config.json"
    if not cfg.exists():   # the flags the run started with
        write_atomic(cfg, json.dumps(vars(args), indent=2))
    elif args.resume:      # kept as the run started, but for the plumbing a resume took anew (a later
        saved, _ = read_config(path)   # resume must reach the teacher's new address too)
        new = {k: getattr(args, k) for k in RESUME_MAY_CHANGE
               if saved is not None and hasattr(args, k) and getattr(args, k) != saved.get(k)}
        if new:
            write_atomic(cfg, json.dumps({**saved, **new}, indent=2))
    run = Run(path)
    if getattr(args, "report_to", "none") != "none" and dist.is_main():
        run.tracker = Tracker(args.report_to, path, vars(args))
    if args.resume:
        print(f"resuming {path}: done = {', '.join(run.state['done']) or 'nothing yet'}")
    return run


_last_save = [time.time()]


def due(args, step, total):
    """Checkpoint after this step? Every --save-every steps, or when --save-minutes have passed."""
    if step + 1 >= total:
        return False   # the stage's final save follows
    if args.save_every:
        return (step + 1) % args.save_every == 0
    return time.time() - _last_save[0] > 60 * args.save_minutes


def save_trainer(run, stage, model, tok, opt, next_step):
    _last_save[0] = time.time()
    rng = dist.gather({"torch_rng": torch.get_rng_state(),   # one per process (rank 0: [its own])
                       "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
    optimizer = dist.full_optimizer_state(model, opt) if dist.on() else opt.state_dict()
    run.save(stage, "ckpt", model, tok, {"step": next_step, "optimizer": optimizer, **(rng[0] if rng else {}),
                                         "rngs": rng, "seconds": run.seconds()})


def resume_trainer(run, stage, model, opt):
    """The step to start from: 0, or the step after the last checkpoint (weights, optimizer and
    RNG restored; metric lines logged after that checkpoint are dropped and redone)."""
    ckpt = run.checkpoint(stage)
    if ckpt is None:
        run.trim_log(stage, 0)
        return 0
    from transformers import AutoModelForCausalLM
    # copied onto the device below
    state = torch.load(ckpt / "trainer.pt", weights_only=False, map_location="cpu")
    saved = AutoModelForCausalLM.from_pretrained(ckpt, dtype=next(model.parameters()).dtype)
    dist.load_full_state_dict(model, saved.state_dict())
    dist.load_full_optimizer_state(model, opt, state["optimizer"])
    rngs = state.get("rngs") or [state]   # each process its own RNG (a checkpoint of one process: [its])
    mine = rngs[dist.rank()] if len(rngs) == dist.world() else rngs[0]
    torch.set_rng_state(mine["torch_rng"])
    if mine.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(mine["cuda_rng"])
    run.trim_log(stage, state["step"])
    run.clock_before += state.get("seconds", 0.0)   # what the killed attempts took to get here
    print(f"{stage}: resumed at step {state['step']} from {ckpt}")
    return state["step"]


def load_weights(model, path):
    """Weights of a finished stage (<stage>/final) into `model`, verified first."""
    from transformers import AutoModelForCausalLM
    problem = verify(path) if (Path(path) / "checksums.json").exists() else None
    if problem:
        sys.exit(f"error: {path} is unusable ({problem}); start a new run "
                 f"(--sft-from can reuse another warm-up)")
    saved = AutoModelForCausalLM.from_pretrained(path, dtype=next(model.parameters()).dtype)
    dist.load_full_state_dict(model, saved.state_dict())

"""
The run folder: config, state, metrics, checkpoints. Plumbing of train.py, not the method.

    runs/<student>-<time>/
        config.json     the flags of the run (a resumed run keeps them)
        state.json      finished stages and their results, written atomically
        metrics.jsonl   one line per optimizer step ({"stage": "sft" | "rl" | "rl_eval", "step": ...})
        dei.jsonl       D_EI of stage 1
        sft/final, rl/final     save_pretrained folders (AutoModelForCausalLM.from_pretrained loads them)
        <stage>/ckpt            the newest checkpoint of an unfinished stage (+ trainer.pt: optimizer, RNG, step)

A crash loses at most --save-minutes of work; `python train.py --resume RUN` continues it.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch


class Run:
    """A run folder: config.json (the args), state.json (finished stages and their results),
    metrics.jsonl (one line per optimizer step), <stage>/ckpt and <stage>/final checkpoints."""

    def __init__(self, path):
        self.path = Path(path)
        self.state_path = self.path / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {"done": {}}

    def finished(self, stage):
        return stage in self.state["done"]

    def finish(self, stage, result):
        self.state["done"][stage] = result
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.state_path)  # atomic: a crash leaves the old state, never half a file

    def log(self, row):
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def trim_log(self, stage, from_step):
        """Drop log lines of `stage` (and its held-out evals) at or after `from_step`: they are redone."""
        path = self.path / "metrics.jsonl"
        if path.exists():
            rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
            keep = [r for r in rows if not (r.get("stage") in (stage, stage + "_eval") and r["step"] >= from_step)]
            path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def save(self, stage, name, model, tok, trainer_state=None):
        """save_pretrained (loadable by AutoModelForCausalLM.from_pretrained) + trainer state,
        written to a temp folder and renamed, so the previous checkpoint survives a crash."""
        target = self.path / stage / name
        tmp = target.with_name(name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        old = target.with_name(name + ".old")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)

    def save_final(self, stage, model, tok):
        """<stage>/final, then the stage's checkpoint is no longer needed."""
        self.save(stage, "final", model, tok)
        shutil.rmtree(self.path / stage / "ckpt", ignore_errors=True)

    def checkpoint(self, stage):
        ckpt = self.path / stage / "ckpt"
        return ckpt if (ckpt / "trainer.pt").exists() else None


def resolve_run(args):
    """(args, run folder path): a new folder, or the one named by --resume (its saved config
    wins). Checked before anything is loaded or written: a folder is never overwritten."""
    if args.resume:
        path = Path(args.resume)
        if not (path / "config.json").exists():
            sys.exit(f"error: {path} holds no run to resume (no config.json)")
        if (path / "results.json").exists():
            sys.exit(f"error: {path} holds a finished run; nothing to resume")
        saved = json.loads((path / "config.json").read_text())
        # flags added since the run started take their defaults
        return argparse.Namespace(**{**vars(args), **saved, "resume": args.resume}), path
    path = Path(args.out or f"runs/{Path(args.student).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if path.exists() and any(path.iterdir()):
        what = "a finished run" if (path / "results.json").exists() else "an unfinished run"
        sys.exit(f"error: {path} already holds {what}; pick another --out, or --resume {path}")
    return args, path


def open_run(args, path):
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "config.json").exists():
        (path / "config.json").write_text(json.dumps(vars(args), indent=2))
    run = Run(path)
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
    run.save(stage, "ckpt", model, tok, {"step": next_step, "optimizer": opt.state_dict(),
                                         "torch_rng": torch.get_rng_state(),
                                         "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})


def resume_trainer(run, stage, model, opt):
    """The step to start from: 0, or the step after the last checkpoint (weights, optimizer and
    RNG restored; metric lines logged after that checkpoint are dropped and redone)."""
    ckpt = run.checkpoint(stage)
    if ckpt is None:
        run.trim_log(stage, 0)
        return 0
    from transformers import AutoModelForCausalLM
    state = torch.load(ckpt / "trainer.pt", weights_only=False, map_location="cpu")  # copied onto the device below
    saved = AutoModelForCausalLM.from_pretrained(ckpt, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())
    opt.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    run.trim_log(stage, state["step"])
    print(f"{stage}: resumed at step {state['step']} from {ckpt}")
    return state["step"]


def load_weights(model, path):
    from transformers import AutoModelForCausalLM
    saved = AutoModelForCausalLM.from_pretrained(path, dtype=next(model.parameters()).dtype)
    model.load_state_dict(saved.state_dict())

"""
One GRPO step of this project versus TRL's GRPOTrainer: same model, prompts, G, lengths and
sampling settings, alternated A B A B in one process.

    python -m venv --system-site-packages /tmp/trlenv
    /tmp/trlenv/bin/pip install -r bench/requirements-trl.txt -c bench/requirements-trl.txt
    /tmp/trlenv/bin/python bench/step_vs_trl.py                          # tiny model
    /tmp/trlenv/bin/python bench/step_vs_trl.py --student smollm2-135m --reps 3

TRL lives only in that venv, for this benchmark; the project never imports it.
The step, both sides: Q questions of the synthetic world x G samples at temperature 1.0,
top_k 0, top_p 1.0, <= L new tokens; binary reward (rewards.reward); group advantages;
clipped surrogate + beta * KL to a frozen reference (beta = 0.04, so both hold a reference
model); token-mean loss over the batch (TRL loss_type="dapo" = our --agg token); one
forward/backward over the whole batch and one AdamW step with grad-norm clip 1.0.
Ours is exgrpo.exgrpo_step with --no-probes --adv-norm std (plain single-turn GRPO with
TRL's std-scaled group advantages: TRL has no multi-turn dialogues). The timer covers generation + scoring + update: for TRL from on_step_begin to
on_step_end (the prompts are fetched before, as plain strings); our step runs right after
each TRL step, inside the same callback, on its own model copy, with the same questions.
Step 0 of each is a warm-up and not counted. Prints the medians and ours / TRL.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import data     # noqa: E402
import rewards  # noqa: E402
import models
import exgrpo   # noqa: E402
import optim    # noqa: E402
import train    # noqa: E402

# -----------------------------------------------------------------------------
# defaults: small enough for a shared 2-core CPU

STUDENT = "tiny"
QUESTIONS = 2          # prompts per step
G = 4                  # samples per prompt
MAX_NEW_TOKENS = 32
REPS = 4               # timed steps of each (after one warm-up step of each)
BETA = 0.04
LR = 1e-6
SEED = 0


def model_folder(student, out):
    """A save_pretrained folder both trainers load: TRL builds its reference model from a path."""
    if student == "smollm2-135m":
        return str(models._smollm2_folder())
    if student != "tiny":
        return student
    path = Path(out) / "tiny"
    if not (path / "config.json").exists():
        model, tok = models.load_student("tiny", dtype="fp32", device="cpu", seed=SEED)
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return str(path)


def main():
    ap = argparse.ArgumentParser(description="one GRPO step: this project vs TRL GRPOTrainer")
    ap.add_argument("--student", default=STUDENT)
    ap.add_argument("--questions", type=int, default=QUESTIONS)
    ap.add_argument("--G", type=int, default=G)
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()

    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load_start = uptime()
    torch.manual_seed(SEED)
    work = tempfile.mkdtemp(prefix="exgrpo-vs-trl-")
    folder = model_folder(args.student, work)
    tok = AutoTokenizer.from_pretrained(folder)
    steps = args.reps + 1
    questions = data.load("synth", "train", limit=args.questions * steps, seed=SEED)
    B = args.questions * args.G

    # --- TRL: GRPOTrainer, configured to do the same work as exgrpo.exgrpo_step
    rows = [{"prompt": [{"role": "user", "content": data.user_message(q)}], "answer": q["answer"],
             "answer_type": q["answer_type"], "question": q["question"]} for q in questions]

    def reward_fn(prompts, completions, answer, answer_type, question, **kw):
        return [rewards.reward(c[0]["content"], a, t, qq) for c, a, t, qq in zip(completions, answer, answer_type, question)]

    cfg = GRPOConfig(output_dir=work, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                     logging_steps=10_000, max_steps=steps, learning_rate=LR, lr_scheduler_type="constant",
                     per_device_train_batch_size=B, gradient_accumulation_steps=1, num_generations=args.G,
                     max_completion_length=args.max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
                     beta=BETA, epsilon=0.2, loss_type="dapo", scale_rewards="group", num_iterations=1,
                     max_grad_norm=1.0, weight_decay=0.0, shuffle_dataset=False, seed=SEED,
                     gradient_checkpointing=False,   # TRL turns it on by default; ours recomputes nothing
                     model_init_kwargs={"dtype": torch.float32}, dataloader_num_workers=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=folder, reward_funcs=reward_fn, args=cfg, train_dataset=Dataset.from_list(rows),
                          processing_class=tok)
    trl_gen = []   # (seconds, tokens) of each TRL generation
    inner = trainer._generate_single_turn

    def timed_generate(*a, **kw):
        t0 = time.perf_counter()
        out = inner(*a, **kw)
        trl_gen.append((time.perf_counter() - t0, sum(len(c) for c in out[0])))
        return out
    trainer._generate_single_turn = timed_generate

    # --- ours: exgrpo.exgrpo_step on its own copy of the same weights
    ours_args = train.get_args(["--student", folder, "--no-probes", "--G", str(args.G), "--rl-questions",
                                str(args.questions), "--max-new-tokens", str(args.max_new_tokens), "--temperature",
                                "1.0", "--beta", str(BETA), "--rl-lr", str(LR), "--rl-micro", str(B), "--agg", "token",
                                "--grad-clip", "1.0", "--adv-norm", "std", "--dtype", "fp32", "--device", "cpu"])
    model, _ = models.load_student(folder, dtype="fp32", device="cpu")
    ref, _ = models.load_student(folder, dtype="fp32", device="cpu")
    ref.eval().requires_grad_(False)
    opt = optim.make_optimizer(model, LR)
    times = {"trl": [], "ours": []}
    ours_gen = []

    class Alternate(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times["trl"].append(time.perf_counter() - self.t0)      # A: TRL's step
            s = state.global_step - 1
            t0 = time.perf_counter()                                 # B: ours, the same questions
            row = exgrpo.exgrpo_step(ours_args, model, ref, tok, opt,
                                     questions[s * args.questions:(s + 1) * args.questions], s)
            times["ours"].append(time.perf_counter() - t0)
            ours_gen.append((row["gen_seconds"], row["student_tokens"]))
            print(f"step {s}: TRL {times['trl'][-1]:.2f}s, ours {times['ours'][-1]:.2f}s", flush=True)

    trainer.add_callback(Alternate())
    trainer.train()

    med = {k: statistics.median(v[1:]) for k, v in times.items()}   # step 0 = warm-up
    gen = {"trl": trl_gen[1:], "ours": ours_gen[1:]}
    tps = {k: sum(n for _, n in v) / sum(t for t, _ in v) for k, v in gen.items()}
    toks = {k: statistics.mean(n for _, n in v) for k, v in gen.items()}
    result = {"load_start": load_start, "load_end": uptime(), "student": args.student, "questions": args.questions,
              "G": args.G, "max_new_tokens": args.max_new_tokens,
              "reps": args.reps, "threads": torch.get_num_threads(), "trl_version": trl.__version__,
              "transformers": transformers.__version__, "torch": torch.__version__,
              "trl_step_s": med["trl"], "ours_step_s": med["ours"], "ratio_ours_over_trl": med["ours"] / med["trl"],
              "trl_gen_tok_s": tps["trl"], "ours_gen_tok_s": tps["ours"],
              "trl_tokens_per_step": toks["trl"], "ours_tokens_per_step": toks["ours"],
              "trl_steps_s": times["trl"], "ours_steps_s": times["ours"]}
    print(f"\n{args.student}: {args.questions} prompts x G = {args.G}, <= {args.max_new_tokens} new tokens, "
          f"{args.reps} timed steps each (TRL {trl.__version__}, {torch.get_num_threads()} threads)")
    print("| | step (median s) | generation tok/s | generated tokens per step |\n|---|---:|---:|---:|")
    for k, name in (("ours", "this project (exgrpo.exgrpo_step)"), ("trl", "TRL GRPOTrainer")):
        print(f"| {name} | {med[k]:.2f} | {tps[k]:.1f} | {toks[k]:.0f} |")
    print(f"\nours / TRL, one step: {med['ours'] / med['trl']:.2f}\nload: {load_start} -> {result['load_end']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

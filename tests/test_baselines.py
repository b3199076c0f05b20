"""baselines.py: each method's loss against a hand computation, and train.py --method wiring.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_baselines.py
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import baselines
import data
import evaluate
import exgrpo
import probes
import models
import sample
import train

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--student", "tiny", "--train-n", "4", "--eval-n", "2", "--eval-max-new-tokens", "6", "--sft-batch", "4",
        "--rl-questions", "1", "--G", "2", "--k", "2", "--max-new-tokens", "6", "--save-every", "1", "--no-zero-shot"]

# -----------------------------------------------------------------------------
# GKD's generalized JSD, P = teacher, Q = student


def _log(*ps):
    return torch.tensor([list(ps)]).log()


@pytest.mark.parametrize("beta, hand", [
    (0.0, 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)),          # KL(P||Q) = 0.5108
    (1.0, 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)),          # KL(Q||P) = 0.3681
    # M = [0.7, 0.3]: 0.5 KL(P||M) + 0.5 KL(Q||M)
    (0.5, 0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3))
     + 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3))),   # 0.1017
])
def test_generalized_jsd_against_a_direct_computation(beta, hand):
    got = baselines.generalized_jsd(_log(0.5, 0.5), _log(0.9, 0.1), beta)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(hand, abs=1e-6)
    assert got.item() == pytest.approx({0.0: 0.510826, 1.0: 0.368064, 0.5: 0.101749}[beta], abs=1e-5)


def test_generalized_jsd_three_tokens_and_its_limits():
    """beta = 0.25 by hand (P teacher, Q student):
        M = 0.25 P + 0.75 Q = [0.05 + 0.45, 0.075 + 0.225, 0.125 + 0.075] = [0.5, 0.3, 0.2]
        KL(P || M) = 0.2 ln(0.2/0.5) + 0.3 ln 1 + 0.5 ln(0.5/0.2) = 0.3 ln 2.5 = 0.274887
        KL(Q || M) = 0.6 ln(0.6/0.5) + 0.3 ln 1 + 0.1 ln(0.1/0.2) = 0.109393 - 0.069315 = 0.040078
        D = 0.25 * 0.274887 + 0.75 * 0.040078 = 0.068722 + 0.030059 = 0.098780
    The flipped convention (beta weighting the student: M = 0.75 P + 0.25 Q = [0.3, 0.3, 0.4])
    gives 0.75 * 0.030479 + 0.25 * 0.277259 = 0.092174, which this test tells apart."""
    p, q = torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.6, 0.3, 0.1])
    m = 0.25 * p + 0.75 * q   # beta = 0.25: [0.5, 0.3, 0.2]
    hand = 0.25 * sum(p * (p / m).log()) + 0.75 * sum(q * (q / m).log())
    got = baselines.generalized_jsd(p.log()[None], q.log()[None], 0.25)
    assert got.item() == pytest.approx(hand.item(), abs=1e-6)
    assert got.item() == pytest.approx(0.098780, abs=1e-5) and got.item() != pytest.approx(0.092174, abs=1e-3)
    # beta = 0.5 is symmetric; identical distributions give 0 for every beta
    assert baselines.generalized_jsd(p.log()[None], q.log()[None], 0.5).item() == pytest.approx(
        baselines.generalized_jsd(q.log()[None], p.log()[None], 0.5).item(), abs=1e-7)
    for beta in (0.0, 0.3, 1.0):
        assert baselines.generalized_jsd(p.log()[None], p.log()[None], beta).item() == pytest.approx(0, abs=1e-7)
    # the endpoints are the limits: D/beta -> forward KL as beta -> 0, D/(1 - beta) -> reverse KL as beta -> 1
    fwd, rev = (baselines.generalized_jsd(p.log()[None], q.log()[None], b).item() for b in (0.0, 1.0))
    assert baselines.generalized_jsd(p.log()[None], q.log()[None], 1e-4).item() / 1e-4 == pytest.approx(fwd, rel=1e-3)
    assert baselines.generalized_jsd(p.log()[None], q.log()[None], 1 - 1e-4).item() / 1e-4 == pytest.approx(rev, rel=1e-3)


def test_gkd_step_is_the_token_mean_jsd_on_the_students_tokens_only(tok, monkeypatch):
    """gkd_step's loss and update against a direct computation: each dialogue scored alone by the
    plain HF forward (no padding), P and Q from softmax of the logits at the student's tokens only
    (not the prompt, not the template glue or a forced end, not the padding), the divergence
    written out from probabilities, the mean over those 7 tokens; one SGD step of lr 1000 moves
    the student by -1000 x that mean's gradient (micro-batches of 3 and 4 tokens: the full-batch mean,
    not a mean of means). The student's head is wider than the tokenizer (as Qwen's): both
    distributions are over the tokenizer's ids. The teacher gets no gradient."""
    import copy
    student = models.tiny_model(tok, seed=0, vocab_size=len(tok) + 64)
    twin, teacher = copy.deepcopy(student), models.tiny_model(tok, seed=1)
    ids = [[5, 6, 7, 100, 101, 102, 2], [8, 9, 200, 201, 2, 10, 11, 300]]
    masks = [[0, 0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 0, 0, 1]]   # prompt 0, student 1, glue / forced end 0
    roll = sample.Dialogues(ids, masks, [["x"], ["y"]], [["q0"], ["q1"]])
    monkeypatch.setattr(exgrpo, "rollout_and_score", lambda *a: (roll, torch.tensor([[1.0], [0.0]])))
    cfg = type("Cfg", (), {"rl_micro": 1, "gkd_beta": 0.25, "grad_clip": 0.0})()
    row = baselines.gkd_step(cfg, student, teacher, tok, torch.optim.SGD(student.parameters(), lr=1e3),
                             [{"question": "q", "answer": "1", "answer_type": "number"}] * 2, 0)
    hand = []
    for x, m in zip(ids, masks):
        with torch.no_grad():
            p_all = teacher(torch.tensor([x])).logits[0, :, :len(tok)].softmax(-1)
        q_all = twin(torch.tensor([x])).logits[0, :, :len(tok)].softmax(-1)
        for t in (t for t in range(1, len(x)) if m[t]):
            p, q = p_all[t - 1].double(), q_all[t - 1].double()
            mix = 0.25 * p + 0.75 * q
            hand.append(0.25 * (p * (p / mix).log()).sum() + 0.75 * (q * (q / mix).log()).sum())
    loss = sum(hand) / 7
    loss.backward()
    assert len(hand) == 7 and row["student_tokens"] == 7
    assert row["gkd"] == pytest.approx(loss.item(), rel=1e-4)
    name = "model.layers.0.mlp.up_proj.weight"
    moved = (student.get_parameter(name) - twin.get_parameter(name)).detach() / 1e3
    grad = twin.get_parameter(name).grad.float()
    assert torch.allclose(moved, -grad, rtol=1e-3, atol=1e-3 * grad.abs().max().item())
    assert row["reward"] == 0.5 and all(p.grad is None for p in teacher.parameters())


def test_token_log_softmax_lines_up_with_the_sampled_tokens(tok, tiny):
    """Its row for each masked position, read at the sampled id, is sample.token_logprobs's value."""
    ids, mask = sample.teacher_forced(tok, [("What is 2 + 3?", "The answer is 5.")])
    batch = sample.pack([[]], [ids], tok.pad_token_id, [mask])
    full = baselines.token_log_softmax(tiny, batch.ids, batch.attn, batch.loss_mask, len(tok))
    want = batch.loss_mask[:, 1:].bool()
    picked = full.gather(-1, batch.ids[:, 1:][want][:, None]).squeeze(-1)
    lp = sample.token_logprobs(tiny, batch.ids, batch.attn, batch.loss_mask)
    assert full.shape == (int(want.sum()), len(tok))
    assert torch.allclose(picked, lp[:, 1:][want], atol=1e-5)

# -----------------------------------------------------------------------------
# multi-task SFT: the weighted sum of per-task NLL means


def _task_loss(logp, mask, tasks, weights, micro=None):
    """train.py's SFT loss with the task scale, micro-batch by micro-batch (full-batch normalizer)."""
    n = int(mask.sum())
    micro = micro or logp.shape[0]
    opt = type("Opt", (), {"fused": False})()
    return sum(exgrpo.aggregate(exgrpo.aux_sft_nll(logp[sl]) * baselines.sft_scale(opt, mask, tasks, weights, sl)[:, None],
                                mask[sl], "token", num_tokens=n).item()
               for sl in (slice(s, s + micro) for s in range(0, logp.shape[0], micro)))


def test_step_by_step_loss_is_label_plus_lambda_rationale():
    """By hand, from the masked -logp of each row:
        label rows 0, 2: 1 + 2 and 3 -> L_label = 6 / 3 tokens = 2
        rationale row 1: 0.5 + 0.5 + 1 -> L_rationale = 2 / 3 tokens = 0.6667
        lambda = 0.5: L = 2 + 0.5 * 0.6667 = 2.3333
    task_scale: N = 6 tokens, N_label = N_rationale = 3 -> s = [1 * 6/3, 0.5 * 6/3, 1 * 6/3] = [2, 1, 2].
    Wrong readings it tells apart: lambda on the label, 0.5 * 2 + 0.6667 = 1.6667; the token mean
    over both tasks, 8/6 = 1.3333."""
    logp = torch.tensor([[0, -1.0, -2.0, 0], [0, -0.5, -0.5, -1.0], [0, -3.0, 0, 0]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1], [0, 1, 0, 0]])
    tasks = torch.tensor([0, 1, 0])   # label, rationale, label
    # L_label = (1 + 2 + 3) / 3 = 2;  L_rationale = (0.5 + 0.5 + 1) / 3 = 2/3;  lambda = 0.5
    assert baselines.task_scale(mask, tasks, [1.0, 0.5]).tolist() == pytest.approx([2.0, 1.0, 2.0])
    assert _task_loss(logp, mask, tasks, [1.0, 0.5]) == pytest.approx(2.3333, abs=1e-4)
    assert _task_loss(logp, mask, tasks, [1.0, 0.5], micro=1) == pytest.approx(2.0 + 0.5 * 2 / 3)  # micro-batch exact
    assert _task_loss(logp, mask, tasks, [1.0, 1.0]) == pytest.approx(2.0 + 2 / 3)
    # not the token mean over both tasks (8/6)
    assert _task_loss(logp, mask, tasks, [1.0, 1.0]) != pytest.approx(8 / 6)


def test_revthink_loss_is_the_sum_of_its_three_nll_means():
    logp = torch.tensor([[0, -1.0, -1.0, 0], [0, -2.0, 0, 0], [0, -0.5, -1.5, -1.0]])
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1]])
    tasks = torch.tensor([0, 1, 2])   # Q -> R_f, Q -> Q_b, Q_b -> R_b
    # 1 + 2 + 1 = 4 (the token mean over all six would be 7/6)
    assert _task_loss(logp, mask, tasks, [1.0, 1.0, 1.0]) == pytest.approx(4.0)
    assert _task_loss(logp, mask, tasks, [1.0, 1.0, 1.0], micro=2) == pytest.approx(4.0)


def test_plain_sft_is_unchanged_by_the_task_scale():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert baselines.task_scale(mask, torch.zeros(2, dtype=torch.long), [1.0]).tolist() == [1.0, 1.0]

# -----------------------------------------------------------------------------
# the methods' training examples


def _args(*extra):
    return train.get_args(TINY + list(extra))


def test_step_by_step_examples_have_two_prefixed_tasks():
    recs = data.load("synth", "train", limit=3, level=1)
    turns, tasks, weights = baselines.step_by_step_examples(_args("--method", "step-by-step", "--rationale-weight", "0.3"),
                                                            recs, train.correct_reasoning)
    assert tasks == [0, 1] * 3 and weights == [1.0, 0.3]
    (u0, a0), = turns[0]
    (u1, a1), = turns[1]
    assert u0 == "[label] " + data.user_message(recs[0]) and a0 == f"The answer is {recs[0]['answer']}."
    assert u1 == "[rationale] " + data.user_message(recs[0]) and a1 == recs[0]["reasoning"]
    prompt = baselines.eval_prompt(_args("--method", "step-by-step"))(recs[0])
    assert prompt[0]["content"].startswith("[label] ")
    assert baselines.eval_prompt(_args())(recs[0]) == data.messages(recs[0])


def test_revthink_examples_on_the_synthetic_world_use_the_oracles_reverse_probe():
    recs = data.load("synth", "train", limit=2, level=1)
    turns, tasks, weights = baselines.revthink_examples(_args("--method", "revthink"), recs, train.correct_reasoning)
    assert tasks == [0, 1, 2] * 2 and weights == [1.0, 1.0, 1.0]
    qb, rb = turns[2][0]
    assert turns[1][0][1] in qb and "How many" in qb and "at the start" in qb   # Q_b: the start from the end
    assert rb.startswith("Work backwards") and rb.endswith(f"The answer is {recs[0]['problem']['start']}.")
    assert turns[1][0][0].startswith(recs[0]["question"]) and baselines.BACKWARD_ASK in turns[1][0][0]


def test_revthink_examples_on_strategyqa_use_revthinks_backward_fields(shared_data):
    recs = data.load("strategyqa", "train", limit=3, data_dir=shared_data)
    turns, tasks, _ = baselines.revthink_examples(_args("--method", "revthink", "--dataset", "strategyqa",
                                                        "--teacher", "none"), recs, train.correct_reasoning)
    assert tasks[:3] == [0, 1, 2]
    assert turns[1][0][1] == recs[0]["backward_question"].strip()                 # Q -> Q_b as the teacher wrote it
    assert "The correct answer is" not in turns[2][0][0]                          # Q_b -> R_b: not told its answer
    assert turns[2][0][1] == recs[0]["backward_reasoning"]


def test_revthinks_backward_pair_drops_its_gold_line_and_a_wrong_backward_reasoning():
    """Q_b -> R_b is asked without "The correct answer is (X)" (its own answer), and an R_b whose
    answer is not X is not imitated (no D_EI probe, no oracle here: no pair at all)."""
    rec = {"question": "Is it so?", "answer": "yes", "answer_type": "yesno",
           "backward_question": "If it is so, then it is _. (A) so (B) not so. The correct answer is **(A) so**. \n",
           "backward_reasoning": "It is so.\n\nThe answer is (A)"}
    assert baselines.backward_pair(rec) == ("If it is so, then it is _. (A) so (B) not so.", "choice", rec["backward_reasoning"])
    assert baselines.backward_pair(dict(rec, backward_reasoning="It is not.\n\nThe answer is (B)")) is None


def test_a_gkd_teacher_whose_head_misses_tokens_is_refused(tmp_path, tok):
    models.tiny_model(tok, vocab_size=len(tok) - 1).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    args = type("Args", (), {"method": "gkd", "gkd_teacher": f"hf:{tmp_path}", "dtype": None, "device": None})()
    with pytest.raises(ValueError, match="cannot score every token"):
        baselines.lm_teacher(args, tok)


def test_revthink_without_backward_questions_is_one_clear_error():
    recs = [{"id": "x", "question": "Is the sky blue?", "answer": "yes", "answer_type": "yesno", "reasoning": "Yes."}]
    with pytest.raises(ValueError, match="no backward question"):
        baselines.revthink_examples(_args("--method", "revthink"), recs, train.correct_reasoning)

# -----------------------------------------------------------------------------
# train.py --method


def test_method_flags_imply_the_right_stages():
    assert _args("--method", "sft").no_rl and not _args("--method", "sft").no_probes
    assert _args("--method", "grpo").no_probes and not _args("--method", "grpo").no_rl
    assert _args("--method", "revthink").no_rl and _args("--method", "step-by-step").no_rl
    a = _args()
    assert a.method == "exgrpo" and not a.no_rl and not a.no_probes


@pytest.mark.parametrize("flags, says", [
    (["--method", "dpo"], "--method: invalid choice: 'dpo'"),
    (["--method", "gkd"], "--method gkd needs a teacher LM"),
    (["--method", "gkd", "--gkd-teacher", "oracle"], "--method gkd needs a teacher LM"),
    (["--method", "gkd", "--gkd-teacher", "hf:/no/such/folder"], "--gkd-teacher /no/such/folder"),
    (["--method", "gkd", "--gkd-beta", "1.5", "--gkd-teacher", "hf:tiny"], "--gkd-beta 1.5: must be in [0, 1]"),
    (["--method", "step-by-step", "--rationale-weight", "-1"], "--rationale-weight -1.0: must be >= 0"),
    (["--method", "revthink", "--no-sft"], "cannot run with --no-sft"),
])
def test_a_bad_method_flag_is_one_line(flags, says, capsys):
    with pytest.raises(SystemExit) as e:
        train.get_args(TINY + flags)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and says in err and len(err.splitlines()) == 1


def test_a_gkd_teacher_with_another_tokenizer_is_refused_before_the_run_folder(tmp_path):
    from models import micro_model, micro_tokenizer
    mtok = micro_tokenizer()
    micro_model(mtok).save_pretrained(tmp_path / "teacher")
    mtok.save_pretrained(tmp_path / "teacher")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "train.py"] + TINY + ["--method", "gkd", "--gkd-teacher", f"hf:{tmp_path / 'teacher'}",
                                                               "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("error: --gkd-teacher") and "tokenizer" in p.stderr
    assert not out.exists()


def test_step_by_step_end_to_end_trains_the_weighted_loss_and_asks_with_the_label(tmp_path, monkeypatch):
    seen = []
    real = evaluate.evaluate

    def spy(model, tok, records, **kw):
        seen.append(kw["prompt"](records[0])[0]["content"])
        return real(model, tok, records, **kw)
    monkeypatch.setattr(evaluate, "evaluate", spy)
    out = tmp_path / "run"
    train.main(TINY + ["--method", "step-by-step", "--rationale-weight", "0.5", "--sft-batch", "64", "--sft-micro", "3",
                       "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    assert [r["stage"] for r in res["table"]] == ["Distilling step-by-step"]
    assert seen and all(s.startswith("[label] ") for s in seen)
    assert not (out / "rl").exists()
    # step 0's logged loss = L_label + 0.5 L_rationale of the untouched student on the whole (one) batch
    step0 = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    turns, tasks, _ = baselines.step_by_step_examples(_args("--rationale-weight", "0.5"), probes.load_dei(out / "dei.jsonl"),
                                                      train.correct_reasoning)
    model, tok = models.load_student("tiny", seed=0)
    nll, count = [0.0, 0.0], [0, 0]
    for t, k in zip(turns, tasks):
        ids, m = sample.teacher_forced(tok, t)
        b = sample.pack([[]], [ids], tok.pad_token_id, [m])
        with torch.no_grad():
            nll[k] -= sample.token_logprobs(model, b.ids, b.attn, b.loss_mask).sum().item()
        count[k] += sum(m)
    means = [nll[k] / count[k] for k in (0, 1)]   # each task's token mean
    assert step0["loss"] == pytest.approx(means[0] + 0.5 * means[1], rel=1e-4)


def test_gkd_end_to_end_trains_the_student_toward_the_teacher(tmp_path, tok):
    teacher = models.tiny_model(tok, seed=1)
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    out = tmp_path / "run"
    train.main(TINY + ["--method", "gkd", "--gkd-teacher", f"hf:{tmp_path / 'teacher'}", "--gkd-beta", "0.5",
                       "--rl-steps", "2", "--out", str(out)])
    res = json.loads((out / "results.json").read_text())
    assert [r["stage"] for r in res["table"]] == ["SFT warm-up", "On-policy distillation (GKD)"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in rows if r["stage"] == "rl"]
    assert [r["step"] for r in rl] == [0, 1] and all(0 < r["gkd"] < math.log(2) for r in rl)  # a JSD is <= ln 2
    from transformers import AutoModelForCausalLM
    sft, final = (AutoModelForCausalLM.from_pretrained(out / s / "final").state_dict() for s in ("sft", "rl"))
    assert not torch.equal(sft["model.layers.0.mlp.up_proj.weight"], final["model.layers.0.mlp.up_proj.weight"])
    assert json.loads((out / "config.json").read_text())["beta"] == 0.0   # no KL to a reference: the teacher anchors

# -----------------------------------------------------------------------------
# bench/methods.py


def test_methods_table_has_the_papers_layout_and_seed_means():
    sys.path.insert(0, str(ROOT))
    from bench import methods
    table = {"ExGRPO": [{"test_id": 0.5, "test_ood": 0.25, "EI-Test": 0.4}, {"test_id": 0.7, "test_ood": 0.25}],
             "SFT": [{"test_id": 0.6, "test_ood": 0.2, "EI-Test": 0.3}]}
    text, summary = methods.render(table)
    lines = text.splitlines()
    assert lines[0].startswith("| method | seeds | test_id | test_ood | EI-Test | paper, Gemma-7B ID mean")
    assert lines[2].startswith("| SFT | 1 | 60.0 | 20.0 | 30.0 | - | - |")                 # the paper's row order
    assert lines[3] == "| ExGRPO | 2 | 60.0 ± 10.0 | 25.0 ± 0.0 | 40.0 | 67.19 | 82.54 |"   # s.e. = sd 0.1414 / sqrt(2) = 0.10
    assert summary["ExGRPO"]["test_id"]["values"] == [0.5, 0.7]


def test_ei_test_cache_is_kept_per_number_of_questions(tmp_path, monkeypatch):
    """--ei-n: a cached EI-Test accuracy is reused only for the same number of questions."""
    sys.path.insert(0, str(ROOT))
    from bench import methods
    run = tmp_path / "run"
    (run / "sft").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"eval_n": 500, "dataset": "synth", "level": 1, "seed": 0,
                                                 "eval_max_new_tokens": 8}))
    (run / "sft" / "ei_test_500.json").write_text(json.dumps({"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}))
    assert methods.ei_test(run, "sft", None) == 0.25            # default n = the run's eval_n: cached
    asked = []
    recs = [{"id": "x", "question": "2 + 2?", "answer_type": "number"},
            {"id": "y", "question": "3 + 3?", "answer_type": "number"}]
    asked_with = []
    monkeypatch.setattr(evaluate, "load_ei_test", lambda *a, limit, **k: asked.append(limit) or recs)
    monkeypatch.setattr(models, "load_student", lambda *a, **k: (None, None))

    def scored(model, tok, records, predictions_path, prompt, **k):   # x right, y wrong
        asked_with.append(prompt(records[0])[0]["content"])
        predictions_path.write_text("".join(json.dumps({"id": r["id"], "correct": r["id"] == "x"}) + "\n"
                                            for r in records))
    monkeypatch.setattr(evaluate, "evaluate", scored)
    assert methods.ei_test(run, "sft", None, n=100) == 0.5       # another n: scored again
    assert asked == [100]
    assert json.loads((run / "sft" / "ei_test_100.json").read_text()) == {"x": 1.0, "y": 0.0}
    assert methods.ei_test(run, "sft", None) == 0.25            # the first n's cache is kept
    assert asked_with == ["2 + 2?\n\n" + probes.format_instruction("number")]   # as training asks a probe
    methods.ei_test(run, "sft", None, label_prefix=True, n=7)   # step-by-step asks with its label prefix
    assert asked_with[-1] == baselines.LABEL_PREFIX + asked_with[0]


def test_methods_table_pairs_each_row_with_sft_on_the_shared_questions(tmp_path):
    """collect: the per-question test_id difference to SFT, seeds averaged first. By hand, SFT
    right on [1, 1, 0, 0], GRPO seeds [1, 1, 1, 0] and [1, 0, 1, 0]: differences [0, -.5, 1, 0],
    mean 0.125, s.d. 0.6292, s.e. 0.6292 / 2 = 0.3146."""
    sys.path.insert(0, str(ROOT))
    from bench import methods
    cfg = json.dumps({"eval_n": 4, "dataset": "synth", "level": 1, "seed": 0, "eval_max_new_tokens": 8})

    def run(path, stage, right, extra_stages=()):
        for st in (stage,) + tuple(extra_stages):
            (path / st).mkdir(parents=True)
            (path / st / "ei_test_4.json").write_text(json.dumps({"p0": 1.0, "p1": 0.0}))
        (path / "config.json").write_text(cfg)
        (path / "results.json").write_text("{}")
        (path / stage / "predictions_test_id.jsonl").write_text(
            "".join(json.dumps({"id": f"q{i}", "correct": bool(c)}) + "\n" for i, c in enumerate(right)))
    run(tmp_path / "sft", "sft", [1, 1, 0, 0], extra_stages=("zero_shot",))
    run(tmp_path / "seed0" / "grpo", "rl", [1, 1, 1, 0])
    run(tmp_path / "seed1" / "grpo", "rl", [1, 0, 1, 0])
    table, paired = methods.collect(tmp_path, [0, 1], "micro")
    assert set(paired) == {"GRPO"}                         # SFT is the reference; zero-shot has no test_id here
    assert paired["GRPO"][0] == pytest.approx(0.125)
    assert paired["GRPO"][1] == pytest.approx(0.31458, abs=1e-5)
    text, summary = methods.render(table, paired)
    assert text.splitlines()[0].count(methods.PAIRED_COLUMN) == 1
    grpo = next(line for line in text.splitlines() if line.startswith("| GRPO |"))
    assert "| 62.5 ± 12.5 |" in grpo and "| +12.5 ± 31.5 |" in grpo   # seeds 0.75, 0.5: s.e. 0.125
    assert summary["GRPO"][methods.PAIRED_COLUMN]["mean"] == pytest.approx(0.125)

"""
Greedy evaluation: the student answers each plain question once, no probes (as in the paper).

    python evaluate.py --student smollm2-135m --datasets all --limit 100          # the zero-shot row
    python evaluate.py --student runs/default/rl/final --name exgrpo --datasets all --limit 100
    python evaluate.py --student tiny --datasets strategyqa,boolq --limit 20 --resume
    python evaluate.py --student smollm2-135m --datasets synth --limit 200        # test_id + test_ood
    python evaluate.py --student smollm2-135m --datasets none --ei-test synth     # EI-Test only
    python evaluate.py --student X --ei-test runs/dei_synth_test_id.jsonl         # probes.py --split test_id
    python evaluate.py --student runs/x/sft/final --datasets synth --limit 500 --samples 8  # + pass@1, pass@8
    python evaluate.py --table runs/eval/results.json runs/other/results.json     # merge tables
    python evaluate.py --plot runs/grpo runs/exgrpo --plot-out curves.png         # training curves

Everything lands under --out (default runs/eval): results.json and results.md (the paper's
layout: one row per --name, default the student; one column per dataset, the ID and OOD means;
the same --name updates its row, so --datasets id, then ood, fill one row; a result is keyed by
(--name, dataset, split): --split train lands in column strategyqa/train, beside the test
score, and a cell already there is replaced only with --overwrite) and
<name>/predictions_<dataset>.jsonl (id, question, gold, generated text, extracted answer,
correct). --resume skips every question already on disk (a crash costs at most one batch).
--ei-test: the paper's EI-Test (below: the explanatory probes of test questions). --samples N: N
answers per question at T=1, pass@1 (mean share correct) and pass@N (one of N correct), the
headroom RL can use. Tables, curves: report.py. Library: evaluate(model, tok, records),
sample_accuracy(..., samples=8).
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

import checks
import data
import models
import probes
import report
import rewards
import runs
import sample
from data import synth
from report import merge_results, plan, read_results, render, slug, write_results

# -----------------------------------------------------------------------------
# defaults

OUT = "runs/eval"          # results.json / results.md / <name>/predictions_*.jsonl
BATCH_SIZE = 16            # prompts per generate() call; smaller batches stop sooner when all rows end
MAX_NEW_TOKENS = 256       # the answer budget; a row cut here is scored on what it wrote
LIMIT = 100                # questions per dataset (0 = the whole split)
SAMPLE_TEMPERATURE = 1.0   # --samples N: N answers per question drawn at this temperature

# -----------------------------------------------------------------------------
# the EI-Test, the paper's: the explanatory probes of *test* questions, each asked on its own, as
# uniform records (gold = the probe's known answer, else the teacher's; only probes that passed
# the EI-consistency filter), scored like any other dataset


def ei_probe_records(dei):
    """D_EI records (probes.py) -> one uniform record per consistent probe with a gold answer.

    Gold: the probe's own answer (every synthetic probe has one), else the teacher's answer,
    which passed the EI-consistency filter. Example: a D_EI record {"id": "synth-test_id-0-0",
    "probes": [{"rule": "reverse", "question": "...", "answer": "7", "kept": True, ...}]}
    -> [{"id": "synth-test_id-0-0/0", "rule": "reverse", "question": "...", "answer": "7", ...}]"""
    out = []
    for i, d in enumerate(dei):
        for j, p in enumerate(d.get("probes") or []):
            gold = p.get("answer") if p.get("answer") is not None else p.get("teacher_answer")
            if not p.get("kept") or gold is None or not str(gold).strip() or not probes.has_gold(p):
                continue
            out.append({"id": f"{d.get('id') or i}/{j}", "rule": p["rule"], "question": p["question"],
                        "answer": str(gold).strip(), "answer_type": p["answer_type"], "reasoning": ""})
    return out


def ei_prompt(record):
    """A probe is put to the student as training puts it (data.user_message: the probe, a blank
    line, the answer format), and as the difficulty filter of probes.py does. Until 2026-12-07 it
    was put with a single newline (probes.format_question, the teacher's prompt): a format the
    student never trained on."""
    return data.messages(record)


def load_ei_test(spec, split="test_id", limit=None, rules=None, seed=0, out=None, level=None):
    """EI-Test probe records: spec = a D_EI JSONL file (probes.py --split test_id ...), or
    'synth' = build the probes of `limit` synthetic test questions of difficulty `level` now, with
    the oracle teacher (exact, a second or two); their D_EI is saved to `out` for inspection."""
    if spec == "synth":
        if split not in synth.TEST_SPLITS:
            raise ValueError(f"--ei-test synth needs a test split ({' or '.join(synth.TEST_SPLITS)}), "
                             f"got {split!r}")
        records = data.load("synth", split, limit=limit, seed=seed, level=level)
        dei, _ = probes.build_dei(records, "oracle", rules=rules, student=None, seed=seed, progress=False)
        if out is not None:
            probes.save_dei(out, dei)
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--ei-test: no D_EI file at {path.resolve()}; write one with "
                                    f"`python probes.py --split test_id --out {spec}` or pass "
                                    f"--ei-test synth")
        try:
            dei = probes.load_dei(path, kept_only=False)  # a test split: no difficulty filter applies
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"--ei-test: {path} is not a D_EI JSONL file written by probes.py "
                             f"({e})") from None
        dei = dei[:limit] if limit else dei
    recs = ei_probe_records(dei)
    if rules is not None:
        keep = set(probes.parse_rules(rules))
        recs = [r for r in recs if r["rule"] in keep]
    if not recs:
        raise ValueError(f"--ei-test {spec}: no consistent probe with a gold answer in {len(dei)} "
                         f"D_EI records")
    return recs

# -----------------------------------------------------------------------------
# scoring


def std_error(acc, n):
    """Standard error of an accuracy measured on n questions: sqrt(p (1 - p) / n)."""
    return math.sqrt(acc * (1 - acc) / n) if n else float("nan")


def _read_predictions(path):
    """{id: row} of a predictions file; a line cut by a crash is ignored (asked again)."""
    done = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row and isinstance(row.get("generated"), str):
            done[row["id"]] = row
    return done


def score_row(record, text, finished=None):
    """One predictions line: the record's question and gold, the student's text, its verdict."""
    q, gold, kind = record["question"], record["answer"], record["answer_type"]
    return {"id": record["id"], **({"rule": record["rule"]} if "rule" in record else {}),
            "question": q, "gold": gold, "answer_type": kind, "generated": text, "finished": finished,
            "extracted": rewards.extract_answer(text, kind, q),
            "correct": rewards.is_correct(text, gold, kind, q)}


def evaluate(model, tok, records, batch_size=BATCH_SIZE, max_new_tokens=MAX_NEW_TOKENS,
             predictions_path=None, desc="eval", resume=False, prompt=data.messages):
    """Greedy answers to uniform `records`; returns {"accuracy", "n", "correct", "stderr",
    "seconds", "generated"} (+ "per_rule" when the records carry a "rule", as EI probes do).

    prompt(record) -> chat messages (default: the question + its answer-format line).
    Prompts are sorted by length so a batch wastes little on padding; each finished batch is
    appended to predictions_path at once, so a crash loses at most one batch. resume=True
    reuses the texts already there (same id and same question) and scores them again;
    resume=False starts the file anew."""
    if not records:
        raise ValueError(f"{desc}: no questions to evaluate")
    done = {}
    if predictions_path is not None:
        predictions_path = Path(predictions_path)
        predictions_path.parent.mkdir(parents=True, exist_ok=True)
        if resume and predictions_path.exists():
            done = _read_predictions(predictions_path)
    by_id = {r["id"]: r for r in records}
    # a stale row (same id, another question: e.g. another seed) is not a prediction of this one
    done = {i: row for i, row in done.items()
            if i not in by_id or row.get("question") == by_id[i]["question"]}
    # scoring is pure and cheap: a resumed row is scored again, so a fix of rewards.py needs no new generation
    done = {i: score_row(by_id[i], row["generated"], row.get("finished")) if i in by_id else row
            for i, row in done.items()}
    if predictions_path is not None:  # rewritten clean: a line cut by a crash would glue onto the next
        runs.write_atomic(predictions_path, "".join(json.dumps(row, ensure_ascii=False) + "\n"
                                                    for row in done.values()))
    todo = [r for r in records if r["id"] not in done]
    prompts = {r["id"]: sample.chat_ids(tok, prompt(r)) for r in todo}
    todo.sort(key=lambda r: len(prompts[r["id"]]))
    t0 = time.time()
    out = open(predictions_path, "a", encoding="utf-8") if predictions_path is not None else None
    try:
        with tqdm(total=len(records), initial=len(records) - len(todo), desc=desc, unit="q",
                  disable=not todo, dynamic_ncols=True) as bar:
            for s in range(0, len(todo), batch_size):
                chunk = todo[s:s + batch_size]
                gen = sample.generate(model, tok, [prompts[r["id"]] for r in chunk], n=1,
                                      max_new_tokens=max_new_tokens, temperature=0, batch_size=batch_size)
                for r, text, finished in zip(chunk, gen.texts, gen.finished):
                    row = done[r["id"]] = score_row(r, text, finished)
                    if out:
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                if out:
                    out.flush()
                bar.update(len(chunk))
    finally:
        if out:
            out.close()
    correct = sum(bool(done[r["id"]]["correct"]) for r in records)
    acc = correct / len(records)
    res = {"accuracy": acc, "n": len(records), "correct": correct, "stderr": std_error(acc, len(records)),
           "seconds": round(time.time() - t0, 1), "generated": len(todo)}
    if any("rule" in r for r in records):  # EI probes: accuracy per rule too
        per_rule = {}
        for r in records:
            per_rule.setdefault(r.get("rule", "?"), []).append(bool(done[r["id"]]["correct"]))
        res["per_rule"] = {k: {"n": len(v), "correct": sum(v), "accuracy": sum(v) / len(v)}
                           for k, v in per_rule.items()}
    return res


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021):
    1 - C(n - c, k) / C(n, k). pass_at_k(4, 1, 2) = 1 - 3/6 = 0.5; pass_at_k(n, c, 1) = c / n."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def sample_accuracy(model, tok, records, samples, batch_size=BATCH_SIZE, max_new_tokens=MAX_NEW_TOKENS,
                    temperature=SAMPLE_TEMPERATURE, prompt=data.messages, desc="samples"):
    """`samples` answers per question drawn at `temperature`; returns {"pass@1", f"pass@{samples}",
    "n", "samples", "counts" (correct samples per question), "seconds"}."""
    if not records or samples < 1:
        raise ValueError(f"{desc}: need questions and samples >= 1")
    per_call = max(1, batch_size // samples)  # questions per generate() call
    counts, t0 = [], time.time()
    for s in tqdm(range(0, len(records), per_call), desc=desc, unit="batch", dynamic_ncols=True):
        chunk = records[s:s + per_call]
        gen = sample.generate(model, tok, [sample.chat_ids(tok, prompt(r)) for r in chunk], n=samples,
                              max_new_tokens=max_new_tokens, temperature=temperature,
                              batch_size=len(chunk) * samples)
        for i, r in enumerate(chunk):  # rows come grouped: [q0 x samples, q1 x samples, ...]
            texts = gen.texts[i * samples:(i + 1) * samples]
            counts.append(sum(bool(rewards.is_correct(t, r["answer"], r["answer_type"], r["question"]))
                              for t in texts))
    n = len(records)
    return {"pass@1": sum(pass_at_k(samples, c, 1) for c in counts) / n,
            f"pass@{samples}": sum(pass_at_k(samples, c, samples) for c in counts) / n,
            "n": n, "samples": samples, "temperature": temperature, "counts": counts,
            "seconds": round(time.time() - t0, 1)}

# -----------------------------------------------------------------------------
# command line


def build_parser():
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("what to evaluate")
    g.add_argument("--student", default="smollm2-135m",
                   help="alias (smollm2-135m, tiny, ...), local folder or hub id")
    g.add_argument("--name", default=None, help="the row in the results table (default: --student)")
    g.add_argument("--datasets", default="all", help="all | id | ood | none | synth | comma-separated names")
    g.add_argument("--split", default=None,
                   help="synth: test_id|test_ood (default both); real: test (default)")
    g.add_argument("--limit", type=int, default=LIMIT, help="questions per dataset (0 = the whole split)")
    g.add_argument("--level", type=int, default=None,
                   help="synth: difficulty level (default data/synth.py's)")
    g.add_argument("--data-dir", default=None,
                   help="real datasets (default: see data/real.py; python -m data.download)")
    g.add_argument("--ei-test", default=None, metavar="D_EI|synth",
                   help="also score the EI probes of test questions: a D_EI JSONL of probes.py, "
                        "or synth (oracle, now)")
    g.add_argument("--rules", default=None, help="EI-Test: only these probe rules (comma-separated)")
    g = ap.add_argument_group("generation")
    g.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    g.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    g.add_argument("--samples", type=int, default=0, metavar="N",
                   help=f"also draw N answers per question at T={SAMPLE_TEMPERATURE}: pass@1 and pass@N")
    g.add_argument("--seed", type=int, default=0, help="torch seed of the --samples draws")
    g.add_argument("--device", default=None)
    g.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: bf16 on GPU, fp32 on CPU)")
    g = ap.add_argument_group("output")
    g.add_argument("--out", default=OUT,
                   help="folder of results.json / results.md / <name>/predictions_*.jsonl")
    g.add_argument("--resume", action="store_true", help="skip questions already scored under --out")
    g.add_argument("--overwrite", action="store_true",
                   help="replace results of this --name already in results.json, and answers an unfinished "
                        "run left (both refused otherwise)")
    g.add_argument("--table", nargs="+", default=None, metavar="RESULTS_JSON",
                   help="merge these results.json files into one table "
                        "(printed; written under an explicit --out)")
    g.add_argument("--plot", nargs="+", default=None, metavar="RUN",
                   help="overlay the training curves of these runs in one PNG and exit "
                        "(needs matplotlib)")
    g.add_argument("--plot-out", default=None,
                   help="the PNG of --plot (default RUN/curves.png of the first run)")
    g.add_argument("--smooth", type=int, default=report.SMOOTH,
                   help="--plot: moving-average window (RL steps)")
    return ap


def check_flags(ap, args, out, name):
    """Every flag, before data is read or the model loads (checks.py): ranges, paths, the student,
    the splits, and no result of this --name overwritten without --overwrite."""
    checks.evaluate_flags(ap, args)
    if args.rules is not None:
        checks.raises(ap, "--rules", args.rules, probes.parse_rules)
    try:
        columns = [col for col, _, _ in plan(args)]
    except ValueError as e:
        checks.fail(ap, str(e))
    try:
        done = read_results(out / "results.json")["rows"].get(name, {})
    except (ValueError, AttributeError, TypeError) as e:  # not JSON (ValueError), or not a results.json
        checks.fail(ap, f"--out {out}: {out / 'results.json'} is not a results file of evaluate.py ({e})")
    clash = [c for c in columns if c in done]
    if clash and not args.overwrite:
        checks.fail(ap, f"--out {out}: {out / 'results.json'} already holds {name}'s {', '.join(clash)}; "
                        f"--overwrite replaces them, --name NAME writes a new row")
    # answers of an attempt that did not finish (a crash): never thrown away without being asked
    left = [c for c in columns if c not in done and _read_predictions_if_any(out / slug(name), c)]
    if left and not (args.resume or args.overwrite):
        checks.fail(ap, f"--out {out}: {out / slug(name)} holds answers of an unfinished run for "
                        f"{', '.join(left)}; --resume keeps them, --overwrite asks every question again")


def _read_predictions_if_any(folder, column):
    path = Path(folder) / f"predictions_{slug(column)}.jsonl"
    return path.is_file() and bool(_read_predictions(path))


def load_jobs(args, preds):
    """[(column, records, prompt)] of the command line, read before the model loads, so a wrong
    path fails in a second, not a minute."""
    jobs = []
    limit = args.limit or None
    for col, ds, split in plan(args):
        if ds == "ei":
            recs = load_ei_test(args.ei_test, split, limit, args.rules, out=preds / f"dei_{split}.jsonl",
                                level=args.level)
            jobs.append((col, recs, ei_prompt))
            continue
        records = data.load(ds, split, limit=limit, data_dir=args.data_dir, level=args.level)
        if not records:
            raise ValueError(f"{ds} {split}: no usable question (every row malformed?)")
        jobs.append((col, records, data.messages))
    return jobs


def main(argv=None):
    ap = checks.one_line(build_parser())   # a bad flag: one line, exit 2
    args = ap.parse_args(argv)
    if args.plot:
        checks.ranges(ap, args, {"smooth": checks.AT_LEAST_1})
        return report.plot_runs(args.plot, args.plot_out, args.smooth)
    if args.table:
        return report.merge_tables(args.table, args.out if args.out != OUT else None)
    name = args.name or args.student
    out = Path(args.out)
    preds = out / slug(name)
    check_flags(ap, args, out, name)
    try:
        jobs = load_jobs(args, preds)
    except (ValueError, FileNotFoundError) as e:   # the data named by --datasets / --data-dir / --ei-test
        checks.fail(ap, str(e))
    try:
        model, tok = models.load_student(args.student, args.dtype, args.device)
    except (ValueError, RuntimeError) as e:
        sys.exit(f"evaluate.py: error: {e}")

    t0 = time.time()
    new = {"rows": {name: {}}, "ei_rules": {}, "details": {name: {}}, "runs": {}}
    for col, records, prompt in jobs:
        res = evaluate(model, tok, records, args.batch_size, args.max_new_tokens,
                       preds / f"predictions_{slug(col)}.jsonl", desc=col, resume=args.resume, prompt=prompt)
        res["max_new_tokens"] = args.max_new_tokens
        new["rows"][name][col], new["details"][name][col] = res["accuracy"], res
        if "per_rule" in res:
            new["ei_rules"][name] = {r: s["accuracy"] for r, s in res["per_rule"].items()}
        print(f"{col:>20}: {100 * res['accuracy']:5.1f}% ± {100 * res['stderr']:.1f} "
              f"({res['correct']}/{res['n']}; {res['generated']} generated in {res['seconds']:.0f}s)",
              flush=True)
        if args.samples:
            import torch
            torch.manual_seed(args.seed)
            got = res["sampled"] = sample_accuracy(model, tok, records, args.samples, args.batch_size,
                                                   args.max_new_tokens, prompt=prompt,
                                                   desc=f"{col} x{args.samples}")
            print(f"{col:>20}: pass@1 {100 * got['pass@1']:5.1f}%, pass@{args.samples} "
                  f"{100 * got[f'pass@{args.samples}']:5.1f}% "
                  f"(T={SAMPLE_TEMPERATURE}, {got['seconds']:.0f}s)", flush=True)
    wall = time.time() - t0
    new["runs"][name] = {"student": args.student, "limit": args.limit, "max_new_tokens": args.max_new_tokens,
                         "batch_size": args.batch_size, "seconds": round(wall, 1),
                         "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    results = merge_results(read_results(out / "results.json"), new)
    write_results(out, results)
    print(render(results))
    print(f"wall time {wall:.0f}s; predictions in {preds}/, tables in {out}/results.md and results.json")


if __name__ == "__main__":
    main()

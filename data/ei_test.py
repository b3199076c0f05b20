"""
EI-Test, the paper's: the explanatory probes of *test* questions, each asked on its own, as
uniform records (gold = the probe's known answer, else the teacher's; only probes that passed
the EI-consistency filter). evaluate.py scores them like any other dataset:

    python evaluate.py --student X --datasets none --ei-test synth              # built now, oracle
    python evaluate.py --student X --ei-test runs/dei_synth_test_id.jsonl       # probes.py --split test_id
"""

import json
from pathlib import Path

import data
from data.synth import TEST_SPLITS as SYNTH_SPLITS

# -----------------------------------------------------------------------------


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
            if not p.get("kept") or gold is None or not str(gold).strip():
                continue
            out.append({"id": f"{d.get('id') or i}/{j}", "rule": p["rule"], "question": p["question"],
                        "answer": str(gold).strip(), "answer_type": p["answer_type"], "reasoning": ""})
    return out


def ei_prompt(record):
    """A probe is put to the student as probes.py puts it in the difficulty filter."""
    import probes
    return [{"role": "user", "content": probes.format_question(record["question"], record["answer_type"])}]


def load_ei_test(spec, split="test_id", limit=None, rules=None, seed=0, out=None, level=None):
    """EI-Test probe records: spec = a D_EI JSONL file (probes.py --split test_id ...), or
    'synth' = build the probes of `limit` synthetic test questions of difficulty `level` now, with
    the oracle teacher (exact, a second or two); their D_EI is saved to `out` for inspection."""
    import probes
    if spec == "synth":
        if split not in SYNTH_SPLITS:
            raise ValueError(f"--ei-test synth needs a test split ({' or '.join(SYNTH_SPLITS)}), got {split!r}")
        records = data.load("synth", split, limit=limit, seed=seed, level=level)
        dei, _ = probes.build_dei(records, "oracle", rules=rules, student=None, seed=seed, progress=False)
        if out is not None:
            probes.save_dei(out, dei)
    else:
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--ei-test: no D_EI file at {path.resolve()}; write one with "
                                    f"`python probes.py --split test_id --out {spec}` or pass --ei-test synth")
        try:
            dei = probes.load_dei(path, kept_only=False)  # a test split: no difficulty filter applies
        except (json.JSONDecodeError, KeyError) as e:
            raise ValueError(f"--ei-test: {path} is not a D_EI JSONL file written by probes.py ({e})") from None
        dei = dei[:limit] if limit else dei
    recs = ei_probe_records(dei)
    if rules is not None:
        keep = set(probes.parse_rules(rules))
        recs = [r for r in recs if r["rule"] in keep]
    if not recs:
        raise ValueError(f"--ei-test {spec}: no consistent probe with a gold answer in {len(dei)} D_EI records")
    return recs

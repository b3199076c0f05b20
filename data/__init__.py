"""
Datasets as the uniform record {id, question, answer, answer_type, reasoning}, and the one
way a question is put to the student.

    from data import load, user_message
    records = load("synth", "train", limit=240)        # the synthetic world (data/synth.py)
    records = load("strategyqa", "test", limit=100)    # a real dataset (data/real.py)
    user_message(records[0])                           # question + the answer-format line
"""
from data import real, synth

DATASETS = ("synth",) + tuple(real.DATASETS)


def load(name, split, limit=None, seed=0, data_dir=None, level=None):
    """Records of a dataset split. synth: split in train|test_id|test_ood, `limit` problems at
    difficulty `level` (None = synth.DEFAULT_LEVEL). `seed` picks the training questions only:
    the synth test splits are fixed by synth.EVAL_SEED (every run is scored on the same
    questions, and the first n of a split are the same for every limit >= n)."""
    if name == "synth":
        n, level = 1000 if limit is None else limit, synth.DEFAULT_LEVEL if level is None else level
        return synth.generate(split, n, seed if split == "train" else synth.EVAL_SEED, level)
    if name not in real.DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return real.load_dataset(name, split, data_dir=data_dir, limit=limit)


def user_message(record):
    """The student's prompt for a question: the question, then the answer format it is checked on."""
    return f"{record['question']}\n\n{real.format_instruction(record['answer_type'])}"


def messages(record):
    return [{"role": "user", "content": user_message(record)}]

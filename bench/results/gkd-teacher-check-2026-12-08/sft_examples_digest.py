"""Digest of the GKD teacher's SFT examples at the code in the current folder (a checkout):
    cd CHECKOUT && python /path/to/sft_examples_digest.py OUT.json"""
import hashlib, json, sys, tempfile, types
from pathlib import Path
sys.path.insert(0, ".")
import train, probes, teachers
argv = ["--student", "micro", "--level", "1", "--train-n", "4000", "--eval-n", "500", "--eval-max-new-tokens", "128",
        "--method", "sft", "--no-zero-shot", "--sft-epochs", "6", "--sft-batch", "32", "--sft-micro", "32",
        "--sft-lr", "2e-3", "--sft-warmup", "20", "--teacher-cache", "none"]
args = train.get_args(argv)
tr, evals = train.load_data(args)
d = Path(tempfile.mkdtemp())
run = types.SimpleNamespace(path=d)
dei = train.build_dei(args, run, tr)
pairs = train.sft_examples(args, tr, dei)
h = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]
print("pairs", len(pairs), "hash", h, "train hash", hashlib.sha256(json.dumps([r["question"] for r in tr]).encode()).hexdigest()[:16])
print(json.dumps(pairs[:3])[:1500])
json.dump(pairs, open(sys.argv[1], "w"))

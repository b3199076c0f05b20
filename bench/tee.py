"""
A benchmark's report, tee'd: every line is printed as it comes (so a long run shows progress) and kept,
so that --out can write the same text as markdown at the end.

    out = Tee()
    out("# bench/rollout.py ...")
    out.save("bench/results/rollout.md")   # creates the folder; does nothing for None
"""

from pathlib import Path


class Tee:
    def __init__(self):
        self.lines = []

    def __call__(self, s):
        print(s, flush=True)
        self.lines.append(s)

    def save(self, path):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text("\n".join(self.lines) + "\n")

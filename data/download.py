"""
Fetch the twelve datasets (and the original-format copies beside them) from their public
sources, pinned to commits, and check every file's SHA-256 against the manifest below.

    python -m data.download                                 # every file, ~47 MB, into ~/.cache/exgrpo/data
    python -m data.download --only gsm8k,strategyqa         # some dataset folders
    python -m data.download --data-dir DIR                  # anywhere (then --data-dir DIR,
                                                            # or EXGRPO_DATA_DIR=DIR)
    python -m data.download --optional                      # also the large optional files (unverified)
    python -m data.download --list                          # the manifest: files, sizes, sources
    EXGRPO_DATA_BASE_URL=http://127.0.0.1:8000 python -m data.download   # a mirror in the same layout

Every file is a byte-for-byte copy of a blob in a public GitHub repository, fetched from
{base}/{owner}/{repo}/{commit}/{path} (base: GitHub's raw host), and lands in the RevThink
layout data/real.py reads (the _FILES table below names each file's source). A file already
present with the right checksum is skipped; a download goes to <name>.part and is renamed only
once its checksum is right; a file that fails (unreachable, truncated, wrong checksum) is tried
RETRIES times, then reported in one line naming the file and the URL, and the others still
complete. Several datasets are non-commercial (TabMWP, ANLI): see README.md, "Real datasets".
"""
import argparse
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections import namedtuple
from pathlib import Path

from data.real import ENV_VAR, USER_DATA_DIR

BASE_URL = "https://raw.githubusercontent.com"  # GitHub's raw host: {base}/{owner}/{repo}/{commit}/{path}
BASE_ENV = "EXGRPO_DATA_BASE_URL"               # a mirror in the same layout (the tests' local server)
RETRIES = 3          # tries per file before it is reported as failed
BACKOFF = 1.0        # seconds before the 2nd try, doubled for each next one
TIMEOUT = 60         # seconds a connection may stay silent
CHUNK = 1 << 16      # bytes read at a time

# -----------------------------------------------------------------------------
# the sources: owner/repo/commit, then per file its path there, size and sha256

# RevThink's data/ tree (first commit)
THINKER = "qasemii/Thinker/1ca5926c7fd2703ff15381549b20319487359079"
# training files cut to question+gold
THINKER_QG = "qasemii/Thinker/68c5684fea15196b92176865f1475c7186a69677"
RECONCILE = "dinobby/ReConcile/902ae913cbb39cfbe0cbd73d0638989bde2d3cad"
ZERO_SHOT_COT = "kojima-takeshi188/zero_shot_cot/5ef330fcdeec0cd26aee27943504f91f8ec1c33c"
COT_TRANSPARENCY = "raybears/cot-transparency/f6874394ba80a439237e4d7581dddc30d40c1830"
MATH_HARNESS = "ZubinGou/math-evaluation-harness/db77bc6bb2a17c90ed2d63e88ebd8c40a82858c5"
GSM8K = "openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c"  # the archived master
PROMPTPG = "lupantech/PromptPG/7cf61b1bec07222fc24b4f5a1410911f77c2d2c9"
BOOLQ_EXPORT = "Ashok080/AOS-100-Agents/18fb83121cf9a4bd0e786fa88963632e3dd4f55a"
ESNLI = "OanaMariaCamburu/e-SNLI/7b585a3f077fdea899780eb0473940522ae44a2e"

# -----------------------------------------------------------------------------
# the manifest: (path under the data dir, source, path in the source, bytes, sha256)

File = namedtuple("File", "path source src size sha256 optional")

_FILES = [
    ("anli/revthink/test_data/ANLI_test.json", THINKER, "data/test_data/ANLI_test.json",
     844847, "8ebe5b7083db14fd04c1ae6439b60765c5cbf178008f935608a09b36cccd1ba0"),
    ("anli/revthink/training_data/ANLI.json", THINKER, "data/training_data/ANLI.json",
     2281889, "1c2a56650bee8e64b6824d2e5dc74c3875ea26b7db30baeffa1762703979cea8"),
    ("arc_challenge/original/ARC-Challenge-Dev.jsonl", COT_TRANSPARENCY,
     "data/arc_challenge/ARC-Challenge-Dev.jsonl",
     126540, "55224364abd2477f66a9a57c5cbef109fb71d83019aa5e37aec0e7ab757746ca"),
    ("arc_challenge/original/ARC-Challenge-Train.jsonl", COT_TRANSPARENCY,
     "data/arc_challenge/ARC-Challenge-Train.jsonl",
     461680, "e02837c53ee86f6d73c259f91c77725c5062ef4531130b7f473a9d9b01118a77"),
    ("arc_challenge/revthink/test_data/ARC_test.json", THINKER, "data/test_data/ARC_test.json",
     358011, "47189ce50e5263b932dc09e7d468a630b47f06d211b473d6088b3db865d960c8"),
    ("arc_challenge/revthink/training_data/ARC.json", THINKER, "data/training_data/ARC.json",
     3596363, "7b2b02ab5c1875aca3a021729a6063789c13496c1515003f58de58ebc22847ff"),
    ("boolq/hf_export/boolq_validation.json", BOOLQ_EXPORT, "boolq_validation.json",
     2198884, "4a01149048ae6cf0d19c8e5af74e420098d8b62390dfd49635c7c5d9fab7970f"),
    ("boolq/revthink/test_data/BoolQ_test.json", THINKER, "data/test_data/BoolQ_test.json",
     270868, "94bd63f3b92aeca5bff0e96aa31d827a15a5f24d7d259e363daf9c066c084eee"),
    ("commonsenseqa/original/dev_rand_split.jsonl", ZERO_SHOT_COT,
     "dataset/CommonsenseQA/dev_rand_split.jsonl",
     471653, "3210497fdaae614ac085d9eb873dd7f4d49b6f965a93adadc803e1229fd8a02a"),
    ("commonsenseqa/original/train_rand_split.jsonl", ZERO_SHOT_COT,
     "dataset/CommonsenseQA/train_rand_split.jsonl",
     3785890, "58ffa3c8472410e24b8c43f423d89c8a003d8284698a6ed7874355dedd09a2fb"),
    ("commonsenseqa/revthink/test_data/CSQA_test.json", THINKER, "data/test_data/CSQA_test.json",
     217478, "d6e9aa7733c44d9675feec8bebcd4ecbfd44fd10e6d781f712fe4ccb188f69f6"),
    ("commonsenseqa/revthink/training_data/CSQA.json", THINKER_QG, "data/training_data/CSQA.json",
     1175296, "bb93fc4caf3f6cdc75b968a7568e54d3d0451f52b6ff3830bfa8cfa23a5080ed"),
    ("date_understanding/bigbench/task.json", ZERO_SHOT_COT, "dataset/Bigbench_Date/task.json",
     119336, "ff716f0e399109146db3a998281c39954907b78268a9b633a95582d63847822f"),
    ("date_understanding/revthink/test_data/Date_test.json", THINKER, "data/test_data/Date_test.json",
     39877, "26ad1ae14e5e35b216ae0250e1b4953e782da0ec33ce239e153ba0ef777a43d6"),
    ("date_understanding/revthink/training_data/Date.json", THINKER, "data/training_data/Date.json",
     326623, "9fbcf6f37cdb3f9fc31da7dd69529146e8d8e81432297114761b234c87d4e018"),
    ("esnli/e-SNLI/LICENSE", ESNLI, "LICENSE",
     1061, "1346b2949ed1927b55d5067206ffa7c62923e97cd1e0149914842c3a177c38f5"),
    ("esnli/e-SNLI/README.md", ESNLI, "README.md",
     3558, "2af33d1b7705dd3e7386fb94e79a206a7594f04d5712c58a3f5f09d4c2c13280"),
    ("esnli/e-SNLI/labels.test", ESNLI, "dataset/eSNLI/labels.test",
     108118, "e25c363e5cc70d5494d6e6555d8053eced22dca836e0f03067530eaad3d4f5f5"),
    ("esnli/e-SNLI/preproc1_expl_1.test", ESNLI, "dataset/eSNLI/preproc1_expl_1.test",
     689342, "44c87e2cb429c3e077c8030e067a9ebb1f7a642b3a0d6fea0996655af431c50b"),
    ("esnli/e-SNLI/preproc1_expl_2.test", ESNLI, "dataset/eSNLI/preproc1_expl_2.test",
     709797, "f8245cc0abc39aff7fe5991c8e334c227be78918e9811dc83015dcae5b42c7fc"),
    ("esnli/e-SNLI/preproc1_expl_3.test", ESNLI, "dataset/eSNLI/preproc1_expl_3.test",
     703658, "6a3b788c3252738d65491a8c3cf4396017db787ce9eee712dd3d3dd53c397e30"),
    ("esnli/e-SNLI/s1.test", ESNLI, "dataset/eSNLI/s1.test",
     738834, "62cb8107dc3c56a4376e5e521842be24e0d61c92c346b94917da2bbf2a47d8be"),
    ("esnli/e-SNLI/s2.test", ESNLI, "dataset/eSNLI/s2.test",
     398274, "1174f3ad30a3c30fc0f9eeffc1b3b6a79e0514026c5a658968a8e2a324b311a1"),
    ("esnli/revthink/test_data/ESNLI_test.json", THINKER, "data/test_data/ESNLI_test.json",
     2855289, "61770a121d81f58ee5fbab9d028530f936e4e5479eda74fbe8d361e030a62cd9"),
    ("gsm8k/LICENSE", GSM8K, "LICENSE",
     1062, "86bbb73e855821d7c401912fd4bf82e34313e6e3b6fd6f909f2b6cc9e209a53b"),
    ("gsm8k/test.jsonl", GSM8K, "grade_school_math/data/test.jsonl",
     749738, "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
    ("gsm8k/test_socratic.jsonl", GSM8K, "grade_school_math/data/test_socratic.jsonl",
     972978, "c96673362fa7a699f4836a9b6474a067448f95fe58064727501ee63ba4c3fdb6"),
    ("gsm8k/train.jsonl", GSM8K, "grade_school_math/data/train.jsonl",
     4166206, "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465"),
    ("gsm8k_reversal/revthink/test_data/GSM8K-Rev_test.json", THINKER, "data/test_data/GSM8K-Rev_test.json",
     234789, "10679eb29a4ed47db8bcf17a2fa500378fc391573cf673f316c0e1609ffc46d1"),
    ("gsm8k_revthink/revthink/test_data/GSM8K_test.json", THINKER, "data/test_data/GSM8K_test.json",
     368651, "62ec596415d24f599ef06248b1a6d503003ad19d208ed659fc7e6f6db92d470e"),
    ("gsm8k_revthink/revthink/training_data/GSM8K.json", THINKER_QG, "data/training_data/GSM8K.json",
     1629831, "7d07d48e3b885df90aa466644e493d750694c6067494fd8ddf615b7548e58b44"),
    ("math/math-evaluation-harness/LICENSE", MATH_HARNESS, "LICENSE",
     1067, "fad7c7435d19a4c635225d0d64915c12175608f44c68eedc62eaa5253bf43b79"),
    ("math/math-evaluation-harness/math/test.jsonl", MATH_HARNESS, "data/math/test.jsonl",
     4101364, "3371949f33dd702d04b43fddd7d53a028de0aaca0e76abb1b875a050297b3aa4"),
    ("math/math-evaluation-harness/math_oai/test.jsonl", MATH_HARNESS, "data/math_oai/test.jsonl",
     446564, "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132"),
    ("math/revthink/training_data/MATH.json", THINKER_QG, "data/training_data/MATH.json",
     684334, "6faa6704b1df7270582168d7256c6f25dbc259c8aad25445a205080c7da00645"),
    ("openbookqa/original/test.jsonl", COT_TRANSPARENCY, "data/openbook_qa/test.jsonl",
     153259, "feb2bd9bfa6161dca4c44ce90e51e8cdada83eb5061407fcdc5005e44aaf2313"),
    ("openbookqa/original/train.jsonl", COT_TRANSPARENCY, "data/openbook_qa/train.jsonl",
     1505097, "388ce25926fa33b573ba6556d7245a6185f612dedf919871b6acb9340c8497a5"),
    ("openbookqa/revthink/test_data/OBQA_test.json", THINKER, "data/test_data/OBQA_test.json",
     90543, "75c31718847aaa3b5efacf801c954a5830f9778b269f0a9c18428010b6a78178"),
    ("strategyqa/bigbench/task.json", ZERO_SHOT_COT, "dataset/StrategyQA/task.json",
     854248, "60af9081fed20102fd8bb1e02dc7d9f12238efcba33e4c1a56b4d61cb6409803"),
    ("strategyqa/reconcile/LICENSE", RECONCILE, "LICENSE",
     1077, "59658548016475c76c481e8deb213b5f9e0303f42ebc2abfd55af9dc6425bf82"),
    ("strategyqa/reconcile/dev.json", RECONCILE, "dataset/SQA/dev.json",
     424195, "0d94842ffb022db8fd5ecd2168b785d5cf67f6faf64f665476bad544a3eb9dde"),
    ("strategyqa/revthink/test_data/SQA_test.json", THINKER, "data/test_data/SQA_test.json",
     66173, "c5706c8b9e4e916a19069cd7b4a92733cf25523c50fddc89c36f7de348960afb"),
    ("strategyqa/revthink/training_data/SQA.json", THINKER, "data/training_data/SQA.json",
     2998992, "527dabfe53dd4874d4c89b34c2cbc114dbaaaedb520e80f4efb96488437d8efb"),
    ("tabmwp/PromptPG/LICENSE.md", PROMPTPG, "LICENSE.md",
     1062, "6ce21fd09fe2552b49e28a15e5af3555f2495be7e79b173f81d878b528074a8b"),
    ("tabmwp/PromptPG/problems_dev1k.json", PROMPTPG, "data/tabmwp/problems_dev1k.json",
     1111726, "e8a3acdb3726c7ab1e2eae0f72665b62c3794d8867d97484db02dd532cf71a4a"),
    ("tabmwp/PromptPG/problems_test1k.json", PROMPTPG, "data/tabmwp/problems_test1k.json",
     1121836, "bf34a84d359c48ba8f401c49f65363858a8a63530921d319b175550e1f352f69"),
    ("tabmwp/PromptPG/splits.json", PROMPTPG, "data/tabmwp/splits.json",
     411685, "b7ca8fc9a7a8ba29d7439bccf1ec729c148e1b693e95798794eb6e64b8bfbd24"),
    ("tabmwp/revthink/test_data/TabMWP_test.json", THINKER, "data/test_data/TabMWP_test.json",
     2829056, "d3cad2ead46e1ae4f384c1156783f100e2bdca8922d382868847e46b8ac54cd8"),
]
# the optional files (>= 4 MiB each); their bytes and checksums are not known here, so a
# download of them is checked only against its Content-Length and its sha256 is printed.
_OPTIONAL = [
    # RevThink's MATH test
    ("math/revthink/test_data/MATH_test.json", THINKER, "data/test_data/MATH_test.json"),
    ("commonsenseqa/revthink/training_data_augmented/CSQA.json", THINKER, "data/training_data/CSQA.json"),
    ("gsm8k_revthink/revthink/training_data_augmented/GSM8K.json", THINKER, "data/training_data/GSM8K.json"),
    ("math/revthink/training_data_augmented/MATH.json", THINKER, "data/training_data/MATH.json"),
    ("tabmwp/revthink/training_data/TabMWP.json", THINKER, "data/training_data/TabMWP.json"),
]
MANIFEST = ([File(p, source, src, size, sha, False) for p, source, src, size, sha in _FILES]
            + [File(p, source, src, None, None, True) for p, source, src in _OPTIONAL])
FOLDERS = sorted({f.path.split("/")[0] for f in MANIFEST})  # what --only takes: the datasets' folders

# -----------------------------------------------------------------------------
# fetching


def url_of(f, base_url=None):
    """Where a file comes from: {base}/{owner}/{repo}/{commit}/{path}."""
    base = (base_url or os.environ.get(BASE_ENV) or BASE_URL).rstrip("/")
    return f"{base}/{f.source}/{f.src}"


def select(only=None, optional=False):
    """The manifest's files in the given dataset folders (all by default); optional ones on request."""
    wanted = (FOLDERS if not only
              else [w.strip() for w in (only.split(",") if isinstance(only, str) else only)])
    unknown = [w for w in wanted if w not in FOLDERS]
    if unknown:
        raise ValueError(f"unknown dataset folder(s) {', '.join(unknown)}; choose among {', '.join(FOLDERS)}")
    return [f for f in MANIFEST if f.path.split("/")[0] in wanted and (optional or not f.optional)]


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _get(url, part, bar):
    """One try: stream url into `part`; return (bytes, sha256). Raises OSError on a short read."""
    h, n = hashlib.sha256(), 0
    with urllib.request.urlopen(url, timeout=TIMEOUT) as resp, open(part, "wb") as out:
        expected = resp.headers.get("Content-Length")
        for block in iter(lambda: resp.read(CHUNK), b""):
            out.write(block)
            h.update(block)
            n += len(block)
            bar.update(len(block))
    if expected is not None and n != int(expected):  # http.client does not raise on a cut connection
        raise OSError(f"truncated: got {n} of {expected} bytes")
    return n, h.hexdigest()


def fetch(f, data_dir, base_url=None, bar=None, retries=RETRIES, backoff=BACKOFF):
    """Make data_dir/f.path the manifest's bytes. Returns ("skipped"|"downloaded", note) or
    ("failed", one-line reason naming the file and its URL); never leaves a partial file under
    the final name (the bytes go to <name>.part, renamed once they check out)."""
    from tqdm import tqdm
    dest, url = Path(data_dir) / f.path, url_of(f, base_url)
    bar = bar if bar is not None else tqdm(disable=True)
    if dest.is_file() and (f.sha256 is None or sha256_of(dest) == f.sha256):
        bar.update(f.size or 0)
        return "skipped", "present" if f.sha256 is None else "present, checksum ok"
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    why = ""
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        start = bar.n
        try:
            n, sha = _get(url, part, bar)
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code} {e.reason}"
            if 400 <= e.code < 500 and e.code != 429:
                break  # not there: asking again will not help
        except (OSError, ValueError) as e:  # URLError, timeouts, resets, truncation
            why = f"unreachable or cut off ({getattr(e, 'reason', e)})"
        else:
            if f.sha256 is None or sha == f.sha256:
                os.replace(part, dest)
                return "downloaded", f"{n} bytes" + ("" if f.sha256 else f", unverified sha256 {sha}")
            why = (f"checksum mismatch (got sha256 {sha[:12]}..., {n} bytes; "
                   f"expected {f.sha256[:12]}..., {f.size} bytes)")
        bar.update(start - bar.n)  # this try's bytes come off the bar
    part.unlink(missing_ok=True)
    return "failed", f"{f.path} from {url}: {why} after {attempt + 1} tries"


def download(data_dir=None, only=None, optional=False, base_url=None, progress=True, retries=RETRIES,
             backoff=BACKOFF):
    """Fetch the selected files into data_dir (default $EXGRPO_DATA_DIR, else ~/.cache/exgrpo/data).
    Returns {"downloaded": [...], "skipped": [...], "failed": [one-line reasons]}."""
    from tqdm import tqdm
    data_dir = Path(data_dir or os.environ.get(ENV_VAR) or USER_DATA_DIR)
    files = select(only, optional)
    result = {"downloaded": [], "skipped": [], "failed": []}
    total = sum(f.size or 0 for f in files)
    with tqdm(total=total, unit="B", unit_scale=True, desc="data.download", disable=not progress) as bar:
        for f in files:
            status, note = fetch(f, data_dir, base_url, bar, retries, backoff)
            result[status].append(note if status == "failed" else f.path)
            if status == "failed":
                tqdm.write(f"data.download: FAILED {note}", file=sys.stderr)
            elif f.sha256 is None:
                tqdm.write(f"data.download: {f.path}: {note}")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None,
                    help=f"where the files go (default ${ENV_VAR}, else {USER_DATA_DIR})")
    ap.add_argument("--only", default=None, help=f"comma-separated dataset folders: {','.join(FOLDERS)}")
    ap.add_argument("--optional", action="store_true",
                    help="also the large optional files (no pinned checksum)")
    ap.add_argument("--base-url", default=None,
                    help=f"a mirror in GitHub's raw layout (default ${BASE_ENV}, else {BASE_URL})")
    ap.add_argument("--list", action="store_true", help="print the manifest and exit")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        files = select(args.only, args.optional or args.list)
    except ValueError as e:
        ap.error(str(e))
    if args.list:
        for f in files:
            size = f"{f.size:>10,d}" if f.size else "  >= 4 MiB"
            print(f"{size}  {f.path:62s} {url_of(f, args.base_url)}" + ("  (optional)" if f.optional else ""))
        print(f"{sum(f.size or 0 for f in files if not f.optional):,d} bytes in "
              f"{sum(not f.optional for f in files)} files"
              f" (+ {sum(f.optional for f in files)} optional)")
        return 0
    data_dir = Path(args.data_dir or os.environ.get(ENV_VAR) or USER_DATA_DIR)
    r = download(data_dir, args.only, args.optional, args.base_url, progress=not args.no_progress)
    print(f"data.download: {len(r['downloaded'])} downloaded, {len(r['skipped'])} already present, "
          f"{len(r['failed'])} failed, in {data_dir}")
    if r["failed"]:
        print("data.download: failed:\n  " + "\n  ".join(r["failed"]), file=sys.stderr)
        return 1
    if data_dir != USER_DATA_DIR:
        print(f"use it with --data-dir {data_dir} or {ENV_VAR}={data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Benchmark fetch_arxiv.py against the raw batched tokenizer, and its peak memory at two corpus sizes.

    python benchmarks/bench_fetch.py [--mb 200] [--mem_mb 100 400] [--workdir /tmp/bench_fetch]

1. Writes a synthetic corpus of --mb MB of text in the hub layout (papers made by the sample-corpus
   generator, ~60 KB each, as in the real dataset).
2. Times the whole `fetch_arxiv.py --dataset_path ... --full_dataset` run (a subprocess: startup, loading,
   tokenizing, writing, hashing), and the raw batched tokenizer alone (encode_batch on the same texts, held
   in memory, same cores), and prints raw_time / pipeline_time (goal >= 0.8).
3. Runs fetch_arxiv.py on corpora of the --mem_mb sizes and prints each run's peak RSS (goal: flat).
"""
import argparse
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data" / "sample_corpus"))


def write_corpus(path, mb, seed=0):
    """~mb MB of text in train/validation/test parquet shards (90/5/5), ~60 KB papers."""
    import datasets
    import make_sample_corpus as msc
    path = Path(path)
    if (path / "DONE").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()
    rng = random.Random(seed)
    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=msc.CATEGORIES)})
    total = mb * 1_000_000
    for split, frac in (("train", 0.9), ("validation", 0.05), ("test", 0.05)):
        target, shard, done = total * frac, 0, 0
        while done < target:
            texts, labels, size = [], [], 0
            while size < 50_000_000 and done + size < target:
                c = rng.randrange(11)
                t = " ".join(msc.make_paper(msc.CATEGORIES[c], rng) for _ in range(12))  # ~60 KB
                texts.append(t)
                labels.append(c)
                size += len(t)
            ds = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=feats)
            ds.to_parquet(str(path / f"{split}-{shard:05d}-of-99999.parquet"))
            shard += 1
            done += size
    (path / "DONE").write_text("ok")
    return path


def run_fetch(corpus, out, num_proc=1):
    """(wall seconds, peak RSS MiB) of a whole fetch_arxiv.py run in a fresh process."""
    cmd = [sys.executable, str(ROOT / "fetch_arxiv.py"), "--dataset_path", str(corpus), "--full_dataset",
           "--output_dir", str(out), "--force", "--num_proc", str(num_proc)]
    t0 = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        sys.exit(r.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over children so far (KiB)
    return wall, peak / 1024, before / 1024


def raw_tokenizer_time(corpus):
    """Seconds for encode_batch over all texts (loaded into memory first, not timed)."""
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer
    import store as st
    texts = []
    for f in sorted(Path(corpus).glob("*.parquet")):
        texts += pq.read_table(f, columns=["text"]).column("text").to_pylist()
    tok = Tokenizer.from_file(str(st.BUNDLED_TOKENIZER))
    n_bytes = sum(len(t) for t in texts)
    t0 = time.time()
    n_tok = 0
    for i in range(0, len(texts), 128):
        n_tok += sum(len(e.ids) for e in tok.encode_batch(texts[i:i + 128], add_special_tokens=False))
    return time.time() - t0, n_tok, n_bytes


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=200)
    p.add_argument("--mem_mb", type=int, nargs="+", default=[100, 400])
    p.add_argument("--workdir", default="/tmp/bench_fetch")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    corpus = write_corpus(work / f"corpus_{args.mb}mb", args.mb)
    raw_s, n_tok, n_bytes = raw_tokenizer_time(corpus)
    pipe_s, peak, _ = run_fetch(corpus, work / "store_throughput")
    print(f"corpus {n_bytes / 1e6:.0f} MB of text, {n_tok:,} tokens")
    print(f"raw tokenizer (encode_batch, in memory): {raw_s:.1f} s = {n_tok / raw_s:,.0f} tok/s")
    print(f"fetch_arxiv.py whole run:               {pipe_s:.1f} s = {n_tok / pipe_s:,.0f} tok/s")
    print(f"throughput ratio pipeline/raw = {raw_s / pipe_s:.2f} (goal >= 0.80)")
    for mb in args.mem_mb:
        c = write_corpus(work / f"corpus_{mb}mb", mb)
        # a fresh child per size: ru_maxrss of RUSAGE_CHILDREN is a running max, so measure in a wrapper
        code = (f"import resource,subprocess,sys; subprocess.run([sys.executable,{str(ROOT / 'fetch_arxiv.py')!r},"
                f"'--dataset_path',{str(c)!r},'--full_dataset','--output_dir',{str(work / f'store_{mb}')!r},'--force'],"
                "capture_output=True,check=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        t0 = time.time()
        kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        print(f"peak RSS at {mb} MB of text: {kib / 1024:,.0f} MiB ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()

"""The token store fetch_arxiv.py writes: offsets, lengths, splits, manifest, round trip through the
tokenizer, determinism across --num_proc, reuse/--force, and integrity checks on load."""
import hashlib
import json
import unicodedata

import numpy as np
import pytest

import fetch_arxiv
import store as st
from conftest import write_hub_copy

# Edge cases: an empty text, a text that NFC changes (decomposed e + combining acute), one shorter than a
# window, non-ASCII math, leading/trailing whitespace that must not be stripped.
EDGE_TEXTS = ["", "Cafe\u0301 au lait and re\u0301sume\u0301.", "x", "  ∑_{i=1}^n i² = n(n+1)/2  ",
              "Hello world " * 60]


def _hub(tmp_path, shards=2):
    splits = {}
    for k, s in enumerate(st.SPLITS):
        rows = [(EDGE_TEXTS[(i + k) % len(EDGE_TEXTS)] + f" paper {s} {i}" * (i % 3), i % 11)
                for i in range(14)]
        rows[0] = ("", 4)
        splits[s] = rows
    return write_hub_copy(tmp_path / "hub", splits, shards=shards), splits


def _build(path, out, *extra):
    return fetch_arxiv.main(["--dataset_path", str(path), "--full_dataset", "--output_dir", str(out), *extra])


def test_store_round_trip(tmp_path):
    hub, splits = _hub(tmp_path)
    out = tmp_path / "store"
    meta = _build(hub, out)
    tok, _ = fetch_arxiv.load_tokenizer(None)
    s = st.Store(out, verify=True)
    index = [json.loads(l) for l in (out / "index.jsonl").read_text().splitlines()]
    texts = [t for sp in st.SPLITS for t, _ in splits[sp]]
    labels = [l for sp in st.SPLITS for _, l in splits[sp]]
    assert len(index) == len(texts) == s.n_papers
    pos = 0
    for i, (row, text, label) in enumerate(zip(index, texts, labels)):
        assert row["paper_id"] == i and row["label"] == label and row["category"] == st.CATEGORIES[label]
        assert row["offset"] == pos  # papers are contiguous, one separator after each
        span = s.paper_tokens(i)
        assert span.tolist() == tok(text, add_special_tokens=False)["input_ids"]
        assert row["length"] == len(span) and row["n_bytes"] == len(text.encode("utf-8"))
        assert tok.decode(span.tolist()) == unicodedata.normalize("NFC", text)
        assert s.tokens[pos + row["length"]] == st.EOS_ID  # separator belongs to no span
        pos += row["length"] + 1
    assert pos == len(s.tokens)
    assert index[0]["length"] == 0  # empty text kept
    assert [r["split"] for r in index] == ["train"] * 14 + ["validation"] * 14 + ["test"] * 14
    assert json.loads((out / "splits.json").read_text()) == {
        "train": list(range(14)), "validation": list(range(14, 28)), "test": list(range(28, 42))}
    # manifest: counts and hashes agree with the files
    for sp in st.SPLITS:
        rows = [r for r in index if r["split"] == sp]
        assert meta["counts"][sp] == {"papers": len(rows), "tokens": sum(r["length"] for r in rows),
                                      "bytes": sum(r["n_bytes"] for r in rows)}
        for c in st.CATEGORIES:
            cr = [r for r in rows if r["category"] == c]
            assert meta["category_counts"][c][sp]["tokens"] == sum(r["length"] for r in cr)
    hashes = {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in st.DATA_FILES}
    for n in st.DATA_FILES:
        assert meta["files"][n] == {"bytes": (out / n).stat().st_size, "sha256": hashes[n]}
    expect_id = hashlib.sha256("".join(hashes[n] + "\n" for n in st.DATA_FILES).encode()).hexdigest()
    assert meta["store_id"] == expect_id
    assert meta["format_version"] == 1 and meta["dtype"] == "uint16" and meta["categories"] == st.CATEGORIES
    assert meta["tokenizer"]["sha256"] == st.BUNDLED_TOKENIZER_SHA256
    assert meta["tokenizer"]["vocab_size"] == 50277 and meta["tokenizer"]["eos_token_id"] == 0
    assert meta["max_examples_per_split"] is None
    assert meta["dataset"]["path"] == str(hub.resolve())
    raw = np.fromfile(out / "tokens.bin", dtype="<u2")
    assert np.array_equal(raw, np.asarray(s.tokens))
    # no temporary directories left beside the store
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tokens_identical_whatever_num_proc(tmp_path, monkeypatch):
    hub, _ = _hub(tmp_path)
    monkeypatch.setattr(fetch_arxiv, "TEXT_BATCH_BYTES", 200)  # many small batches across workers
    a = _build(hub, tmp_path / "a", "--num_proc", "1")
    b = _build(hub, tmp_path / "b", "--num_proc", "2")
    assert a["store_id"] == b["store_id"]
    assert (tmp_path / "a" / "tokens.bin").read_bytes() == (tmp_path / "b" / "tokens.bin").read_bytes()


def test_dev_run_default_and_reuse_and_force(tmp_path, capsys):
    out = tmp_path / "dev"
    args = ["--dataset_path", str(st.SAMPLE_CORPUS), "--output_dir", str(out), "--max_examples_per_split", "12"]
    meta = fetch_arxiv.main(args)
    assert meta["max_examples_per_split"] == 12
    for sp in st.SPLITS:
        assert meta["counts"][sp]["papers"] == 12
        assert all(meta["category_counts"][c][sp]["papers"] >= 1 for c in st.CATEGORIES)
    mtime = (out / "meta.json").stat().st_mtime_ns
    capsys.readouterr()
    again = fetch_arxiv.main(args)
    assert "reusing the complete store" in capsys.readouterr().out
    assert (out / "meta.json").stat().st_mtime_ns == mtime and again["store_id"] == meta["store_id"]
    forced = fetch_arxiv.main(args + ["--force"])
    assert (out / "meta.json").stat().st_mtime_ns != mtime and forced["store_id"] == meta["store_id"]
    # another variant in the same directory is refused, not silently replaced
    with pytest.raises(SystemExit) as e:
        fetch_arxiv.main(args[:-1] + ["20"])
    assert e.value.code != 0
    assert "another variant" in capsys.readouterr().err


def test_failed_build_leaves_previous_store(tmp_path, capsys):
    hub, splits = _hub(tmp_path)
    out = tmp_path / "store"
    meta = _build(hub, out)
    bad = dict(splits)
    bad["test"] = splits["test"][:5] + [("bad", 11)]  # a label outside 0..10, late in the build
    bad_hub = write_hub_copy(tmp_path / "bad", bad, label_feature="int")
    with pytest.raises(SystemExit) as e:
        _build(bad_hub, out, "--force")
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "label 11" in err and "test row 5" in err
    assert st.Store(out, verify=True).store_id == meta["store_id"]  # previous store intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_load_checks_manifest(tmp_path):
    hub, _ = _hub(tmp_path)
    out = tmp_path / "store"
    _build(hub, out)
    st.Store(out, verify=True)
    data = bytearray((out / "tokens.bin").read_bytes())
    data[10] ^= 0xFF  # same size, different bytes: only the sha256 check sees it
    (out / "tokens.bin").write_bytes(bytes(data))
    st.Store(out)  # sizes still match
    with pytest.raises(st.StoreError, match="tokens.bin: sha256"):
        st.Store(out, verify=True)
    (out / "index.jsonl").write_bytes((out / "index.jsonl").read_bytes() + b"\n")
    with pytest.raises(st.StoreError, match="index.jsonl: .* bytes but meta.json says"):
        st.Store(out)
    (out / "meta.json").unlink()
    with pytest.raises(st.StoreError, match="no meta.json"):
        st.Store(out)
    with pytest.raises(st.StoreError, match="no such store directory"):
        st.Store(tmp_path / "nope")


def test_sample_store_summary(sample_store, outputs):
    s = st.Store(sample_store, verify=True)
    write_inspection(s, outputs / "inspect_processed_data.txt")
    assert s.categories == st.CATEGORIES
    for sp in st.SPLITS:
        assert set(s.label[s.papers(sp)].tolist()) == set(range(11))
    assert all(s.length[s.papers("train")] > 101)  # every sample paper is longer than one window
    assert s.papers("test", ["cs.IT"]).size == 2
    with pytest.raises(st.StoreError, match="valid names: math.AC cs.CV"):
        s.papers("test", ["cs.XX"])


def write_inspection(s, path):
    """The store for a human to read: manifest, per-split papers and tokens per category, the first index
    rows (offsets, lengths) and the start of one decoded paper per split."""
    from random_window_dataset import bundled_decoder
    decode = bundled_decoder(s)
    L = [f"store {s.dir}", f"store_id {s.store_id}", f"papers {s.n_papers}, tokens {len(s.tokens):,}",
         f"tokenizer {json.dumps(s.meta.get('tokenizer'))}", f"variant {s.meta.get('variant_id')}", ""]
    for sp in st.SPLITS:
        per = [(c, s.papers(sp, [c])) for c in s.categories]
        L.append(f"{sp}: " + ", ".join(f"{c} {len(ids)} papers / {int(s.length[ids].sum()):,} tokens" for c, ids in per))
    L += ["", "paper_id offset length label split n_bytes"]
    L += [f"{i} {s.offset[i]} {s.length[i]} {s.categories[s.label[i]]} {st.SPLITS[s.split_code[i]]} {s.n_bytes[i]}"
          for i in range(min(5, s.n_papers))]
    for sp in st.SPLITS:
        pid = int(s.papers(sp)[0])
        text = decode(s.paper_tokens(pid)) if decode else str(s.paper_tokens(pid)[:40].tolist())
        L += ["", f"{sp} paper {pid} ({s.categories[s.label[pid]]}): {text[:300]!r}"]
    path.write_text("\n".join(L) + "\n")

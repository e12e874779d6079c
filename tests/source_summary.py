"""Readable summaries of a loaded source for tests/test_inspect_raw_data.py (kept apart from the tests so
that a fresh interpreter can import it without conftest, which switches the Hub off)."""
import collections

import store as st


def summary(ds, names):
    """{split: {"rows", "features", "label_counts": {name: n}, "first_text"}} of a loaded source."""
    out = {}
    for s in st.SPLITS:
        rows = list(ds[s])
        counts = collections.Counter(names[r["label"]] for r in rows)
        out[s] = {"rows": len(rows), "features": {k: str(v) for k, v in ds[s].features.items()},
                  "label_counts": {n: counts.get(n, 0) for n in names}, "first_text": rows[0]["text"][:200]}
    return out


def write_summary(path, where, names, summ):
    L = [f"source: {where}", f"label names: {' '.join(names)}"]
    for s, v in summ.items():
        L += ["", f"{s}: {v['rows']} rows; features {v['features']}",
              "  " + " ".join(f"{n}={c}" for n, c in v["label_counts"].items()), f"  first text: {v['first_text']!r}"]
    path.write_text("\n".join(L) + "\n")


# run in a fresh interpreter with HF_ENDPOINT set (argv[1]: the repository root)
HUB_PROBE = """
import argparse, json, sys
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/tests")
import fetch_arxiv
from source_summary import summary
a = argparse.Namespace(dataset_path=None, dataset_name="ccdv/arxiv-classification", dataset_config="no_ref",
                       dataset_revision=None, max_examples_per_split=None)
ds, names, rev = fetch_arxiv.load_source(a)
print(json.dumps({"names": names, "revision": rev, "splits": summary(ds, names)}))
"""

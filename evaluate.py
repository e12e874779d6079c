"""
Exact per-category loss, perplexity and bits per byte of a causal LM on one split of a token store.

    python evaluate.py --model_dir runs/<run>/final --data_dir preprocessed_arxiv [--split test]

The tiling, exactly: for a paper of n >= 2 tokens, windows start at s = 0, 100, 200, ... while s < n - 1;
window tokens[s : min(s + 101, n)] predicts tokens s+1 .. min(s + 100, n - 1) from the tokens before them
inside the window. Every token but a paper's first is predicted exactly once, with at most 100 tokens of
context; papers with n < 2 predict nothing and are not counted. Windows are packed across papers into
fixed-shape batches (a short last window is padded at the end, which causal attention never sees), and
all sums are float64, so the result does not depend on the batch size beyond float rounding.
"""
import hashlib
import json
from pathlib import Path

import torch

import store as st
from model import DeviceError, evaluate_model, load_model, resolve_device, setup_device


def run_config_of(model_dir):
    """run_config.json of the run that made model_dir (in it or its parent), or {} when there is none.
    An unreadable one is an error (StoreError), never an absence: a tagged model evaluated untagged, or
    with the wrong training categories, would give wrong numbers silently."""
    for d in (Path(model_dir), Path(model_dir).parent):
        p = d / "run_config.json"
        if p.is_file():
            try:
                cfg = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise st.StoreError(f"{p}: unreadable run_config.json ({e}); it says how the model was trained "
                                    "(categories, tagging): restore it or remove it to evaluate untagged") from None
            if not isinstance(cfg, dict):
                raise st.StoreError(f"{p}: run_config.json is not a JSON object")
            return cfg
    return {}


def tag_base_of(run_config, store):
    """First category-tag token id of a tagged run (tag = base + label), or None for untagged runs."""
    if not run_config.get("tag_categories"):
        return None
    return int(run_config.get("tag_token_base", store.tag_token_base))


def default_output(model_dir, args, exclude):
    """eval_<split>.json for the plain evaluation; any other computation gets a name of its own, so that it
    never overwrites another's file: _bfloat16, _sub-<hash of the categories / paper cap>, _excl-<hash of the
    excluded paper ids>."""
    short = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]
    name = f"eval_{args.split}"
    if args.dtype != "float32":
        name += f"_{args.dtype}"
    if args.categories != ["all"] or args.max_papers_per_category is not None:
        name += f"_sub-{short([sorted(args.categories), args.max_papers_per_category])}"
    if exclude is not None:
        name += f"_excl-{short(sorted(set(exclude)))}"
    return Path(model_dir) / f"{name}.json"


def print_table(res):
    print(f"\n{'category':10s} {'in_train':>8s} {'papers':>7s} {'tokens':>12s} {'loss':>8s} {'ppl':>10s} {'bpb':>7s}")
    for c, r in res["per_category"].items():
        it = {True: "yes", False: "no", None: "-"}[r["in_training"]]
        if r["loss"] is None:
            print(f"{c:10s} {it:>8s} {r['n_papers']:7d} {'-':>12s}")
            continue
        print(f"{c:10s} {it:>8s} {r['n_papers']:7,d} {r['n_tokens']:12,d} {r['loss']:8.4f} "
              f"{r['perplexity']:10.2f} {r['bits_per_byte']:7.4f}")
    o = res["overall"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"
    print(f"micro loss {fmt(o['micro_loss'])} (ppl {o['micro_perplexity']:.2f}), macro {fmt(o['macro_loss'])}, "
          f"in-training macro {fmt(o['in_training_macro_loss'])}, held-out macro {fmt(o['held_out_macro_loss'])}; "
          f"{o['n_tokens']:,} tokens at {res['tokens_per_s']:,.0f} tok/s")


def main(argv=None):
    p = st.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=st.HelpFormatter,
                          allow_abbrev=False)
    p.add_argument("--model_dir", required=True, help="a save_pretrained causal LM directory")
    p.add_argument("--data_dir", default="preprocessed_arxiv", help="token store written by fetch_arxiv.py")
    p.add_argument("--split", default="test", choices=st.SPLITS, help="split to evaluate")
    p.add_argument("--categories", nargs="+", default=["all"], help="names, or all (default)")
    p.add_argument("--batch_size", type=st.number(int, 1), default=64, help="windows per forward pass")
    p.add_argument("--max_papers_per_category", type=st.number(int, 1), default=None, help="first M papers per category")
    p.add_argument("--output", default=None,
                   help="default: eval_<split>.json in --model_dir; with --dtype bfloat16, --categories, "
                        "--max_papers_per_category or --exclude_papers a name that says so (and hashes the lists)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="fp32 and bf16 results are never mixed in one comparison")
    p.add_argument("--exclude_papers", default=None,
                   help="JSON file: a list of paper ids to leave out, or baselines.py's output (its near-duplicate "
                        "test papers are left out)")
    p.add_argument("--allow_other_store", action="store_true",
                   help="evaluate a model whose run_config.json names another store_id than --data_dir's")
    args = p.parse_args(argv)  # numeric flags are range-checked here (st.number)
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").is_file():
        st.die(f"--model_dir {model_dir}: no config.json, not a save_pretrained model directory")
    try:
        device = setup_device(resolve_device(args.device))  # the rule of train.py; TF32 for fp32 on CUDA
    except DeviceError as e:
        st.die(str(e))
    try:
        store = st.Store(args.data_dir)
        run_cfg = run_config_of(model_dir)  # training categories and tagging follow the run
    except st.StoreError as e:
        st.die(str(e))
    trained_on = run_cfg.get("store_id")
    if trained_on and trained_on != store.store_id and not args.allow_other_store:
        st.die(f"--model_dir {model_dir} was trained on store {trained_on}, --data_dir {args.data_dir} is store "
               f"{store.store_id}; the results would not be comparable with its run's (--allow_other_store to "
               "evaluate it anyway)")
    try:
        model = load_model(model_dir)
    except Exception as e:
        st.die(f"--model_dir {model_dir}: cannot load the model ({type(e).__name__}: {str(e).splitlines()[0]})")
    exclude = None
    if args.exclude_papers:
        try:
            ex = json.loads(Path(args.exclude_papers).read_text())
        except (OSError, json.JSONDecodeError) as e:
            st.die(f"--exclude_papers {args.exclude_papers}: not a readable JSON file ({e})")
        exclude = ex["overall"]["near_duplicate_test_papers"] if isinstance(ex, dict) else ex
        if not all(isinstance(i, int) for i in exclude):
            st.die(f"--exclude_papers {args.exclude_papers}: expected a list of integer paper ids")
    cats = None if args.categories == ["all"] else args.categories
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    output = Path(args.output) if args.output else default_output(model_dir, args, exclude)
    try:
        res = evaluate_model(model, store, args.split, cats, args.batch_size, device, dtype,
                             run_cfg.get("categories"), args.max_papers_per_category, output,
                             model_dir, vars(args), tag_base=tag_base_of(run_cfg, store), exclude_papers=exclude)
    except st.StoreError as e:
        st.die(str(e))
    print_table(res)
    print(f"wrote {output}")
    return res


if __name__ == "__main__":
    st.cli(main)

"""The paths a GPU takes, run on a CPU with torch.cuda.* faked where they must be: device resolution
(--device cuda = cuda:<LOCAL_RANK>, torchrun's rule), evaluation honouring its dtype (a dispatch-mode spy
on every matmul), the MFU peak table, sweep's GPU placement / threads / memory check, and the input
pipeline's prefetch."""
import json
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import evaluate
import model as mdl
import runlife
import store as st
import train
from conftest import one_line_error, TINY_CONFIG

CATS = ["math.AC", "cs.CV", "cs.AI"]


class Stop(Exception):
    """Raised by a faked CUDA call once the path under test has reached it."""


def fake_cuda(monkeypatch, n=1, name="NVIDIA H100 80GB HBM3", free=80e9, total=80e9, set_device=None):
    """torch.cuda as a node with n GPUs would show it (nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (int(free), int(total)))
    if set_device is not None:
        monkeypatch.setattr(torch.cuda, "set_device", set_device)


# ----------------------------------------------------------------------------------------------------
# 1. devices

def test_resolve_device_rule(monkeypatch):
    fake_cuda(monkeypatch, n=4)
    for world, local in ((None, None), ("4", "2"), ("4", "0"), ("4", "3")):
        for k, v in (("WORLD_SIZE", world), ("LOCAL_RANK", local)):
            if v is None:
                monkeypatch.delenv(k, raising=False)
            else:
                monkeypatch.setenv(k, v)
        lr = int(local or 0)
        assert mdl.resolve_device("cuda") == torch.device(f"cuda:{lr}")
        assert mdl.resolve_device("auto") == torch.device(f"cuda:{lr}")
        assert mdl.resolve_device("cpu") == torch.device("cpu")
        for n in range(4):
            if world is None or n == lr:  # single process: any index; torchrun: only the local rank's
                assert mdl.resolve_device(f"cuda:{n}") == torch.device(f"cuda:{n}")
            else:
                with pytest.raises(mdl.DeviceError, match="LOCAL_RANK"):
                    mdl.resolve_device(f"cuda:{n}")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("LOCAL_RANK")
    for bad in ("gpu", "cuda:9", "mps"):
        with pytest.raises(mdl.DeviceError, match=f"--device {bad}"):
            mdl.resolve_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mdl.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(mdl.DeviceError, match="no CUDA device"):
        mdl.resolve_device("cuda")


def test_train_and_evaluate_reach_set_device_with_an_index(monkeypatch, synthetic_store, tmp_path, capsys):
    """train.py --device cuda (and evaluate.py) with CUDA faked: torch.cuda.set_device gets cuda:0 (the
    real one refuses a device without an index); under torchrun rank 1 gets cuda:1 and an explicit other
    index is refused in one line; TF32 is allowed for fp32 matmuls."""
    seen = []

    def set_device(d):
        seen.append(torch.device(d))
        raise Stop

    fake_cuda(monkeypatch, n=2, set_device=set_device)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    args = ["--data_dir", str(synthetic_store), "--categories", *CATS, "--model_config", str(TINY_CONFIG),
            "--output_dir", str(tmp_path), "--device", "cuda"]
    with pytest.raises(Stop):
        train.main(args)
    assert seen == [torch.device("cuda:0")]
    model_dir = tmp_path / "m"
    mdl.build_model(mdl.model_config(str(TINY_CONFIG), 64)[0], 0).save_pretrained(model_dir)
    with pytest.raises(Stop):
        evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(synthetic_store), "--device", "cuda"])
    assert seen[-1] == torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: seen.append(torch.device(d)))
    mdl.setup_device(torch.device("cuda:1"))
    assert torch.backends.cuda.matmul.allow_tf32 and seen[-1] == torch.device("cuda:1")
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    line = one_line_error(train.main, args[:-1] + ["cuda:0"], capsys)
    assert "--device cuda:0" in line and "LOCAL_RANK" in line
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    with pytest.raises(Stop):
        train.main(args)
    assert seen[-1] == torch.device("cuda:1")


# ----------------------------------------------------------------------------------------------------
# 2. evaluation honours its dtype

MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_scaled_dot_product_flash_attention_for_cpu",
           "_scaled_dot_product_attention_math", "scaled_dot_product_attention"}


class MatmulSpy(TorchDispatchMode):
    """Records (op, input dtypes, output shape) of every matrix multiplication that reaches the kernels,
    from outside the code under test. Active only while `on` (set by the wrapped phase)."""

    def __init__(self):
        super().__init__()
        self.calls, self.phase = [], None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if self.phase is not None and name in MATMULS:
            dts = tuple(a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point())
            shape = tuple((out[0] if isinstance(out, tuple) else out).shape)
            self.calls.append((self.phase, name, dts, shape))
        return out


def spy_phase(spy, phase, fn):
    def wrapped(*a, **k):
        spy.phase = phase
        try:
            return fn(*a, **k)
        finally:
            spy.phase = None
    return wrapped


@pytest.fixture(scope="module")
def vocab_config(tmp_path_factory):
    """A tiny model whose vocabulary (72) differs from every other width, so the head's matmuls are the
    ones with 72 outputs."""
    p = tmp_path_factory.mktemp("cfg") / "v72.json"
    p.write_text(json.dumps({"vocab_size": 72, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                             "intermediate_size": 48, "max_position_embeddings": 128, "rotary_pct": 0.25}))
    return p


def _check_bf16(calls, phase, vocab=72):
    got = [c for c in calls if c[0] == phase]
    head = [c for c in got if c[3][-1] == vocab]
    assert head, f"{phase}: no vocabulary-wide matmul seen"
    assert {c[1] for c in got} & {"linear", "mm", "addmm", "matmul"}, got
    not_bf16 = [c for c in got if any(d != torch.bfloat16 for d in c[2])]
    assert not not_bf16, f"{phase}: matmuls not in bf16: {not_bf16[:5]}"


def test_evaluate_py_bf16_runs_every_matmul_in_bf16(synthetic_store, vocab_config, tmp_path, monkeypatch):
    model_dir = tmp_path / "m"
    mdl.build_model(mdl.model_config(str(vocab_config), 64)[0], 0).save_pretrained(model_dir)
    spy = MatmulSpy()
    monkeypatch.setattr(evaluate, "evaluate_model", spy_phase(spy, "evaluate.py", evaluate.evaluate_model))
    with spy:
        evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(synthetic_store), "--device", "cpu",
                       "--dtype", "bfloat16", "--max_papers_per_category", "1", "--output", str(tmp_path / "e.json")])
    _check_bf16(spy.calls, "evaluate.py")
    # fp32 stays fp32 (the same path, the other dtype)
    spy = MatmulSpy()
    monkeypatch.setattr(evaluate, "evaluate_model", spy_phase(spy, "fp32", mdl.evaluate_model))
    with spy:
        evaluate.main(["--model_dir", str(model_dir), "--data_dir", str(synthetic_store), "--device", "cpu",
                       "--max_papers_per_category", "1", "--output", str(tmp_path / "f.json")])
    assert spy.calls and all(d == torch.float32 for c in spy.calls for d in c[2])


def test_train_py_validation_and_test_evaluation_are_bf16(synthetic_store, vocab_config, tmp_path, monkeypatch):
    spy = MatmulSpy()
    monkeypatch.setattr(train, "validate", spy_phase(spy, "validation", train.validate))
    monkeypatch.setattr(train, "evaluate_model", spy_phase(spy, "test", train.evaluate_model))
    with spy:
        run = train.main(["--data_dir", str(synthetic_store), "--categories", *CATS, "--model_config",
                          str(vocab_config), "--output_dir", str(tmp_path), "--run_name", "bf16", "--eval_windows", "4",
                          "--batch_size", "4", "--token_budget", "800", "--dtype", "bfloat16"])
    _check_bf16(spy.calls, "validation")
    _check_bf16(spy.calls, "test")
    assert json.loads((run / "test_results.json").read_text())["dtype"] == "bfloat16"


# ----------------------------------------------------------------------------------------------------
# 4. MFU peaks by exact product name

def test_mfu_peaks_by_exact_product_name(monkeypatch):
    expected = {  # name as torch.cuda.get_device_name reports it: dense bf16 TFLOP/s
        "NVIDIA H100 80GB HBM3": 989.4, "NVIDIA H100 PCIe": 756.5, "NVIDIA H100 NVL": 835.5,
        "NVIDIA H200": 989.4, "NVIDIA H200 NVL": 835.5, "NVIDIA GH200 480GB": 989.4,
        "NVIDIA A100-SXM4-40GB": 312, "NVIDIA A100-SXM4-80GB": 312, "NVIDIA A100-PCIE-40GB": 312,
        "NVIDIA A100 80GB PCIe": 312, "NVIDIA L40S": 362.05, "NVIDIA L40": 181.05, "NVIDIA L4": 121,
        "NVIDIA A10G": 125, "NVIDIA B200": 2250, "NVIDIA RTX 6000 Ada Generation": 364.2,
        "NVIDIA GeForce RTX 4090": 165.2}
    for name, tflops in expected.items():
        fake_cuda(monkeypatch, name=name)
        got_name, peak = train.gpu_peak(torch.device("cuda:0"))
        assert got_name == name and peak == pytest.approx(tflops * 1e12), name
    # the substring traps of the old table, and unknown products: no peak, so no MFU
    for name in ("NVIDIA H100", "NVIDIA L40 ", "NVIDIA GeForce RTX 3090", "NVIDIA H800", "Tesla V100-SXM2-16GB", ""):
        assert mdl.peak_bf16_flops(name) is None or name.strip() in expected, name
    assert train.gpu_peak(torch.device("cpu")) == (None, None)


# ----------------------------------------------------------------------------------------------------
# 7. input pipeline: the next batch sampled and pinned while the device works

def _fake_pinning(monkeypatch):
    """Tensor.pin_memory (which needs CUDA) as a copy that records the thread it ran in."""
    threads = []

    def pin(self):
        threads.append(threading.current_thread().name)
        return self.clone()

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    return threads


def test_prefetcher_gives_todays_batches_pinned_one_ahead(synthetic_store, monkeypatch):
    from random_window_dataset import RandomWindowDataset
    threads = _fake_pinning(monkeypatch)
    set_in = []  # (thread, device) of every torch.cuda.set_device: the worker must be on the rank's GPU
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: set_in.append((threading.current_thread().name, d)))
    s = st.Store(synthetic_store, in_memory=True)
    for sampling, (rank, world), batch in (("paper", (0, 1), 8), ("balanced", (1, 3), 5), ("token", (2, 4), 3)):
        ds = RandomWindowDataset(None, "train", CATS, seed=7, sampling=sampling, store=s)
        pre = train.BatchPrefetcher(ds, batch, rank, world, pin_memory=True, tag_base=100,
                                    device=torch.device(f"cuda:{rank}"))
        plain = train.BatchPrefetcher(ds, batch, rank, world, pin_memory=False, tag_base=100)
        for i in [3, 4, 5, 6, 7, 40, 41, 0, 1, 2]:  # in order, and jumps (a resume)
            x, labels, tags = pre.get(i)
            assert pre.pending[0] == i + 1  # the next batch is already on its way
            ref_x, ref_labels = ds.sample_batch(i, batch, rank, world, return_labels=True)
            assert torch.equal(x, ref_x) and (labels == ref_labels).all()
            assert torch.equal(tags, torch.from_numpy(ref_labels + 100))
            px, pl, pt = plain.get(i)
            assert torch.equal(px, x) and (pl == labels).all() and torch.equal(pt, tags)
    main = threading.main_thread().name
    assert threads and all(t != main for t in threads)  # pinned in the worker, never in the loop
    assert set(threads) <= {t for t, _ in set_in}  # each pinning thread first set its rank's GPU
    assert {str(d) for _, d in set_in} == {"cuda:0", "cuda:1", "cuda:2"}


@pytest.mark.slow  # two training runs compared bit for bit (~13 CPU-s): the fast loop stays under 200 s
def test_training_with_the_pinned_prefetch_path_is_bit_identical(synthetic_store, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    args = ["--data_dir", str(synthetic_store), "--categories", *CATS, "--model_config", str(TINY_CONFIG),
            "--output_dir", str(tmp_path), "--eval_windows", "4", "--batch_size", "4", "--grad_accum_steps", "2",
            "--token_budget", "4000", "--skip_test_eval", "--tag_categories"]
    ref = train.main(args + ["--run_name", "plain"])
    threads = _fake_pinning(monkeypatch)

    class Pinned(train.BatchPrefetcher):
        def __init__(self, *a, **k):
            super().__init__(*a, **{**k, "pin_memory": True})

    monkeypatch.setattr(train, "BatchPrefetcher", Pinned)
    got = train.main(args + ["--run_name", "pinned"])
    assert len(threads) >= 2 * 5 * 2  # x and tags of every micro-batch (5 steps x 2) went through pinning
    a, b = (load_file(str(r / "final" / "model.safetensors")) for r in (ref, got))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------------
# 5. many runs per GPU: placement among the visible GPUs, threads per process, the memory check

FAKE_TRAIN = r"""
import json, os, sys
from pathlib import Path
rd = Path(sys.argv[1]); rd.mkdir(parents=True, exist_ok=True)
keys = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "TORCHINDUCTOR_COMPILE_THREADS")
(rd / "env.json").write_text(json.dumps({k: os.environ.get(k) for k in keys}))
(rd / "summary.json").write_text(json.dumps({"status": "complete", "final_val_loss": 1.0}))
"""


def _gpu_plan(tmp_path, synthetic_store, n_runs, batch=320):
    plan = {"name": "g", "store": {"data_dir": str(synthetic_store)},
            "grid": {"model_config": ["pythia-14m"], "K": [1], "seed": list(range(n_runs))},
            "fixed": {"batch_size": batch}}
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(plan))
    return p


def fake_mem_query(monkeypatch, free, total):
    """sweep.py asks a child process for the GPUs' free memory (no CUDA context in the sweep): a child that
    answers (free, total) for every index it is given; the sweep process itself must not ask."""
    import sweep
    monkeypatch.setattr(sweep, "MEM_QUERY", f"import json, sys; print(json.dumps([[{int(free)}, {int(total)}]] "
                                            "* (len(sys.argv) - 1)))")

    def no_context(d=None):
        raise AssertionError("torch.cuda.mem_get_info in the sweep process: a CUDA context held for the whole sweep")
    monkeypatch.setattr(torch.cuda, "mem_get_info", no_context)


@pytest.mark.slow  # sweeps: train.py processes
def test_sweep_places_runs_on_visible_gpus_with_threads_and_a_memory_check(synthetic_store, tmp_path, monkeypatch,
                                                                           capsys):
    import sweep
    # the runs are a stand-in that records its environment: what is tested is the sweep's placement
    monkeypatch.setattr(sweep, "train_command", lambda plan, out, rid, params, **k:
                        [sys.executable, "-c", FAKE_TRAIN, str(Path(out) / "runs" / rid)])
    monkeypatch.setattr(sweep, "node_cores", lambda: 16)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # a node that assigned two of its GPUs to this job
    gib = 2 ** 30
    fake_cuda(monkeypatch, n=2, free=20 * gib, total=80 * gib)
    fake_mem_query(monkeypatch, 20 * gib, 80 * gib)
    from model import gpu_memory_estimate, model_config
    per_run = sum(gpu_memory_estimate(model_config("pythia-14m", 64)[0], 320).values())
    assert 4 * per_run > 20 * gib > 3 * per_run  # the numbers the refusal below is about

    plan = _gpu_plan(tmp_path, synthetic_store, 3)
    line = one_line_error(sweep.main, ["run", str(plan), "--out", str(tmp_path / "o"), "--gpus", "1",
                                       "--runs_per_gpu", "4"], capsys)
    assert "--runs_per_gpu 4" in line and "free of 80.0 GiB on GPU 5" in line and "at most 3 fit" in line
    assert f"{per_run / gib:.1f} GiB" in line
    assert sweep.main(["run", str(plan), "--out", str(tmp_path / "o"), "--gpus", "1", "--runs_per_gpu", "3"]) == 0
    out = capsys.readouterr().out
    assert "GPU memory per run, estimated: pythia-14m at batch 320 per GPU" in out and "adamw_state" in out
    envs = [json.loads(p.read_text()) for p in (tmp_path / "o" / "runs").glob("*/env.json")]
    assert len(envs) == 3
    # --gpus 1 is the second *visible* GPU (5); 16 cores / 3 processes
    assert all(e == {"CUDA_VISIBLE_DEVICES": "5", "OMP_NUM_THREADS": "5", "TORCHINDUCTOR_COMPILE_THREADS": "5"}
               for e in envs), envs
    line = one_line_error(sweep.main, ["run", str(plan), "--out", str(tmp_path / "p"), "--gpus", "2"], capsys)
    assert "index 2, but 2 GPU(s) are visible" in line
    # every visible GPU by default, a torchrun group of 2 = 2 processes: 16 / (1 slot x 2) threads each
    plan2 = json.loads(plan.read_text())
    plan2["gpus_per_run"] = 2
    plan.write_text(json.dumps(plan2))
    assert sweep.main(["run", str(plan), "--out", str(tmp_path / "q")]) == 0
    envs = [json.loads(p.read_text()) for p in (tmp_path / "q" / "runs").glob("*/env.json")]
    assert envs and all(e["CUDA_VISIBLE_DEVICES"] == "3,5" and e["OMP_NUM_THREADS"] == "8" for e in envs)


# ----------------------------------------------------------------------------------------------------
# train.py's other CUDA-only branches: NCCL init, barrier, fused AdamW, DDP device_ids, GPU memory and MFU
# in the metrics, the MFU note

def test_train_cuda_only_branches(monkeypatch, synthetic_store, tmp_path):
    import types
    import torch.distributed as tdist
    import torch.nn.parallel
    fake_cuda(monkeypatch, n=2, name="NVIDIA L40", set_device=lambda d: None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    seen = {}

    def init_process_group(**k):
        seen["init"] = k
    monkeypatch.setattr(tdist, "init_process_group", init_process_group)
    monkeypatch.setattr(tdist, "barrier", lambda device_ids=None: seen.setdefault("barrier", device_ids))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    args = train.parse_args(["--data_dir", str(synthetic_store), "--categories", *CATS,
                             "--model_config", str(TINY_CONFIG), "--device", "cuda"])
    dist = train.setup_dist(args)
    assert seen["init"]["backend"] == "nccl" and seen["init"]["device_id"] == torch.device("cuda:1")
    assert dist.device == torch.device("cuda:1") and dist.dtype == torch.bfloat16 and dist.ddp
    dist.barrier()
    assert seen["barrier"] == [1]

    class FakeDDP(torch.nn.Module):
        def __init__(self, module, device_ids=None):
            super().__init__()
            seen["ddp_device_ids"] = device_ids
            self.module = module
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", FakeDDP)
    real_to = torch.nn.Module.to
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self if a and str(a[0]).startswith("cuda")
                        else real_to(self, *a, **k))  # the weights stay on the CPU
    store, cats, train_ds, _ = train.load_data(args)
    plan = train.plan_run(args, dist, store, cats, train_ds)
    assert plan.chunk_rows == 8192  # the CUDA head chunk
    model, opt, step_fn, n_params = train.build_model_and_optimizer(args, plan, dist)
    assert opt.defaults["fused"] is True and seen["ddp_device_ids"] == [1]

    name, peak = train.gpu_peak(dist.device)
    assert (name, peak) == ("NVIDIA L40", 181.05e12) and train.mfu_notes(name, peak) == []
    assert train.mfu_notes("NVIDIA Foo 9000", None) == [
        "MFU n/a: no bf16 peak known for GPU 'NVIDIA Foo 9000' (add it to model.PEAK_BF16_FLOPS)"]
    assert train.mfu_notes(None, None) == []
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda d=None: 3 * 2 ** 30)
    rows = []
    log = types.SimpleNamespace(metrics=rows.append, print=lambda m: rows.append(m))
    dist.ddp = False  # one rank's view of the log row (the loss all-reduce is gloo's / NCCL's business)
    run = types.SimpleNamespace(dist=dist, plan=plan, log=log, peak_flops=peak, n_params=n_params)
    state = runlife.TrainState(step=10, tokens_seen=8000)
    train.log_train(run, state, torch.tensor(2.0), 1e-3, time.time() - 1.0, 8000)
    row = rows[0]
    assert row["gpu_mem_gib"] == 3.0 and 0 < row["mfu"] < 1 and abs(row["time"] - time.time()) < 60
    assert "mfu" in rows[1]

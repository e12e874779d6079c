"""
The model side, shared by training and evaluation: the named Pythia configurations (and JSON configs),
model construction, parameter and FLOP counts, the hidden states of a window, and the output head with
its loss: one fused, chunked linear + cross-entropy implementation that training (loss and gradients)
and evaluation (per-token NLL) both go through.
"""
import hashlib
import inspect
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import store as st
from exact_eval import eval_record, summarise, tile

# The published Pythia architectures (EleutherAI/pythia configs), written here so no hub is needed.
PYTHIA_BASE = dict(vocab_size=50304, rotary_pct=0.25, rotary_emb_base=10000, max_position_embeddings=2048,
                   use_parallel_residual=True, tie_word_embeddings=False, layer_norm_eps=1e-5,
                   hidden_act="gelu", initializer_range=0.02, attention_dropout=0.0, hidden_dropout=0.0,
                   bos_token_id=0, eos_token_id=0)
PYTHIA = {  # name: (hidden, layers, heads, default lr, exact parameter count)
    "pythia-14m": (128, 6, 4, 1e-3, 14_067_712),
    "pythia-31m": (256, 6, 8, 1e-3, 30_494_720),
    "pythia-70m": (512, 6, 8, 1e-3, 70_426_624),
    "pythia-160m": (768, 12, 12, 6e-4, 162_322_944),
    "pythia-410m": (1024, 24, 16, 3e-4, 405_334_016),
}


class ConfigError(Exception):
    """A --model_config that cannot be used: one actionable line."""


def model_config(spec, store_vocab):
    """(GPTNeoXConfig, name, default lr, expected param count or None) for a named config or a JSON file."""
    from transformers import GPTNeoXConfig
    if spec in PYTHIA:
        h, L, nh, lr, n_params = PYTHIA[spec]
        fields = dict(PYTHIA_BASE, hidden_size=h, num_hidden_layers=L, num_attention_heads=nh,
                      intermediate_size=4 * h)
        name = spec
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"--model_config {spec}: neither a named config ({', '.join(PYTHIA)}) nor a JSON file")
        try:
            user = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"--model_config {spec}: not valid JSON ({e})") from None
        known = set(inspect.signature(GPTNeoXConfig.__init__).parameters) | {"rotary_pct", "rotary_emb_base",
                                                                              "model_type"}
        unknown = sorted(set(user) - known)
        if unknown:
            raise ConfigError(f"--model_config {spec}: field(s) {', '.join(unknown)} unknown to GPTNeoXConfig")
        fields = dict(PYTHIA_BASE, **{k: v for k, v in user.items() if k != "model_type"})
        fields.setdefault("intermediate_size", 4 * fields.get("hidden_size", 512))
        name, lr, n_params = path.stem, 1e-3, None
    # transformers 5 spells Pythia's rotary settings as rope_parameters
    fields["rope_parameters"] = {"rope_type": "default", "rope_theta": fields.pop("rotary_emb_base"),
                                 "partial_rotary_factor": fields.pop("rotary_pct")}
    cfg = GPTNeoXConfig(**fields)
    if cfg.vocab_size < store_vocab:
        raise ConfigError(f"--model_config {spec}: vocab_size {cfg.vocab_size} is smaller than the store's "
                          f"vocabulary ({store_vocab} ids)")
    return cfg, name, lr, n_params


def build_model(cfg, init_seed):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(init_seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32)


def load_model(path):
    """A save_pretrained directory, in fp32 with SDPA attention."""
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32)


def count_params(model):
    """(total, non-embedding, matmul) parameter counts.

    non-embedding: total minus the input embedding (Kaplan et al.'s N; the untied output head counts).
    matmul: the weights of the matrix multiplications a token goes through (every Linear, the output head
    included); the input embedding is a lookup, and biases and layer norms are not matmuls. This is the N
    of the FLOP estimate below.
    """
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return total, total - emb, matmul


def flops_per_token(n_matmul, cfg, context=st.PRED_PER_WINDOW):
    """Training FLOPs per predicted token, as PaLM (appendix B) and nanoGPT count them: 6 N_matmul for the
    weight matmuls (forward 2, backward 4) plus 12 L d T for the attention scores and values over a context
    of T tokens (T = 100 here, the window's predictions; causal masking is not discounted)."""
    return 6 * n_matmul + 12 * cfg.num_hidden_layers * cfg.hidden_size * context


# Dense (no 2:4 sparsity) bf16 tensor-core peak FLOP/s per GPU, for MFU, keyed by the exact name
# torch.cuda.get_device_name reports. Matching is exact: a substring rule gave "H100 PCIe" / "H100 NVL" /
# "H200 NVL" the SXM peak (MFU 16-24% low) and let "L40" match "L4". Datasheets print the sparse figure
# first; the dense one is half of it. Sources (NVIDIA datasheets / whitepapers):
PEAK_BF16_FLOPS = {
    # H100 datasheet (nvidia.com/en-us/data-center/h100): SXM 1,979 / PCIe 1,513 / NVL 1,671 TFLOPS sparse
    "NVIDIA H100 80GB HBM3": 989.4e12, "NVIDIA H100 SXM5 80GB": 989.4e12, "NVIDIA H100 SXM5 94GB": 989.4e12,
    "NVIDIA H100 PCIe": 756.5e12, "NVIDIA H100 NVL": 835.5e12,
    # H200 datasheet (nvidia.com/en-us/data-center/h200): SXM 1,979 / NVL 1,671 TFLOPS sparse
    "NVIDIA H200": 989.4e12, "NVIDIA H200 NVL": 835.5e12,
    # GH200 datasheet: the Hopper GPU of the superchip, 1,979 TFLOPS sparse (every memory variant)
    "NVIDIA GH200 480GB": 989.4e12, "NVIDIA GH200 144G HBM3e": 989.4e12, "NVIDIA GH200 96GB HBM3": 989.4e12,
    # A100 datasheet: 312 TFLOPS dense bf16 for the 40 / 80 GB, SXM4 and PCIe alike
    "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA A100-SXM4-80GB": 312e12, "NVIDIA A100-PCIE-40GB": 312e12,
    "NVIDIA A100 80GB PCIe": 312e12,
    # Ada Lovelace whitepaper (v2.1) / L40S, L40, L4 datasheets: 733 / 362.1 / 242 TFLOPS sparse
    "NVIDIA L40S": 362.05e12, "NVIDIA L40": 181.05e12, "NVIDIA L4": 121e12,
    # RTX 6000 Ada datasheet: 364.2 (728.4 sparse) bf16 with fp32 accumulate; Ada whitepaper, RTX 4090: bf16
    # with fp32 accumulate is 165.2 (330.3 sparse): GeForce runs fp32 accumulation at half rate
    "NVIDIA RTX 6000 Ada Generation": 364.2e12, "NVIDIA GeForce RTX 4090": 165.2e12,
    # A10 datasheet: 125 (250 sparse). The A10G is AWS's A10 variant without a public datasheet: the A10's
    # figure is used (unverified; MFU on an A10G may read low)
    "NVIDIA A10G": 125e12, "NVIDIA A10": 125e12,
    # HGX B200 datasheet: 4.5 PFLOPS sparse fp16/bf16 per GPU
    "NVIDIA B200": 2250e12,
}


def peak_bf16_flops(device_name):
    """Dense bf16 peak of a GPU by its exact product name, or None (MFU is then n/a)."""
    return PEAK_BF16_FLOPS.get(str(device_name).strip())


# ----------------------------------------------------------------------------------------------------
# devices: one rule for train.py, evaluate.py, sweep.py and the benchmarks

class DeviceError(Exception):
    """A --device that cannot be used: one actionable line."""


def resolve_device(spec="auto"):
    """torch.device for a --device value. auto: cuda:<LOCAL_RANK> when CUDA is available, else cpu;
    cuda: cuda:<LOCAL_RANK> (torch.cuda.set_device refuses a device without an index); cuda:N as given,
    except under torchrun (WORLD_SIZE > 1), where each rank must use the GPU of its LOCAL_RANK (DDP is
    told device_ids=[LOCAL_RANK]; an explicit index would put every rank on one GPU)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if spec == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        device = torch.device("cuda" if spec == "auto" else spec)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device {spec}: not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {spec}: only auto, cpu, cuda and cuda:N are supported")
    if device.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {spec}: no CUDA device is available (use --device cpu)")
    if device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    elif torchrun and device.index != local_rank:
        raise DeviceError(f"--device {spec}: under torchrun each rank uses the GPU of its LOCAL_RANK "
                          f"({local_rank} here); pass --device cuda (or auto)")
    if device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {spec}: resolves to {device}, but only {torch.cuda.device_count()} CUDA "
                          "device(s) are visible (CUDA_VISIBLE_DEVICES)")
    return device


def setup_device(device):
    """Make `device` current and allow TF32 for fp32 matmuls on CUDA (bf16 runs are unaffected; fp32 runs
    and evaluations get tensor cores at ~1e-3 relative precision of the inputs, as PyTorch's
    "high" float32 matmul precision). Nothing to do on a CPU."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def gpu_memory_estimate(cfg, batch, dtype=torch.bfloat16, context=st.WINDOW, chunk_rows=8192):
    """{component: bytes} of one training process on a GPU, at `batch` windows per micro-step: an estimate
    to decide how many runs share a GPU, not a measurement (gpu_check.py measures). Weights, gradients and
    AdamW's two moments are fp32 (16 bytes per parameter); activations per layer s*b*h*34 bytes in bf16
    (Korthikanti et al. 2022, "Reducing activation recomputation", without the attention-score term:
    SDPA keeps no s x s scores), twice that in fp32; the fused head holds one chunk of logits (compute
    dtype + an fp32 copy + the softmax in compute dtype), its fp32 weight gradient and the hidden states'
    gradient; plus ~1 GB for the CUDA context, cuBLAS workspaces and the allocator's slack."""
    with torch.device("meta"):
        n_params = sum(p.numel() for p in build_model(cfg, 0).parameters())
    elt = 2 if dtype == torch.bfloat16 else 4
    s, b, h, V, L = context, batch, cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    rows = min(chunk_rows, b * s)
    return {"weights": 4 * n_params, "gradients": 4 * n_params, "adamw_state": 8 * n_params,
            "activations": L * s * b * h * 34 * elt // 2 + s * b * h * 4,
            "head": rows * V * (2 * elt + 4) + 4 * V * h, "cuda_context": 1 << 30}


# ----------------------------------------------------------------------------------------------------
# hidden states and the head

def head_chunk_rows(device, vocab):
    """Rows of logits computed at a time by the output head (training and evaluation).

    CPU: ~3M logits (~12 MB fp32) per chunk stay cache-resident, which measured 1.5x faster for the
    head's matmul + logsumexp than one big matrix (BENCHMARKS.md). CUDA: 8192 rows (~0.8 GB of bf16
    logits at vocab 50k) keep the matmuls large without materialising the whole batch's logits.
    """
    return 8192 if torch.device(device).type == "cuda" else max(16, 3_000_000 // int(vocab))


def window_hidden(model, x, tags=None):
    """Final hidden states that predict x[:, 1:] (B, W-1, d): the input is x[:, :-1], or, for tagged runs,
    [tag, x[:, :-1]] with one category token in front. The tag's own output is dropped, so it is never a
    target, and the predicted tokens are exactly the untagged ones, each with the same window context
    plus the tag."""
    inner = model.gpt_neox if hasattr(model, "gpt_neox") else model.get_decoder()
    if tags is None:
        return inner(input_ids=x[:, :-1]).last_hidden_state
    inp = torch.cat([tags.to(x.dtype).view(-1, 1), x[:, :-1]], dim=1)
    return inner(input_ids=inp).last_hidden_state[:, 1:]


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Next-token NLL of hidden states h (N, d) under the output head W (V, d), chunk by chunk.

    Returns (sum of the NLL, per-row NLL (N,) fp32; the latter carries no gradient). When gradients are
    needed, the forward pass also computes them (softmax - onehot) per chunk, so neither fp32 logits for
    the whole batch nor a recomputation is needed: only one chunk of logits exists at a time. With a 50k
    vocabulary this layer dominates small models; on CPU fp32 it costs the same as the plain loss.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk_rows, compute_dtype):
        need = ctx.needs_input_grad
        w = weight.to(compute_dtype)
        grad_h = torch.empty_like(h) if need[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need[1] else None
        nll = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        # on the CPU, the chunk's logits (and log-softmax, or the head's gradient) in buffers reused by every
        # chunk: a fresh ~12 MB tensor per chunk is a fresh mmap there, its pages faulted in anew each time (~1M
        # page faults in one smoke run, BENCHMARKS.md); the same kernels write into them, so the same numbers.
        # Not on CUDA: its caching allocator reuses blocks already, and held buffers would add to the peak
        # (bf16 evaluation: an fp32 log-softmax buffer beside 8,192 rows of logits, ~1.6 GB at a 50k vocabulary)
        buf = out = None
        if h.device.type == "cpu":
            rows = min(chunk_rows, h.shape[0])
            buf = torch.empty((rows, weight.shape[0]), dtype=compute_dtype)  # the chunk's logits
            if grad_h is None and grad_w is None:
                out = torch.empty((rows, weight.shape[0]))                    # its log-softmax (fp32)
            elif grad_w is not None:
                out = torch.empty(weight.shape, dtype=compute_dtype)         # its share of grad_w
        part = lambda b, n: None if b is None else b[:n]  # noqa: E731  (out=None: a fresh tensor, as on CUDA)
        with torch.autocast(device_type=h.device.type, enabled=False):
            for s in range(0, h.shape[0], chunk_rows):
                hc, tc = h[s:s + chunk_rows].to(compute_dtype), targets[s:s + chunk_rows]
                logits = torch.matmul(hc, w.t(), out=part(buf, len(hc))).float()
                if grad_h is None and grad_w is None:
                    # torch's fused log_softmax, not logsumexp - logit: evaluation's head 2x, evaluate.py 1.27x
                    # faster on CPU at a 50k vocabulary (BENCHMARKS.md); the training pass below gains nothing
                    lsm = torch.log_softmax(logits, dim=-1, out=part(out, len(hc)))
                    nll[s:s + chunk_rows] = -lsm.gather(1, tc[:, None]).squeeze(1)
                else:
                    # one exp over the chunk, not two (logsumexp's, then the softmax's): the exps are most of
                    # the head's cost on CPU with a 50k vocabulary (its training pass measured 1.4x faster)
                    m = logits.amax(dim=-1, keepdim=True)
                    nll[s:s + chunk_rows] = (m - logits.gather(1, tc[:, None])).squeeze(1)
                    g = logits.sub_(m).exp_()                               # exp(logit - max), in place
                    z = g.sum(dim=-1, keepdim=True)
                    nll[s:s + chunk_rows] += z.log().squeeze(1)             # lse - logit_target
                    g = g.div_(z)                                           # softmax
                    g[torch.arange(len(tc), device=g.device), tc] -= 1.0   # minus one-hot
                    g = g.to(compute_dtype)
                    if grad_h is not None:
                        grad_h[s:s + chunk_rows] = (g @ w).to(h.dtype)
                    if grad_w is not None:
                        grad_w += torch.matmul(g.t(), hc, out=out).float()  # out None on CUDA
        ctx.save_for_backward(grad_h, grad_w)
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(nll)
        return nll.sum(), nll

    @staticmethod
    def backward(ctx, grad_out, _grad_nll):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def head_nll(model, h, targets, chunk_rows=None, compute_dtype=torch.float32):
    """(sum, per-row NLL) of targets (N,) given final hidden states h (N, d), through the fused head."""
    weight = model.get_output_embeddings().weight
    chunk_rows = chunk_rows or head_chunk_rows(h.device, weight.shape[0])
    if not torch.is_grad_enabled():
        # evaluation / validation: a Function sees requires_grad, not the grad mode, and would compute the
        # head's gradients for nothing (2.3x the cost of evaluation's head on CPU)
        h, weight = h.detach(), weight.detach()
    return FusedLinearCrossEntropy.apply(h, weight, targets, chunk_rows, compute_dtype)


def lm_loss(model, x, chunk_rows=None, compute_dtype=torch.float32, tags=None):
    """Mean next-token loss of windows x (B, W): W-1 predictions per window. tags (B,): optional category
    tokens put in front of each window (tagged runs)."""
    h = window_hidden(model, x, tags)                          # (B, W-1, d), final layer norm applied
    targets = x[:, 1:].reshape(-1)
    total, _ = head_nll(model, h.reshape(-1, h.shape[-1]), targets, chunk_rows, compute_dtype)
    return total / targets.numel()


def window_nll(model, x, valid=None, chunk_rows=None, tags=None, compute_dtype=torch.float32):
    """Per-target NLL (fp32) of the valid targets of windows x (B, W), in row-major order.
    valid (B, W-1) bool marks real targets; only those reach the head. None: every target."""
    h = window_hidden(model, x, tags)
    if valid is None:
        return head_nll(model, h.reshape(-1, h.shape[-1]), x[:, 1:].reshape(-1), chunk_rows, compute_dtype)[1]
    return head_nll(model, h[valid], x[:, 1:][valid], chunk_rows, compute_dtype)[1]


def eval_nll(model, x, valid=None, dtype=torch.float32, chunk_rows=None, tags=None):
    """The one evaluation path (train.py's validation and final test evaluation, evaluate.py): per-target
    NLL (fp32, no gradient) of windows x. dtype bfloat16: the body under bf16 autocast and the output head's
    matmuls in bf16 too (the head is most of a small model's FLOPs: 84% / 73% / 58% of 14m / 31m / 70m),
    fp32 accumulation inside the matmuls, logits upcast to fp32 for the logsumexp and the NLL; callers sum
    the NLL in float64 (evaluate_model) or fp64 Python floats (validate). dtype float32: fp32 throughout
    (TF32 tensor cores on CUDA, see setup_device, as in training)."""
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        return window_nll(model, x, valid, chunk_rows, tags, compute_dtype=dtype)


class WindowLoss(torch.nn.Module):
    """model -> mean loss of a batch of windows. Wrapping the loss in a module lets DDP and
    torch.compile see the whole step (the fused head included) through one forward()."""

    def __init__(self, model, chunk_rows, compute_dtype):
        super().__init__()
        self.model, self.chunk_rows, self.compute_dtype = model, chunk_rows, compute_dtype

    def forward(self, x, tags=None):
        return lm_loss(self.model, x, self.chunk_rows, self.compute_dtype, tags)


# ----------------------------------------------------------------------------------------------------
# exact evaluation of a model on a split (evaluate.py's CLI and the end of every training run)
#
# The tiling and what it counts are described in evaluate.py's docstring: every token but a paper's first is
# predicted exactly once, with at most 100 tokens of context; float64 sums. The tiling, the sums' summary and
# the result schema are exact_eval.py (torch-free: ngram.py's KN runs write through them too).

WINDOW, STRIDE = st.WINDOW, st.PRED_PER_WINDOW


def weights_sha256(model_dir):
    """sha256 over the model's weight files (sorted by name) in a save_pretrained directory."""
    files = sorted(Path(model_dir).glob("*.safetensors")) or sorted(Path(model_dir).glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(st.sha256_file(f).encode())
    return h.hexdigest() if len(files) > 1 else st.sha256_file(files[0])


def evaluate_model(model, store, split="test", categories=None, batch_size=64, device="cpu",
                   dtype=torch.float32, training_categories=None, max_papers_per_category=None,
                   output=None, model_path=None, arguments=None, progress=True, tag_base=None,
                   exclude_papers=None):
    """Evaluate `model` on `split` of `store`; returns (and writes to `output`) the results dict.

    tag_base: for tagged runs, each window is preceded by the token tag_base + its category's label.
    exclude_papers: paper ids left out (e.g. test papers with a near-duplicate in train, from baselines.py).
    """
    excluded = np.asarray(sorted(exclude_papers or []), dtype=np.int64)
    from tqdm import tqdm
    device = torch.device(device)
    cats = list(store.categories) if categories is None else list(categories)
    store.category_ids(cats)  # raises StoreError on an unknown name
    vocab = model.get_output_embeddings().weight.shape[0]
    if store.vocab_size > vocab:
        raise st.StoreError(f"the store's vocabulary ({store.vocab_size} ids) is larger than the model's ({vocab})")
    if tag_base is not None and tag_base + len(store.categories) > vocab:
        raise st.StoreError(f"category tags {tag_base}..{tag_base + len(store.categories) - 1} do not fit the "
                            f"model's vocabulary ({vocab})")
    label_of = {ci: store.categories.index(c) for ci, c in enumerate(cats)}
    # every window of every selected paper, category by category
    per_cat_papers, all_starts, all_lens, all_cat = {}, [], [], []
    for ci, c in enumerate(cats):
        ids = store.papers(split, [c])
        ids = ids[(store.length[ids] >= 2) & ~np.isin(ids, excluded)]
        if max_papers_per_category is not None:
            ids = ids[:max_papers_per_category]
        per_cat_papers[c] = ids
        s, l, _ = tile(store, ids)
        all_starts.append(s)
        all_lens.append(l)
        all_cat.append(np.full(len(s), ci, dtype=np.int64))
    starts, lens, wcat = (np.concatenate(a) for a in (all_starts, all_lens, all_cat))
    if len(starts) == 0:
        raise st.StoreError(f"split {split!r} has no paper of >= 2 tokens in categories {' '.join(cats)}")

    model.eval()
    model.to(device)
    C = len(cats)
    pos_sum = np.zeros(C * STRIDE, dtype=np.float64)
    pos_cnt = np.zeros(C * STRIDE, dtype=np.int64)
    ar = np.arange(WINDOW, dtype=np.int64)
    pos = np.arange(STRIDE, dtype=np.int64)  # target position j-1 for j = 1..100
    t0 = time.time()
    with torch.inference_mode():
        for b in tqdm(range(0, len(starts), batch_size), desc=f"eval {split}", unit="batch",
                      disable=not progress, leave=False):
            s, l, c = starts[b:b + batch_size], lens[b:b + batch_size], wcat[b:b + batch_size]
            idx = np.minimum(s[:, None] + ar, s[:, None] + l[:, None] - 1)  # pad by repeating the last token
            x = torch.from_numpy(np.asarray(store.tokens[idx], dtype=np.int64)).to(device)
            valid_np = pos[None, :] < (l[:, None] - 1)
            valid = torch.from_numpy(valid_np).to(device)
            tags = None
            if tag_base is not None:
                tags = torch.tensor([tag_base + label_of[int(k)] for k in c], device=device)
            nll = eval_nll(model, x, valid, dtype, tags=tags).double().cpu().numpy()
            key = (c[:, None] * STRIDE + pos[None, :])[valid_np]  # row-major, matching h[valid]
            pos_sum += np.bincount(key, weights=nll, minlength=C * STRIDE)
            pos_cnt += np.bincount(key, minlength=C * STRIDE)
    wall = time.time() - t0
    per_category, overall = summarise(store, cats, per_cat_papers, pos_sum, pos_cnt, training_categories)
    model_info = {"path": str(Path(model_path).resolve()) if model_path else None,
                  "weights_sha256": weights_sha256(model_path) if model_path else None}
    return eval_record(store, split, model_info, str(dtype).replace("torch.", ""), tag_base, excluded.tolist(),
                       training_categories, arguments, per_category, overall, wall, output)

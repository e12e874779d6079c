"""model.py: the fused chunked head against autograd on F.cross_entropy (fp32 and bf16), the FLOP count's
parameter choice, and bits per byte against an independent count of the test text's bytes."""
import math

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

import model as mdl
import store as st
from conftest import ROOT


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fused_head_matches_autograd_cross_entropy(dtype, tol):
    g = torch.Generator().manual_seed(0)
    N, d, V = 37, 24, 301  # N not a multiple of the chunk: the last chunk is short
    h = torch.randn(N, d, generator=g, requires_grad=True)
    w = (0.3 * torch.randn(V, d, generator=g)).requires_grad_()
    t = torch.randint(0, V, (N,), generator=g)
    total, nll = mdl.FusedLinearCrossEntropy.apply(h, w, t, 8, dtype)
    (2.5 * total).backward()  # a non-unit upstream gradient must scale both gradients
    gh, gw = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    # reference: the plain head, logits in the compute dtype, cross-entropy in fp32, autograd's gradients
    logits = (h.to(dtype) @ w.to(dtype).t()).float()
    ref_rows = F.cross_entropy(logits, t, reduction="none")
    (2.5 * ref_rows.sum()).backward()
    scale = lambda x: float(x.detach().abs().max())
    assert float((nll - ref_rows.detach()).abs().max()) <= tol * scale(ref_rows)
    ref_total = float(ref_rows.detach().sum())
    assert abs(float(total.detach()) - ref_total) <= tol * ref_total
    assert float((gh - h.grad).abs().max()) <= tol * scale(h.grad)
    assert float((gw - w.grad).abs().max()) <= tol * scale(w.grad)
    assert not nll.requires_grad


def test_fused_head_buffers_give_the_unbuffered_numbers_bit_for_bit():
    """The head writes each chunk's logits, log-softmax and weight gradient into buffers reused across chunks
    (no fresh ~12 MB tensor, no page faults, per chunk): the very numbers of the plain per-chunk computation,
    bit for bit, in evaluation and in training, a short last chunk included."""
    g = torch.Generator().manual_seed(1)
    N, d, V, rows = 45, 16, 509, 8
    h, w = torch.randn(N, d, generator=g), 0.3 * torch.randn(V, d, generator=g)
    t = torch.randint(0, V, (N,), generator=g)
    with torch.no_grad():
        _, nll = mdl.FusedLinearCrossEntropy.apply(h, w, t, rows, torch.float32)
    ref = torch.cat([-torch.log_softmax(h[s:s + rows] @ w.t(), dim=-1).gather(1, t[s:s + rows, None]).squeeze(1)
                     for s in range(0, N, rows)])
    assert torch.equal(nll, ref)
    hg, wg = h.clone().requires_grad_(), w.clone().requires_grad_()
    mdl.FusedLinearCrossEntropy.apply(hg, wg, t, rows, torch.float32)[0].backward()
    ref_w = torch.zeros(V, d)
    for s in range(0, N, rows):
        logits = h[s:s + rows] @ w.t()
        p = (logits - logits.amax(dim=-1, keepdim=True)).exp()
        p = p / p.sum(dim=-1, keepdim=True)
        p[torch.arange(len(p)), t[s:s + rows]] -= 1.0
        ref_w += p.t() @ h[s:s + rows]
    assert torch.equal(wg.grad, ref_w)


def test_no_gradients_computed_without_grad_mode():
    h, w = torch.randn(5, 4), torch.randn(11, 4)
    with torch.no_grad():
        total, nll = mdl.FusedLinearCrossEntropy.apply(h, w, torch.arange(5), 2, torch.float32)
    ref = F.cross_entropy(h @ w.t(), torch.arange(5), reduction="none")
    assert torch.allclose(nll, ref, atol=1e-6) and torch.isclose(total, ref.sum())


def test_flop_count_uses_matmul_parameters_only():
    cfg, *_ = mdl.model_config("pythia-70m", 50277)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_config(cfg)
    total, nonemb, matmul = mdl.count_params(m)
    d, L, V = 512, 6, 50304
    # per layer: qkv (3d^2) + dense (d^2) + MLP (8 d^2); plus the output head (V d); no embedding, no biases
    assert matmul == L * 12 * d * d + V * d
    assert nonemb - matmul == total - V * d - matmul > 0  # biases and layer norms: counted by neither FLOP term
    assert mdl.flops_per_token(matmul, cfg) == 6 * matmul + 12 * L * d * 100


def test_bits_per_byte_against_an_independent_byte_count(sample_store):
    """bpb = (sum of the NLL in nats) / ln 2 / (UTF-8 bytes of the papers' texts), the bytes counted here
    from the source parquet with pyarrow, not from the store's index."""
    store = st.Store(sample_store)
    cfg, *_ = mdl.model_config(str(ROOT / "plans" / "configs" / "tiny-50k.json"), store.vocab_size)
    model = mdl.build_model(cfg, 0)
    res = mdl.evaluate_model(model, store, "test", max_papers_per_category=1, batch_size=16, progress=False)
    table = pq.read_table(next((st.SAMPLE_CORPUS).glob("test-*.parquet"))).to_pylist()
    first = {}
    for row in table:  # the store keeps source order: the first paper of each label in the split
        first.setdefault(row["label"], row["text"])
    for label, text in first.items():
        r = res["per_category"][st.CATEGORIES[label]]
        n_bytes = len(text.encode("utf-8"))
        assert r["n_bytes"] == n_bytes
        assert r["bits_per_byte"] == pytest.approx(r["loss"] * r["n_tokens"] / math.log(2) / n_bytes, rel=1e-12)
        assert 0.5 < r["bits_per_byte"] * math.log(2) * n_bytes / r["n_tokens"] / math.log(50304) < 1.5


def test_no_head_gradients_are_computed_in_evaluation(monkeypatch):
    """Under no_grad / inference_mode the fused head computes the loss only (the weight still has
    requires_grad: the Function must not see it)."""
    cfg, *_ = mdl.model_config(str(ROOT / "tests" / "configs" / "tiny.json"), 64)
    m = mdl.build_model(cfg, 0)
    seen = []
    real = mdl.FusedLinearCrossEntropy.forward

    def spy(ctx, *args):
        seen.append(tuple(ctx.needs_input_grad[:2]))
        return real(ctx, *args)

    monkeypatch.setattr(mdl.FusedLinearCrossEntropy, "forward", staticmethod(spy))
    x = torch.randint(1, 64, (2, 101))
    with torch.inference_mode():
        mdl.window_nll(m, x, torch.ones(2, 100, dtype=torch.bool))
    with torch.no_grad():
        mdl.lm_loss(m, x)
    mdl.lm_loss(m, x).backward()
    assert seen == [(False, False), (False, False), (True, True)]

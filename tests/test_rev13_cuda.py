"""Reviewer's tests of the CUDA paths (issue 13), CUDA faked on a CPU."""
import pytest
import torch

import model as mdl
from test_cuda_paths import fake_cuda


def test_auto_and_cuda_refuse_a_local_rank_without_a_visible_gpu(monkeypatch):
    """torchrun with more processes than visible GPUs (CUDA_VISIBLE_DEVICES=3, --nproc_per_node 2): rank 1's
    auto / cuda would be cuda:1, which torch.cuda.set_device rejects with a CUDA traceback; one line instead."""
    fake_cuda(monkeypatch, n=1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    for spec in ("auto", "cuda", "cuda:1"):
        with pytest.raises(mdl.DeviceError, match=f"--device {spec}: .*1 CUDA device"):
            mdl.resolve_device(spec)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert mdl.resolve_device("auto") == torch.device("cuda:0")

"""Sharded models (DTensor Shard(0)/Shard(1)/Replicate, FSDP2 fully_shard) on 1, 2 and 4 gloo
processes get the full tensors of single-process init, bit for bit; Shard(0) ranks draw only
their rows."""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys

import pytest
import torch

import initwise
from initwise import streams

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dist_worker  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(world: int, out: str) -> None:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "dist_worker.py"), str(r), str(world), str(port), out],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for r in range(world)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=90)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-3000:]}"


def reference(policy: str) -> dict[str, torch.Tensor]:
    model = dist_worker.mlp()
    initwise.init(model, dist_worker.example(), policy=policy, seed=dist_worker.SEED)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("world", [1, 2, 4])
def test_sharded_init_equals_single_process_bit_for_bit(world, tmp_path):
    run_ranks(world, str(tmp_path))
    full = torch.load(tmp_path / "full.pt")
    refs = {policy: reference(policy) for policy in ("standard", "orthogonal")}
    for name, policy, _ in dist_worker.scenarios():
        ref = refs[policy]
        got = full[name]
        assert got.keys() == ref.keys(), name
        for n in ref:
            assert torch.equal(got[n], ref[n]), (world, name, n)
    # each Shard(0) rank drew only the blocks of its rows of the 1024x1024 weight (4 blocks)
    name = "3.weight"
    blocks = math.ceil(1024 * 1024 / streams.BLOCK)
    counts = [torch.load(tmp_path / f"counts{r}.pt") for r in range(world)]
    for scenario in ("shard0", "fsdp2"):
        per_rank = [c[scenario][name] for c in counts]
        assert all(n <= math.ceil(blocks / world) + 1 for n in per_rank), (scenario, per_rank)
        assert sum(per_rank) <= blocks + world, (scenario, per_rank)
    assert all(c["replicate"][name] == blocks for c in counts)  # every replica draws it all

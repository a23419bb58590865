"""One rank of the distributed tests (tests/test_distributed.py starts WORLD of them).

``python tests/dist_worker.py RANK WORLD PORT OUT``: joins a gloo group on 127.0.0.1, shards
the models of :func:`scenarios` (DTensor ``Shard(0)``, ``Shard(1)``, ``Replicate()``, FSDP2
``fully_shard``), initializes them with initwise and saves, on rank 0, every full tensor
(``DTensor.full_tensor()``) and, on every rank, how many stream blocks it drew per parameter.
"""
from __future__ import annotations

import datetime
import os
import sys
from collections import Counter

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import initwise  # noqa: E402
from initwise import streams  # noqa: E402

SEED = 5


def mlp() -> nn.Module:
    """1024x1024 = 4 stream blocks; 130 rows split unevenly over 4 ranks; a padding row."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(50, 64, padding_idx=3), nn.Linear(64, 1024), nn.ReLU(),
                         nn.Linear(1024, 1024), nn.Tanh(), nn.Linear(1024, 130), nn.GELU(), nn.Linear(130, 10))


def example() -> torch.Tensor:
    return torch.arange(6).view(2, 3)


def scenarios():
    from torch.distributed.tensor import Replicate, Shard

    for name, placement in (("shard0", Shard(0)), ("shard1", Shard(1)), ("replicate", Replicate())):
        yield name, "standard", placement
    yield "shard0_orthogonal", "orthogonal", Shard(0)
    yield "shard1_orthogonal", "orthogonal", Shard(1)
    yield "fsdp2", "standard", "fsdp2"


def shard(model: nn.Module, placement, mesh) -> nn.Module:
    from torch.distributed.tensor import Shard, distribute_tensor

    if placement == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for layer in model:
            if any(True for _ in layer.parameters()):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    for module in model.modules():
        for k, p in list(module._parameters.items()):
            if p is None:
                continue
            pl = placement if not (isinstance(placement, Shard) and placement.dim >= p.dim()) else Shard(0)
            module._parameters[k] = nn.Parameter(distribute_tensor(p.detach(), mesh, [pl]),
                                                 requires_grad=p.requires_grad)
    return model


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    drawn: Counter = Counter()
    real = streams.block_generator

    def counting(key, block):
        drawn[key] += 1
        return real(key, block)

    streams.block_generator = counting
    results, counts = {}, {}
    for name, policy, placement in scenarios():
        model = shard(mlp(), placement, mesh)
        plan = initwise.plan(mlp(), example(), policy=policy)  # planned on the plain model
        drawn.clear()
        if name == "shard0":
            initwise.init(model, example(), policy=policy, seed=SEED)  # planned on the sharded model
        else:
            plan.apply(model, seed=SEED)
        counts[name] = {n: drawn[streams.stream_key(SEED, n)] for n, _ in model.named_parameters()}
        full = {n: p.full_tensor() if hasattr(p, "full_tensor") else p.detach()
                for n, p in model.named_parameters()}
        results[name] = {n: t.clone() for n, t in full.items()}
    torch.save(counts, os.path.join(out, f"counts{rank}.pt"))
    if rank == 0:
        torch.save(results, os.path.join(out, "full.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

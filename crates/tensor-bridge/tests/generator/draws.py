"""PyTorch's side of tests/generator.rs: the same draws, from
torch.Generator().manual_seed(seed) for each seed given and from the global
generator after torch.manual_seed(GLOBAL_SEED), printed as JSON: per draw
[shape, hex of the raw bytes]. Keep the order of draws in step with
`program` and `global_program` in generator.rs."""
import json
import struct
import sys

import torch


def raw(t):
    t = t.detach().contiguous()
    flat = t.reshape(-1)
    data = bytes(flat.view(torch.uint8).tolist()) if flat.numel() else b""
    return [list(t.shape), data.hex()]


def word(v):
    return [[], struct.pack("<Q", v).hex()]


def program(g):
    out = []
    out.append(raw(torch.rand(3, 4, generator=g)))
    out.append(raw(torch.rand(17, generator=g, dtype=torch.float64)))
    out.append(raw(torch.rand(6, generator=g, dtype=torch.bfloat16)))
    out.append(raw(torch.randn(5, generator=g)))
    out.append(raw(torch.randn(33, generator=g, dtype=torch.float64)))
    out.append(raw(torch.randn(2, 3, generator=g)))
    out.append(raw(torch.randint(-5, 10, (7,), generator=g)))
    out.append(raw(torch.randint(0, 2**40, (3,), generator=g)))
    out.append(raw(torch.randperm(10, generator=g)))
    out.append(raw(torch.randperm(3000, generator=g)))
    t = torch.zeros(9)
    t.uniform_(-2.0, 3.0, generator=g)
    out.append(raw(t))
    t = torch.zeros(4, 4, dtype=torch.float64)
    t.normal_(1.5, 0.25, generator=g)
    out.append(raw(t))
    for dtype, n in [(torch.int64, 5), (torch.float32, 5), (torch.uint8, 4)]:
        t = torch.zeros(n, dtype=dtype)
        t.random_(generator=g)
        out.append(raw(t))
    t = torch.zeros(20)
    t.bernoulli_(0.3, generator=g)
    out.append(raw(t))
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    out.append(raw(torch.multinomial(probs, 3, False, generator=g)))
    probs = torch.arange(1.0, 11.0, dtype=torch.float64).reshape(2, 5)
    out.append(raw(torch.multinomial(probs, 6, True, generator=g)))
    out.append(word(torch.empty((), dtype=torch.int64).random_(generator=g).item()))
    out.append(raw(g.get_state()))
    out.append(word(g.initial_seed()))
    return out


def global_program(seed):
    torch.manual_seed(seed)
    out = [raw(torch.rand(4))]
    out.append(raw(torch.randn(3)))
    out.append(raw(torch.randperm(6)))
    out.append(word(torch.empty((), dtype=torch.int64).random_().item()))
    out.append(raw(torch.rand(2, dtype=torch.float64)))
    out.append(raw(torch.get_rng_state()))
    return out


def main():
    global_seed = int(sys.argv[1])
    seeds = [int(s) for s in sys.argv[2:]]
    result = {"global": global_program(global_seed)}
    for s in seeds:
        result[str(s)] = program(torch.Generator().manual_seed(s))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

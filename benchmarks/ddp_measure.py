"""Step time, gradient bytes, and the DDP bucket timeline (overlap) on the CPU."""
import json, sys, time
import numpy
import gpuops
from gpuops import distributed, nn
from gpuops.gpt import GPT
from gpuops.train import build_model
from threadpoolctl import threadpool_limits

def run(kind, cap, steps=30):
    distributed.init()
    rank, world = distributed.rank(), distributed.world_size()
    nn.manual_seed(0)
    rng = numpy.random.default_rng(rank)
    if kind == "gpt":
        model = GPT(256, 64, 2, 4, 64)
        batch = lambda: (rng.integers(0, 256, (16, 64)), rng.integers(0, 256, (16, 64)))
        loss_of = lambda b: model.loss(*b)
    else:
        model = build_model("mlp", (1, 8, 8), 10)
        crit = nn.CrossEntropyLoss()
        batch = lambda: (rng.random((32, 1, 8, 8), dtype=numpy.float32), rng.integers(0, 10, 32))
        loss_of = lambda b: crit(model(gpuops.Tensor(b[0])), b[1])
    ddp = distributed.DistributedDataParallel(model, bucket_cap_mb=cap) if world > 1 else None
    opt = gpuops.optim.Adam(model.parameters(), lr=1e-3)
    rows = []
    for s in range(steps):
        b = batch()
        distributed.barrier()
        t0 = time.perf_counter()
        loss = loss_of(b)
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        if ddp: ddp.finish()
        opt.step()
        t3 = time.perf_counter()
        tl = ddp.timeline if ddp else []
        rows.append(dict(forward=t1 - t0, backward=t2 - t1, step=t3 - t0, opt=t3 - t2,
                         buckets=[(i, nb, s0, d) for i, nb, _, s0, d in tl]))
    rows = rows[5:]
    med = lambda k: float(numpy.median([r[k] for r in rows]))
    out = dict(kind=kind, world=world, cap_mb=cap,
               grad_bytes=sum(p.data.nbytes for p in model.parameters()),
               forward_ms=1e3 * med("forward"), backward_ms=1e3 * med("backward"),
               step_ms=1e3 * med("step"))
    if ddp:
        # the last gradient is ready when the last bucket starts; communication after that is exposed
        comm, hidden = [], []
        for r in rows:
            last_start = max(a for _, _, a, _ in r["buckets"])
            busy = sum(d - a for _, _, a, d in r["buckets"])
            exposed = max(d for _, _, _, d in r["buckets"]) - last_start
            comm.append(busy); hidden.append(max(0.0, busy - exposed))
        out.update(buckets=len(rows[0]["buckets"]), comm_ms=1e3 * float(numpy.median(comm)),
                   overlap=float(numpy.sum(hidden) / numpy.sum(comm)),
                   example=[(i, nb, round(1e3 * a, 3), round(1e3 * d, 3)) for i, nb, a, d in rows[-1]["buckets"]])
    if rank == 0:
        print(json.dumps(out))

with threadpool_limits(1, "blas"):
    for kind in ("mlp", "gpt"):
        for cap in (25, 0.1):
            run(kind, cap)

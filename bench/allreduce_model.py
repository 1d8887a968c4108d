"""How far data parallelism would scale, on paper: a ring all-reduce cost model fed with measured inputs.

A ring all-reduce of S bytes over N ranks sends each rank's share around the ring twice (reduce-
scatter, then all-gather): 2 (N - 1) messages of S / N bytes each, so

    t_allreduce(N) = 2 (N - 1) / N * S / bandwidth  +  2 (N - 1) * latency

With the per-rank batch fixed (weak scaling: each rank adds its batch), one step costs the
measured compute time t_step plus the all-reduce (no overlap of the two: the trainer reduces
after the backward), so the parallel efficiency is

    E(N) = t_step / (t_step + t_allreduce(N))

Sending float16 instead of float32 (ChainerMN's allreduce_grad_dtype) halves S.
"""

# name: (bandwidth in bytes/s, latency per message in s); links as commonly quoted
NETWORKS = {
    "10 Gb/s Ethernet": (10e9 / 8, 50e-6),
    "100 Gb/s Ethernet": (100e9 / 8, 10e-6),
    "InfiniBand HDR (200 Gb/s)": (200e9 / 8, 2e-6),
}
RANKS = (8, 64, 256)


def ring_seconds(nbytes, ranks, bandwidth, latency):
    """The ring all-reduce's time for nbytes on `ranks` ranks (0 for one rank)."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def efficiency(step_seconds, nbytes, ranks, bandwidth, latency):
    """Parallel efficiency of a step of step_seconds compute with an all-reduce of nbytes."""
    return step_seconds / (step_seconds + ring_seconds(nbytes, ranks, bandwidth, latency))


def print_model(rows, say=print):
    """rows: bench.mpi_step measurements ({"preset", "step_ms", "grad_bytes"}, per rank)."""
    say("| preset | gradient MB | step ms | network | " + " | ".join(f"E({n})" for n in RANKS)
        + " | float16: " + " | ".join(f"E({n})" for n in RANKS) + " |")
    say("|---|---|---|---|" + "---|" * (2 * len(RANKS)))
    for row in rows:
        step, nbytes = row["step_ms"] / 1e3, row["grad_bytes"]
        for name, (bw, lat) in NETWORKS.items():
            e32 = [efficiency(step, nbytes, n, bw, lat) for n in RANKS]
            e16 = [efficiency(step, nbytes / 2, n, bw, lat) for n in RANKS]
            say(f"| {row['preset']} | {nbytes / 1e6:.1f} | {row['step_ms']:.0f} | {name} | "
                + " | ".join(f"{e:.0%}" for e in e32) + " | " + " | ".join(f"{e:.0%}" for e in e16) + " |")

"""How many threads a command computes on: torch's intra-op pool and numpy's BLAS together."""

from __future__ import annotations

__all__ = ["limit_threads"]


def limit_threads(n: int) -> None:
    """Run torch's intra-op pool and numpy's BLAS (OpenBLAS, MKL; through threadpoolctl) on ``n`` threads
    each for the rest of the process; 0 leaves both at their defaults.

    The BLAS too, because the preservation set's PCA and k-means run in numpy: with torch on one thread and
    OpenBLAS on every core, two compressions side by side on 2 cores (the zoo's ``--jobs 2``) had OpenBLAS's
    threads spinning against each other, and the PCA of 1,149 embeddings of 256 values took 2.2 s instead of
    0.15 s. One BLAS thread also makes numpy's results independent of the machine's core count.
    """
    if not n:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n)  # applies at once, process-wide, until restored (never, here)

"""Root conftest: one compute thread per test worker.

CI runs `pytest -n 2` on 2 cores: two workers, each running tests or a notebook kernel. With torch's default of one
intra-op thread per core, that is four busy threads on two cores, and OpenMP's spinning makes small toy-model steps
several times slower. One thread per worker (inherited by the notebook kernels it starts) uses the cores fully.
"""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

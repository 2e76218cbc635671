"""Root conftest: one compute thread per test worker, and the toy models the notebooks load trained up front.

CI runs `pytest -n 2` on 2 cores: two workers, each running tests or a notebook kernel. With torch's default of one
intra-op thread per core, that is four busy threads on two cores, and OpenMP's spinning makes small toy-model steps
several times slower. One thread per worker (inherited by the notebook kernels it starts) uses the cores fully.

A notebook trains a cached toy model the first time it asks for one, inside a single cell, where nbval's per-cell time
limit applies; on a cold cache and a busy machine that cell can run out of time. So when a run includes notebooks,
`pytest_sessionstart` first builds every cached artifact they load (`minillama4.course.warm`), with no time limit,
once: in the xdist controller before any worker starts, or in the only process without xdist. The per-cell limit
stays for everything else. MINILLAMA4_WARM=0 skips it.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Test modules and notebooks that take minutes, longest first. They are started first, so that the two workers of
# `pytest -n 2` (which hand out whole modules, `--dist loadscope`) finish at about the same time instead of one of
# them starting a ten-minute module when the other is nearly done.
LONG_FIRST = ("tests/test_posttrain.py", "notebooks/03_moe_layer.ipynb", "tests/test_extensions.py",
              "tests/test_grading.py", "tests/test_parallel.py", "notebooks/04_attention_irope.ipynb",
              "notebooks/07_distillation.ipynb")


def pytest_collection_modifyitems(config, items):
    rank = {ROOT / p: i for i, p in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)), len(LONG_FIRST)))  # stable: the rest keep their order

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def _runs_notebooks(config) -> bool:
    """Whether the paths this run collects from (its arguments, else testpaths) hold any notebook."""
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0])
        if path.suffix == ".ipynb" or (path.is_dir() and any(
                ".ipynb_checkpoints" not in p.parts for p in path.rglob("*.ipynb"))):
            return True
    return False


def pytest_sessionstart(session):
    config = session.config
    if (os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("MINILLAMA4_WARM") == "0"
            or config.option.collectonly or not _runs_notebooks(config)):
        return
    from minillama4.course.profile import current_profile
    from minillama4.course.warm import warm

    if getattr(config.option, "numprocesses", None):  # build them as the workers will look them up: the cache key
        import torch  # includes the thread count, and each worker computes with one thread (see above)

        torch.set_num_threads(1)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter else print
    say(f"minillama4: building the toy models the notebooks load (profile {current_profile()}; "
        "cached ones are only loaded)")
    try:
        warm(report=lambda line: say("  " + line), jobs=2 if getattr(config.option, "numprocesses", None) else 1)
    except Exception as e:  # the notebooks that need it will fail with the same error, each in its own test
        say(f"minillama4: warming the cache failed: {type(e).__name__}: {e}")

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import torch  # noqa: E402

# Small CPU tensors gain nothing from a second thread, and on a busy 2-core machine the intra-op
# thread pool's waiting made steps 10x slower: the suite runs single-threaded.
torch.set_num_threads(1)


def hide_the_gpu(mp):
    """Make train.py, render.py and the training loop see no GPU while ``mp`` (a pytest MonkeyPatch) holds: for tests
    of exact results (a resumed run's PLY byte for byte, a model compared row by row with CPU tensors), which the
    GPU's atomic sums would not give. On a machine without one (CI) nothing changes."""
    mp.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def on_the_cpu(monkeypatch):
    """hide_the_gpu for one test."""
    hide_the_gpu(monkeypatch)


@pytest.fixture(scope="module", autouse=True)
def _cpu_only_modules(request):
    """hide_the_gpu for every test of a module that sets ``CPU_ONLY = True``, its module-scoped runs included (an
    autouse fixture comes before the module's own)."""
    if not getattr(request.module, "CPU_ONLY", False):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        hide_the_gpu(mp)
        yield

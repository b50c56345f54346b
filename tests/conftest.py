import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

# Small CPU tensors gain nothing from a second thread, and on a busy 2-core machine the intra-op
# thread pool's waiting made steps 10x slower: the suite runs single-threaded.
torch.set_num_threads(1)

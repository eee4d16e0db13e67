"""Generate MNIST-1D offline into one .npz (what the prepare_data rule writes for `mnist1d`).

    python -m kdflow.data resources/mnist1d.npz   # about 1 s

The seed (42) is the one `dataset.seed` defaults to, so the file equals the pipeline's.
"""

import sys
from pathlib import Path

from kdflow.data import load_mnist1d, save_raw

if __name__ == "__main__":
    save_raw(load_mnist1d(None, 42), Path(sys.argv[1]))

"""What exists, by name, without importing torch: config validation runs when Snakemake parses
the workflow, and importing torch there would cost every `snakemake` call ~3 s.

tests/test_registry.py checks these against the real loaders and model constructors.
"""

# dataset -> rank of one input (1: a signal (L,), 3: an image (C, H, W))
DATASET_RANK = {"mnist1d": 1, "mnist": 3, "cifar10": 3}
# datasets kdflow makes itself; the others are read from disk under dataset.root
GENERATED = {"mnist1d"}
# model family -> (input rank it takes or None for any, its size knobs)
FAMILIES = {
    "mlp": (None, ("hidden", "dropout")),
    "cnn1d": (1, ("channels", "layers", "kernel", "dropout")),
    "cnn2d": (3, ("channels", "layers")),
    "resnet": (3, ("depth", "width")),
}

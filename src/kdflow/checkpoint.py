"""Saving and loading of training state, trained models and cached teacher outputs.

Everything is written atomically (a killed save leaves the old file) and read with
`torch.load(weights_only=True)`, so no arbitrary pickle from a shared filesystem is executed.
A trained model file carries its spec, so `load_model(path)` rebuilds the right class; its sha256
is recorded by the job that wrote it and checked by every job that reads it.

`torch.load` does not check the CRC-32 that `torch.save` stores for every record of its zip file:
a flipped bit in a tensor loads silently as a wrong weight. `load_checkpoint` checks them first, so
a corrupted resume state (checkpoint.pt) or teacher-logit cache (logits.pt) is refused by name.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from kdflow.atomic import atomic_write, sha256
from kdflow.models import build_model


class CorruptFileError(RuntimeError):
    """A stored file cannot be read or does not match its recorded hash."""


def save_checkpoint(path: Path, obj: dict) -> None:
    # Through a file object: given a path, torch names the zip's root folder after the (random)
    # temporary file, so equal contents would give different bytes and sha256s.
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


RECOVERY = "delete it and rerun: the job that writes it starts over"


def _check_crc(path: Path) -> None:
    """Raise if any record of a torch zip file fails its stored CRC-32 (about 0.3 ms per MB)."""
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    if bad is not None:
        raise ValueError(f"record {bad} fails its CRC-32 check")


def load_checkpoint(path: Path, recovery: str = RECOVERY) -> dict:
    """Load a file written by `save_checkpoint`; `recovery` tells the reader what to do if it is bad."""
    try:
        _check_crc(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torn or garbled: BadZipFile, bad CRC, RuntimeError, UnpicklingError
        reason = f"{type(e).__name__}: {e}"
        raise CorruptFileError(f"{path} is corrupt or unreadable ({reason}); {recovery}") from e


def save_model(path: Path, model: nn.Module, spec: dict, input_shape, num_classes: int) -> str:
    """Write a trained model with what rebuilds it; return the file's sha256."""
    save_checkpoint(
        path,
        {
            "spec": dict(spec),
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            # Each tensor in its own storage: the file's bytes (and sha256, which readers record)
            # depend on the values only, not on how the model holds them (kdflow.flat: views of
            # one buffer, which torch.save would write whole, with offsets).
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        },
    )
    return sha256(path)


def verify(path: Path, expected_sha256: str | None) -> None:
    if expected_sha256 and sha256(path) != expected_sha256:
        raise CorruptFileError(
            f"{path} does not match the sha256 recorded when it was written; it was changed or "
            "corrupted. Delete it and rerun to retrain it"
        )


def load_model(path: Path, expected_sha256: str | None = None) -> nn.Module:
    verify(path, expected_sha256)
    ck = load_checkpoint(path)
    model = build_model(ck["spec"], tuple(ck["input_shape"]), ck["num_classes"])
    model.load_state_dict(ck["state_dict"])
    return model.eval()

"""Saving and loading of training state, trained models and cached teacher outputs.

Everything is written atomically (a killed save leaves the old file) and read with
`torch.load(weights_only=True)`, so no arbitrary pickle from a shared filesystem is executed.
A trained model file carries its spec, so `load_model(path)` rebuilds the right class; its sha256
is recorded by the job that wrote it and checked by every job that reads it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kdflow.atomic import atomic_write, sha256
from kdflow.models import build_model


class CorruptFileError(RuntimeError):
    """A stored file cannot be read or does not match its recorded hash."""


def save_checkpoint(path: Path, obj: dict) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torn or garbled files raise RuntimeError, EOFError, UnpicklingError
        raise CorruptFileError(
            f"{path} is unreadable ({type(e).__name__}: {e}); delete it and rerun: the job that "
            "writes it starts over"
        ) from e


def save_model(path: Path, model: nn.Module, spec: dict, input_shape, num_classes: int) -> str:
    """Write a trained model with what rebuilds it; return the file's sha256."""
    save_checkpoint(
        path,
        {
            "spec": dict(spec),
            "input_shape": list(input_shape),
            "num_classes": num_classes,
            "state_dict": model.state_dict(),
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

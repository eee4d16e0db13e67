"""A class-per-directory image tree: `<root>/train/<class>/<image>` and `<root>/test/<class>/...`
(png, jpg, bmp, gif, webp), classes numbered in sorted order of the train directories' names. Each
image is decoded once (RGB), resized to `image_size` (H, W), and stored with the dataset's arrays
(the `prepare_data` job's .npz): training never decodes an image.

    load_imagefolder(Path("/data/pets"), seed=0, image_size=(32, 32))   # x: (N, 3, 32, 32) uint8
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdflow import dataset_files as files
from kdflow.data.raw import RawData

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def classes(root: Path) -> list[str]:
    return sorted(d.name for d in (Path(root) / "train").iterdir() if d.is_dir())


def _part(base: Path, names: list[str], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image  # Pillow comes with matplotlib

    xs, ys = [], []
    for label, name in enumerate(names):
        for path in sorted((base / name).iterdir()) if (base / name).is_dir() else []:
            if path.suffix.lower() not in SUFFIXES:
                continue
            with Image.open(path) as im:
                im = im.convert("RGB").resize((size[1], size[0]), Image.Resampling.BILINEAR)
                xs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise FileNotFoundError(f"no images ({', '.join(sorted(SUFFIXES))}) under {base}/<class>/")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def load_imagefolder(root: Path | None, seed: int, image_size: tuple[int, int] = (32, 32)) -> RawData:
    base = files.require(root, "imagefolder")
    names = classes(base)
    extra = sorted(d.name for d in (base / "test").iterdir() if d.is_dir() and d.name not in names)
    if extra:
        raise ValueError(
            f"{base / 'test'}: classes {extra} have no training directory under {base / 'train'}"
        )
    return RawData(*_part(base / "train", names, image_size), *_part(base / "test", names, image_size))

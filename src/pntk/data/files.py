"""Finding a dataset's files in the directory a user names, or in its standard subfolder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pntk.data.errors import DatasetNotFoundError


def locate(
    root: str | Path | None,
    files: Sequence[Sequence[str]],
    *,
    dataset: str,
    subdirs: Sequence[str],
    source: str,
    hint: str = "",
) -> list[Path]:
    """The paths of the files a dataset needs, all from one directory: ``root`` or one of its ``subdirs``.

    The first directory that holds every file wins; a file may go by several names (an uncompressed name
    before its ``.gz``), the first one present is taken.

    Args:
        root: the directory the user named.
        files: for each file needed, its accepted names in order of preference.
        dataset: the dataset's name, for messages.
        subdirs: standard subfolders of ``root`` that may hold the files (as the archives extract).
        source: where the files come from, for messages.
        hint: an extra sentence for the message when files are missing.

    Returns:
        One path per entry of ``files``.

    Raises:
        DatasetNotFoundError: ``root`` is ``None`` or does not exist, or a file is missing; the message lists
            the directories searched and the files expected.
    """
    expected = ", ".join(" or ".join(names) for names in files)
    where = f"the directory that holds {expected} (or a parent with the subfolder {' or '.join(subdirs)})"
    if root is None:
        raise DatasetNotFoundError(
            f"{dataset} is read from files and no directory was given: pass root=, {where}. {source}"
        )
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"{dataset}: the directory {root} does not exist; root must be {where}. {source}", root
        )

    candidates = [root] + [root / sub for sub in subdirs if (root / sub).is_dir()]
    found = [[_first_present(directory, names) for names in files] for directory in candidates]
    # The directory with the most files present is the one the user meant; report what it lacks.
    best = max(range(len(candidates)), key=lambda k: (sum(p is not None for p in found[k]), -k))
    missing = [names for names, path in zip(files, found[best], strict=True) if path is None]
    if missing:
        searched = " and ".join(str(d) for d in candidates)
        first = candidates[best] / missing[0][0]
        raise DatasetNotFoundError(
            f"{dataset}: {' or '.join(missing[0])} not found in {candidates[best]} "
            f"(searched {searched}). Expected the files {expected}. {source}" + (f" {hint}" if hint else ""),
            first,
        )
    return [path for path in found[best] if path is not None]


def _first_present(directory: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    return None


def file_split(split: str) -> str:
    """``"train"`` or ``"test"``, the splits that datasets store as files.

    Raises:
        ValueError: any other value.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test' to read files, got {split!r}")
    return str(split)

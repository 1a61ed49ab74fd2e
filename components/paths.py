"""Audio paths are stored relative to a data root; anything that escapes the root is refused."""
from pathlib import Path, PurePosixPath


class UnsafePathError(ValueError):
    """A manifest path is absolute or climbs out of its data root."""


def relative_audio_path(path: Path | str, root: Path | str) -> str:
    """`path` as a '/'-separated path relative to `root`; refuses paths outside the root."""
    root_resolved = Path(root).resolve()
    resolved = Path(path).resolve()
    try:
        rel = resolved.relative_to(root_resolved)
    except ValueError:
        raise UnsafePathError(f"{path} is outside the data root {root}") from None
    return rel.as_posix()


def resolve_audio_path(rel: str, root: Path | str) -> Path:
    """Join a manifest path to its data root, refusing absolute paths and '..' escapes."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or Path(rel).is_absolute() or ".." in pure.parts or not rel:
        raise UnsafePathError(f"audio path {rel!r} must be relative to the data root, without '..'")
    root_resolved = Path(root).resolve()
    full = (root_resolved / Path(*pure.parts)).resolve()
    if full != root_resolved and root_resolved not in full.parents:
        raise UnsafePathError(f"audio path {rel!r} escapes the data root {root} (symlink?)")
    return full

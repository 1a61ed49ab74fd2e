"""Corpus loaders by name: each reads one corpus's own on-disk format into a LoadedCorpus.

Options per corpus (keyword arguments of `load_corpus`): cremad takes `audio_dir`; the others
take none.
"""
import inspect
from collections.abc import Callable
from pathlib import Path

from components.prepare.loaders.cremad import load_cremad
from components.prepare.loaders.emodb import load_emodb
from components.prepare.loaders.iemocap import load_iemocap
from components.prepare.loaders.msp_podcast import load_msp_podcast
from components.prepare.loaders.ravdess import load_ravdess
from components.prepare.records import LoadedCorpus

LOADERS: dict[str, Callable[..., LoadedCorpus]] = {
    "ravdess": load_ravdess,
    "cremad": load_cremad,
    "msp_podcast": load_msp_podcast,
    "iemocap": load_iemocap,
    "emodb": load_emodb,
}


def load_corpus(name: str, data_dir: Path | str, **options) -> LoadedCorpus:
    """Run the loader registered as `name`; a clear error for an unknown name or option."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise ValueError(
            f"no loader for corpus {name!r}; known: {', '.join(sorted(LOADERS))}"
        ) from None
    accepted = [p for p in inspect.signature(loader).parameters if p != "data_dir"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"corpus {name!r} does not take option(s) {', '.join(unknown)} "
            f"(it takes: {', '.join(accepted) or 'none'})"
        )
    return loader(Path(data_dir), **options)

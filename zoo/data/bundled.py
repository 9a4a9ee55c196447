"""The out-of-the-box demo photos: CC0 / public-domain colour photos that ship inside the
wheels of scikit-image (``skimage/data``) and sporco (``sporco/data``).

The files are located with ``importlib.util.find_spec``, which finds a top-level package's
folder without importing it (scikit-image's import is slow and pulls in scipy). The licence of
each photo is taken from the package's own notes: the docstrings of ``skimage/data/_fetchers.py``
and ``sporco/data/README.rst``. Photos whose licence is unclear (sporco's barbara and kodim23,
scikit-image's motorcycle and ihc) are not listed. sporco's monarch is the Set14 "monarch"
image pixel for pixel, so it is flagged ``in_evaluation_sets`` and left out by default: nobody
should train or calibrate on evaluation images.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError

INSTALL_HINT = "pip install scikit-image sporco (or pip install mobile-restoration-zoo[data])"


@dataclass(frozen=True)
class BundledPhoto:
    """One demo photo: ``name``, ``path`` to the file, ``license`` ("CC0" or "public domain"),
    ``credit`` (photographer / source), ``package`` that ships it, and whether the photo is
    also a Set5/Set14/CBSD68 image (``in_evaluation_sets``)."""

    name: str
    path: Path
    license: str
    credit: str
    package: str
    in_evaluation_sets: bool = False


@dataclass(frozen=True)
class _CatalogueEntry:
    name: str
    package: str
    file: str  # relative to the package's folder
    license: str
    credit: str
    in_evaluation_sets: bool = False


_WATERLOO = (
    "University of Waterloo BragZone test images, free of copyright restrictions "
    "(as stated in sporco/data/README.rst)"
)

#: Every photo the zoo knows of, in display order.
CATALOGUE: tuple[_CatalogueEntry, ...] = (
    _CatalogueEntry(
        "astronaut", "skimage", "data/astronaut.png", "public domain",
        "NASA Great Images database: astronaut Eileen Collins (no known copyright restrictions)",
    ),
    _CatalogueEntry("chelsea", "skimage", "data/chelsea.png", "CC0", "Stefan van der Walt (Chelsea the cat)"),
    _CatalogueEntry(
        "coffee", "skimage", "data/coffee.png", "CC0", "Rachel Michetti, courtesy of Pikolo Espresso Bar"
    ),
    _CatalogueEntry(
        "rocket", "skimage", "data/rocket.jpg", "public domain", "SpaceX: DSCOVR launch on a Falcon 9"
    ),
    _CatalogueEntry("sail", "sporco", "data/sail.png", "public domain", _WATERLOO),
    _CatalogueEntry("tulips", "sporco", "data/tulips.png", "public domain", _WATERLOO),
    _CatalogueEntry("monarch", "sporco", "data/monarch.png", "public domain", _WATERLOO, in_evaluation_sets=True),
)

_PACKAGES = ("skimage", "sporco")


def package_folder(package: str) -> Path | None:
    """The folder of installed top-level package ``package``, found without importing it;
    None when it is not installed."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def bundled_photos(*, include_evaluation_overlap: bool = False) -> list[BundledPhoto]:
    """The demo photos present in this environment, in catalogue order.

    Photos that are also evaluation images are left out unless
    ``include_evaluation_overlap=True``. Raises :class:`ZooError` when neither scikit-image
    nor sporco is installed (or none of the files is there).
    """
    folders = {package: package_folder(package) for package in _PACKAGES}
    if not any(folders.values()):
        raise ZooError("the bundled demo photos need scikit-image or sporco, and neither is installed", INSTALL_HINT)
    photos = []
    for entry in CATALOGUE:
        folder = folders[entry.package]
        if folder is None or (entry.in_evaluation_sets and not include_evaluation_overlap):
            continue
        path = folder / entry.file
        if path.is_file():
            photos.append(
                BundledPhoto(entry.name, path, entry.license, entry.credit, entry.package, entry.in_evaluation_sets)
            )
    if not photos:
        raise ZooError("no bundled demo photo found in the installed scikit-image / sporco", INSTALL_HINT)
    return photos


def bundled_photo(name: str) -> BundledPhoto:
    """The bundled photo called ``name`` (see :data:`CATALOGUE`)."""
    photos = {photo.name: photo for photo in bundled_photos(include_evaluation_overlap=True)}
    if name not in photos:
        raise ZooError(f"no bundled photo named {name!r}", f"use one of {', '.join(photos)}")
    return photos[name]

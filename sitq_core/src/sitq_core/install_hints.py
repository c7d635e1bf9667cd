"""The pip lines that sitq's messages give for a package that is missing.

sitq is not on PyPI yet, and the name ``sitq`` there belongs to an unrelated
project: ``pip install 'sitq[postgres]'`` run in a virtual environment set up
from a checkout installs that project over the facade. So every hint names the
package's folder in a source checkout as well.
"""

from __future__ import annotations

__all__ = ["checkout_folder", "install_hint"]


def checkout_folder(dist: str) -> str:
    """The folder of the distribution ``dist`` in a checkout of sitq: ``sitq-postgres`` -> ``./sitq_postgres``."""
    return "./" + dist.replace("-", "_")


def install_hint(dist: str, extra: str) -> str:
    """How to install ``dist``: from a checkout's folder first, then by its extra (``sitq[postgres]``) as released.

    The checkout's command leads: the extra's, run against PyPI today, would
    install the unrelated project that holds the name ``sitq`` there.
    """
    return (
        f"from a source checkout of sitq, in its folder: pip install {checkout_folder(dist)}; or, where sitq's own "
        f"release is on your package index: pip install {extra} (pip install '{extra}' in zsh, which expands "
        "brackets). Not from PyPI yet: the name sitq there belongs to an unrelated project, which would replace "
        "this one"
    )

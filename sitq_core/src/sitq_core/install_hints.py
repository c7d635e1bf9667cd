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
    """How to install ``dist``: by its extra (``sitq[postgres]``, as released) or from a checkout's folder."""
    return (
        f"pip install {extra} (pip install '{extra}' in zsh, which expands brackets), "
        f"or from a source checkout of sitq, in its folder: pip install {checkout_folder(dist)}"
    )

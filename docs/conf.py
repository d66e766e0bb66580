"""Sphinx configuration for minidocker's docs: the course, the architecture, the references.

Build with warnings as errors, from the repository's top directory::

    sphinx-build -W -b html docs docs/_build

Chapters are Markdown (read by MyST), so a chapter's README reads well on
GitHub and on the site alike; code is never pasted into them but pulled from
the package with ``literalinclude`` and ``:pyobject:``.
"""

import os
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(DOCS))          # the package, without installing it
sys.path.insert(0, os.path.join(DOCS, "_ext"))      # minidocker_docs

project = "minidocker"
author = "the minidocker authors"
copyright = "the minidocker authors, MIT licence"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
    "minidocker_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

# Chapters link to headings the way GitHub does (#check-your-work).
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_default_options = {"undoc-members": False}

html_theme = "alabaster"
html_title = "minidocker"
html_theme_options = {
    "description": "A Docker-like container engine in plain Python, written to be read.",
    "fixed_sidebar": True,
}

"""Sphinx configuration: numpydoc API reference, a sphinx-gallery of runnable examples.

    make -C docs html          # or: sphinx-build -W --keep-going -b html docs docs/_build/html
"""
import os

import convexgan

project = "convexgan"
author = "the convexgan developers"
copyright = "2026, the convexgan developers"
release = version = convexgan.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "examples/README.rst"]
autosummary_generate = True
autodoc_default_options = {"members": False, "inherited-members": False}
numpydoc_show_class_members = False  # the reference pages list the methods themselves
numpydoc_xref_param_type = False
default_role = "code"

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": "/plot_",
    "abort_on_example_error": True,
    "min_reported_time": 1,
    "reference_url": {"convexgan": None},
    "doc_module": ("convexgan", "layerwise"),
    "backreferences_dir": "generated/backreferences",
    "capture_repr": (),
}
os.environ.setdefault("MPLBACKEND", "Agg")

html_theme = "pydata_sphinx_theme"
html_title = f"convexgan {release}"
html_theme_options = {"navigation_with_keys": False, "show_prev_next": False}
html_static_path = []

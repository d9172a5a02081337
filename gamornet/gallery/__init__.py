"""Galleries: static HTML pages of the galaxies behind a prediction table, section by label.

:func:`make_gallery` reads a prediction table and the images prediction was
given, matches them by id (as :func:`gamornet.predict.inputs.list_images`
names them), and writes one self-contained page (base64 PNG thumbnails,
inline styles, nothing fetched, no script): a summary, then a section per
label, the borderline cases of the threshold policy and, with true labels,
every kind of mistake (:mod:`gamornet.gallery.sections`).  Only the images
shown are read, so a table of millions of rows gives a page of bounded size.
Every thumbnail of a page has the same asinh stretch and display interval
(:mod:`gamornet.gallery.thumbnails`).
"""

from gamornet.gallery.make import NoRecordedImagesError, make_gallery, recorded_images
from gamornet.gallery.sections import SECTION_NAMES

__all__ = ["make_gallery", "recorded_images", "NoRecordedImagesError", "SECTION_NAMES"]

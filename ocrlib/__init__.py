"""ocrlib: the thin library under the MambaOCR workbook notebooks.

One module per concept: :mod:`charset`, :mod:`fonts`, :mod:`synth`, :mod:`data`,
:mod:`clean`, :mod:`notebook`. Importing ``ocrlib`` itself loads nothing heavy.
"""

__version__ = "0.1.0"

"""The one place the version is written; pyproject, ``kimiflow.__version__``, the User-Agent and
``kimiflow --version`` all read it from here."""

__version__ = "0.1.0"

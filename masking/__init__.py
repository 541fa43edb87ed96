"""hoopd masking engine: sensitive values never leave the gateway unmasked.

Entry point: :func:`build_masker` (once per connection) -> :class:`Masker`.
"""

from .config import AllowEntry, MaskingConfig, Recognizers, Replacement, Rule
from .engine import Counts, Masker, build_masker
from .jsonmask import JsonLinesMasker, JsonMasker
from .recognizers import BUILTINS, BY_ID, CREDENTIAL_IDS, PERSONAL_IDS, Recognizer
from .rows import Column, RowMasker
from .stream import StreamMasker

__all__ = [
    "BUILTINS",
    "BY_ID",
    "CREDENTIAL_IDS",
    "PERSONAL_IDS",
    "AllowEntry",
    "Column",
    "Counts",
    "JsonLinesMasker",
    "JsonMasker",
    "Masker",
    "MaskingConfig",
    "Recognizer",
    "Recognizers",
    "Replacement",
    "RowMasker",
    "Rule",
    "StreamMasker",
    "build_masker",
]

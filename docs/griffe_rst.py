"""Griffe extension for the docs build: the reStructuredText in pntk's docstrings reads as Markdown.

Roles such as ``:func:`kernel``` become code spans, and a ``.. math::`` directive leaves its indented formula
as a code block.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc|math):`~?([^`]+)`")
_MATH = re.compile(r"^[ \t]*\.\. math::[ \t]*$", re.MULTILINE)


class RestructuredTextAsMarkdown(Extension):
    """Rewrites each docstring once, when its object is loaded."""

    def on_instance(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _MATH.sub("", _ROLE.sub(r"`\1`", obj.docstring.value))

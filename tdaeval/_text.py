"""reStructuredText in docstrings to plain text, for what the command line prints (``--help``, ``tdaeval ls``).

The docstrings stay reStructuredText for the Sphinx documentation; a terminal
shows them without the markup: inline literals lose their double backquotes,
a role such as :class:`~tdaeval.suites.SuiteResult` shows its short name
(SuiteResult), one with a title such as :doc:`the CI page <ci>` its title,
strong and emphasised text lose their asterisks, and the lines of each
paragraph are joined (bullet lists and indented blocks keep theirs).
"""

from __future__ import annotations

import inspect
import re

__all__ = ["rst_to_plain", "summary"]

# :role:`text`, :domain:role:`text` (Sphinx roles such as :class:, :func:, :doc:, :math:, :py:meth:)
_ROLE = re.compile(r":(?:[A-Za-z][\w-]*:)?[A-Za-z][\w-]*:`([^`]+)`")
# `title <target>`_ and `title <target>`__ (hyperlinks), `name`_ (references)
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
_REF = re.compile(r"`([^`]+)`__?")
_LITERAL = re.compile(r"``(.+?)``")
_DEFAULT_ROLE = re.compile(r"(?<![`\w])`([^`]+)`(?![`\w])")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])")
_BULLET = re.compile(r"^\s*(?:[*+-]|\d+\.|#\.)\s")


def _role_text(match: re.Match) -> str:
    text = match.group(1)
    titled = re.fullmatch(r"(.+?)\s*<[^<>]+>", text, flags=re.S)
    if titled:  # :doc:`title <page>` -> title
        return titled.group(1)
    text = text.lstrip("!")
    if text.startswith("~"):  # :class:`~a.b.C` -> C
        return text[1:].rsplit(".", 1)[-1]
    return text


def _inline(text: str) -> str:
    text = _ROLE.sub(_role_text, text)
    text = _LITERAL.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    text = _DEFAULT_ROLE.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = re.sub(r"\\ ", "", text)  # rst's escaped space joins words: ``x``\ s
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.M)  # "Example::" introduces a literal block


def rst_to_plain(text: str | None) -> str:
    """``text`` (a docstring, reStructuredText) as plain text.

    Parameters
    ----------
    text : str or None
        The docstring; it is dedented first (:func:`inspect.cleandoc`).

    Returns
    -------
    str
        Paragraphs separated by one blank line, each on one line; bullet
        lists and indented (literal) blocks keep their lines. ``""`` for
        ``None`` or an empty text.
    """
    if not text:
        return ""
    paragraphs = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(text).strip()):
        lines = block.splitlines()
        if any(_BULLET.match(line) for line in lines) or lines[0][:1].isspace():  # a list or an indented block
            paragraphs.append("\n".join(_inline(line.rstrip()) for line in lines))
        else:
            paragraphs.append(_inline(" ".join(line.strip() for line in lines)))
    return "\n\n".join(p for p in paragraphs if p.strip())


def summary(text: str | None) -> str:
    """The first paragraph of a docstring as one plain line (``""`` when there is none)."""
    plain = rst_to_plain(text)
    return plain.split("\n\n", 1)[0].replace("\n", " ") if plain else ""

"""Text files of a corpus as lines: UTF-8 with or without a BOM, any line ends, cp1252 lines tolerated."""

from __future__ import annotations

import codecs


def decode_lines(raw: bytes) -> list[str]:
    """The lines of a file that should be UTF-8, without line ends.

    A re-saved copy may carry a BOM, CRLF or CR line ends, or cp1252 bytes (e.g. a 0x92 apostrophe): the BOM is
    dropped, every line end accepted, and a line that is not valid UTF-8 is read as cp1252 (undefined bytes
    replaced), so one odd byte neither stops the parse nor garbles the UTF-8 lines around it.
    """
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    lines = []
    for piece in raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        try:
            lines.append(piece.decode("utf-8"))
        except UnicodeDecodeError:
            lines.append(piece.decode("cp1252", errors="replace"))
    if lines and lines[-1] == "":
        lines.pop()
    return lines

# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The HTML report as a person and a test see it: parsed (the charts, the marks, the audit rows,
anything that would need a network) and opened in headless Chromium (Debian's chromium) for a
screenshot, whose pixels are read back (a PNG decoder in pure Python: no imaging library)."""
import html.parser
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Parser(html.parser.HTMLParser):
    def __init__(self):
        html.parser.HTMLParser.__init__(self, convert_charrefs=True)
        self.stack = []
        self.figures = {}      # id -> {"source", "svg": count, "links": [hrefs]}
        self.marks = []        # the rows of the marks table (their data-* attributes)
        self.audit = []        # the audit rows
        self.scripts = 0
        self.external = []     # src / href / xlink:href to another host
        self.links = 0
        self.ids = {}
        self._figure = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"]] = dict(a, tag=tag)
        for key in ("src", "href", "xlink:href", "action"):
            value = (a.get(key) or "").strip()
            if value.startswith(("http:", "https:", "//", "ftp:")):
                self.external.append(value)
        if tag == "script":
            self.scripts += 1
        if tag == "link":
            self.links += 1
        if tag == "figure":
            self._figure = a.get("id")
            self.figures[self._figure] = {"source": a.get("data-source"), "svg": 0, "links": []}
        elif self._figure:
            if tag == "svg":
                self.figures[self._figure]["svg"] += 1
            href = a.get("xlink:href") or a.get("href")
            if tag == "a" and href and href.startswith("#"):
                self.figures[self._figure]["links"].append(href[1:])
        if tag == "tr" and "mark" in (a.get("class") or "").split():
            self.marks.append({"id": a.get("id"), "kind": a.get("data-kind"), "at": a.get("data-at"),
                               "module": a.get("data-module") or "", "scenario": a.get("data-scenario") or "",
                               "audit_ids": [int(i) for i in (a.get("data-audit-ids") or "").split(",") if i]})
        if tag == "tr" and "audit-row" in (a.get("class") or "").split():
            self.audit.append({"id": int(a["data-audit-id"]), "module": a.get("data-module")})

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None

    def handle_data(self, data):
        self._text.append(data)


def parse(path):
    """The page's facts: figures, marks, audit rows, scripts, links, external references, ids, text."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    p = _Parser()
    p.feed(text)
    p.close()
    return {"figures": p.figures, "marks": p.marks, "audit": p.audit, "scripts": p.scripts, "links": p.links,
            "external": p.external, "ids": p.ids, "text": " ".join("".join(p._text).split()), "html": text}


def screenshot(path, png, width=1100, height=2400, timeout=120):
    """Open the page in headless Chromium (file://, no network) and save a screenshot; returns the PNG path."""
    binary = chromium()
    if not binary:
        raise RuntimeError("chromium is not installed (apt-get install chromium; scripts/setup.sh installs it)")
    profile = tempfile.mkdtemp(prefix="k2-chromium-")
    try:
        proc = subprocess.run([binary] + CHROMIUM_FLAGS + [
            "--user-data-dir=" + profile, "--screenshot=" + png, "--window-size=%d,%d" % (width, height),
            "file://" + os.path.abspath(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
            check=False)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if not os.path.exists(png):
        raise RuntimeError("chromium wrote no screenshot (rc %d): %s" % (proc.returncode, proc.stdout[-2000:]))
    return png


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_pixels(path):
    """(width, height, rows of bytes in RGB(A)) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    with open(path, "rb") as fh:
        data = fh.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        pos += 12 + length
    width, height, depth, colour, _c, _f, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev, i = [], bytearray(stride), 0
    for _row in range(height):
        kind, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            left = line[x - bpp] if x >= bpp else 0
            up = prev[x]
            corner = prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                line[x] = (line[x] + _paeth(left, up, corner)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def png_summary(path, step=3):
    """Width, height, the share of pixels that are not (near) white, and how many colours, sampling every
    ``step``-th pixel of every ``step``-th row."""
    width, height, bpp, rows = png_pixels(path)
    inked = total = 0
    colours = set()
    for y in range(0, height, step):
        row = rows[y]
        for x in range(0, width * bpp, bpp * step):
            r, g, b = row[x], row[x + 1], row[x + 2]
            total += 1
            colours.add((r >> 3, g >> 3, b >> 3))
            if min(r, g, b) < 235:
                inked += 1
    return {"width": width, "height": height, "inked": inked / float(total or 1), "colours": len(colours)}

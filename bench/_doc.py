# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What every bench shares for its record: the machine it ran on, and its own section of
docs/benchmarks.md, between ``<!-- NAME:begin ... -->`` and ``<!-- NAME:end -->``."""
import os
import platform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "benchmarks.md")


def machine(**versions):
    """CPUs, memory, CPU model, kernel and Python of this host, plus ``versions`` (e.g. pyarrow=...)."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2.0 ** 30
    out = {"nproc": os.cpu_count(), "memory_gib": round(mem, 1), "cpu_model": model,
           "kernel": platform.release(), "python": platform.python_version()}
    out.update(versions)
    return out


def machine_line(m=None):
    """One line for a docs section: ``2 CPUs (model), 23.4 GiB, kernel 6.1``."""
    m = m or machine()
    return "%d CPUs (%s), %.1f GiB, kernel %s" % (m["nproc"], m["cpu_model"], m["memory_gib"], m["kernel"])


def write_section(name, text):
    """Replace the section NAME of docs/benchmarks.md with ``text`` (or append it); returns the path."""
    doc = open(DOC).read() if os.path.exists(DOC) else "# Benchmarks\n\n"
    begin, end = "<!-- %s:begin" % name, "<!-- %s:end -->" % name
    if begin in doc and end in doc:
        doc = doc[:doc.index(begin)] + text + doc[doc.index(end) + len(end) + 1:]
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    with open(DOC, "w") as fh:
        fh.write(doc)
    return DOC

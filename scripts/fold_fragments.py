# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fold changelog fragments to lines of at most 100 characters (ansible-lint's yaml[line-length]
allows 160), each item a folded block scalar, without changing a word of what they say.

An item written as `- name - text: more` is read by YAML as a mapping, which antsibull-changelog
refuses; it is turned back into the one string its author meant.
Usage: .venv/bin/python scripts/fold_fragments.py changelogs/fragments/*.yml
"""
import sys
import textwrap

import yaml


def _wrap(text):
    # Folding joins the lines with single spaces: never break inside a word or at a hyphen.
    return textwrap.wrap(text, 100, break_on_hyphens=False, break_long_words=False)


def fold(path):
    with open(path) as f:
        data = yaml.safe_load(f)
    out, want = ["---"], {}
    for section, items in data.items():
        if isinstance(items, str):  # release_summary
            want[section] = items
            out.append(section + ": >-")
            out.extend("  " + line for line in _wrap(items))
            continue
        out.append(section + ":")
        want[section] = []
        for item in items:
            if isinstance(item, dict):
                (key, value), = item.items()
                item = "%s: %s" % (key, value)
            want[section].append(item)
            out.append("  - >-")
            out.extend("    " + line for line in _wrap(item))
    text = "\n".join(out) + "\n"
    if yaml.safe_load(text) != want:
        raise SystemExit("%s: folding would change the text (double spaces or line breaks in an item?)" % path)
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        fold(arg)

# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Give every Python and shell file of the checkout (tracked or not ignored) the licence header
tests/gates/test_licences.py asks for, after its shebang and coding lines:

    # Copyright (c) K2 Platform Engineering
    # GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
    # SPDX-License-Identifier: GPL-3.0-or-later

An older header (a copyright line with a colon, the licence line without SPDX) is replaced;
files that have an SPDX line, and empty files, are left alone.
Usage: .venv/bin/python scripts/spdx_headers.py   (prints the files it changed)
"""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = ["# Copyright (c) K2 Platform Engineering\n",
          "# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)\n",
          "# SPDX-License-Identifier: GPL-3.0-or-later\n"]


def add_header(path):
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    if not lines or any("SPDX-License-Identifier:" in line for line in lines[:12]):
        return False
    at = 0
    while at < len(lines) and lines[at].startswith("#") and (lines[at].startswith("#!") or "coding" in lines[at]):
        at += 1
    old = [i for i, line in enumerate(lines[:8])
           if line.startswith("# Copyright: ") or line.startswith("# GNU General Public License")]
    for i in reversed(old):
        del lines[i]
    at = min(old + [at])
    lines[at:at] = HEADER
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return True


def main():
    out = subprocess.check_output(["git", "ls-files", "-co", "--exclude-standard", "--", "*.py", "*.sh"],
                                  cwd=ROOT, text=True)
    for name in out.split():
        path = os.path.join(ROOT, name)
        if os.path.isfile(path) and add_header(path):
            print(name)


if __name__ == "__main__":
    main()

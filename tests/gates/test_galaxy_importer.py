# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""galaxy-importer, the check Galaxy and Private Automation Hub run on an uploaded tarball,
accepts the built collection with no error and no warning.

Run offline: its ansible-lint pass is off (tests/gates/test_ansible_lint.py lints the whole
repository with the production profile) and it runs no ansible-test container; it still
loads every plugin and role, runs ansible-doc on each plugin, and checks README, role
READMEs, the changelog, galaxy.yml and meta/runtime.yml.
Alone: .venv/bin/python -m pytest tests/gates/test_galaxy_importer.py
"""
import json
import os
import re
import tarfile

from tests.gates.conftest import BIN, REPO, run

CONFIG = """[galaxy-importer]
RUN_ANSIBLE_LINT = False
RUN_ANSIBLE_TEST = False
RUN_ANSIBLE_DOC = True
CHECK_CHANGELOG = True
LOG_LEVEL_MAIN = INFO
"""


def test_galaxy_importer_accepts_the_tarball(tarball, tmp_path):
    cfg = tmp_path / "galaxy-importer.cfg"
    cfg.write_text(CONFIG)
    rc, out = run([os.path.join(BIN, "python"), "-m", "galaxy_importer.main", tarball], timeout=600, cwd=str(tmp_path),
                  GALAXY_IMPORTER_CONFIG=str(cfg), ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    problems = [line for line in out.splitlines() if re.match(r"^(ERROR|WARNING|CRITICAL)\b", line)]
    assert rc == 0 and not problems, "\n".join(problems) or out[-4000:]
    assert "Importer processing completed successfully" in out, out[-4000:]
    result = json.loads((tmp_path / "importer_result.json").read_text())
    names = {(c["content_type"], c["name"]) for c in result["contents"]}
    roles = sorted(d for d in os.listdir(os.path.join(REPO, "roles")) if os.path.isdir(os.path.join(REPO, "roles", d)))
    assert {("role", r) for r in roles} <= names, names
    assert ("module", "watermark_reset") in names, names
    assert result["docs_blob"]["collection_readme"]["html"]


def test_tarball_has_licence_changelog_and_role_readmes_and_no_lint_cache(tarball):
    names = tarfile.open(tarball).getnames()
    assert "COPYING" in names and "CHANGELOG.rst" in names
    for role in os.listdir(os.path.join(REPO, "roles")):
        if os.path.isdir(os.path.join(REPO, "roles", role)):
            assert "roles/%s/README.md" % role in names, role
    assert not [n for n in names if n == ".ansible" or n.startswith(".ansible/") or "/.ansible/" in n]
    assert not [n for n in names if n.endswith("/.gitkeep") or n == ".gitkeep"]


def test_lint_cache_is_ignored_by_git_and_by_the_build():
    with open(os.path.join(REPO, ".gitignore")) as f:
        assert ".ansible/" in f.read().split()
    import yaml  # pylint: disable=import-outside-toplevel
    with open(os.path.join(REPO, "galaxy.yml")) as f:
        assert ".ansible" in yaml.safe_load(f)["build_ignore"]

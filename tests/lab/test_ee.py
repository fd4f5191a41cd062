# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 11, execution environment: no registry is reachable here and the lab's Debian base image
has neither pip nor the proxy's CA, so the image is not built. Instead the EE's exact content
(ansible-core and ansible-runner as pinned in execution-environment.yml, the Python requirement
file it names, its collections: community.docker and this collection from its tarball) goes into
a clean virtualenv, and diagnose.yml runs from it against the lab, with nothing of the
development venv on its paths."""
import json
import os
import subprocess

from k2lab import lab
from tests.support import ee


def test_diagnose_runs_with_exactly_the_ee_content(k2lab, tmp_path):
    venv = ee.clean_venv()
    collections = ee.install_collections(venv, str(tmp_path / "collections"))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(lab.inventory(python=os.path.join(venv, "bin", "python")))
    reports = tmp_path / "reports"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"PATH": os.path.join(venv, "bin") + os.pathsep + "/usr/bin:/bin",
                "ANSIBLE_COLLECTIONS_PATH": collections, "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
                "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1"})
    # the collection's own playbook, by its name, as an EE job (or ansible-navigator) runs it
    proc = subprocess.run([os.path.join(venv, "bin", "ansible-playbook"), "-i", str(inventory),
                           "k2.iceberg_offload.diagnose", "-e", json.dumps({"k2_report_dir": str(reports)})],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path),
                          timeout=600, check=False)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out[-6000:]
    assert "/.venv/" not in out and "could not be" not in out.lower(), out[-6000:]
    with open(reports / "latest-diagnosis.json") as fh:
        report = json.load(fh)
    diagnosis = report["diagnosis"]
    assert diagnosis["status"] == "healthy", diagnosis["summary"]
    # every fact was gathered: PostgreSQL (psycopg2), ClickHouse (requests), Prometheus, the docker
    # host (community.docker), the scheduler and the Spark host
    assert diagnosis["missing_facts"] == [], diagnosis["missing_facts"]
    assert report["facts"]["db_container"]["container"]["State"]["Running"] is True

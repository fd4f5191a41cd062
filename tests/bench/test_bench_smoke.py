# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Smoke runs of the benchmarks (bench/), so that a bench cannot break silently again.

Each bench that needs no lab runs at a tiny size the way a user runs it: ``bench/run.sh X ...``
in a subprocess, outside pytest (and so without pytest-ansible's set-up), its raw JSON into a
temporary directory (``--out``), docs/benchmarks.md left alone (``--no-doc``), targets not
enforced (``--ignore-targets``: tiny sizes miss them by design). The test checks the exit code
and the keys of the JSON the docs section is rendered from. The lab's benches (mttr, chaos)
are only imported and asked for ``--help``; ``make bench`` / ``make chaos`` run them.
Throwaway servers get free ports in 35000-35999 on 127.0.0.1.
Alone: .venv/bin/python -m pytest tests/bench
"""
import glob
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN = os.path.join(REPO, "bench", "run.sh")
DOC = os.path.join(REPO, "docs", "benchmarks.md")
PORTS = (35000, 36000)
TIMEOUT = 600


def _free_ports(count):
    """``count`` ports in 35000-35999 that nothing on 127.0.0.1 holds now, in random order (two
    runs on one machine seldom pick the same)."""
    ports = list(range(*PORTS))
    random.shuffle(ports)
    found = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError("no %d free ports in %d-%d" % (count, PORTS[0], PORTS[1] - 1))


def _doc_digest():
    with open(DOC, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _bench(what, out_dir, *args):
    """bench/run.sh WHAT ARGS --no-doc --out OUT_DIR; (exit code, output, the JSON it wrote)."""
    env = dict(os.environ, K2_VENV=os.environ.get("K2_VENV") or sys.prefix)
    before = _doc_digest()
    proc = subprocess.run(["bash", RUN, what] + [str(a) for a in args] + ["--no-doc", "--out", str(out_dir)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=TIMEOUT, check=False)
    out = proc.stdout.decode(errors="replace")
    assert _doc_digest() == before, "bench/run.sh %s --no-doc changed docs/benchmarks.md" % what
    written = glob.glob(os.path.join(str(out_dir), "*.json"))
    result = None
    if len(written) == 1:
        with open(written[0]) as fh:
            result = json.load(fh)
    assert proc.returncode == 0 and result is not None, (
        "bench/run.sh %s: exit code %d, JSON written: %s\n%s" % (what, proc.returncode, written, out[-8000:]))
    return out, result


def _render(bench, out_dir, section):
    """The docs section BENCH.render() makes of the JSON in OUT_DIR (what ``--render`` would write)."""
    (path,) = glob.glob(os.path.join(str(out_dir), "*.json"))
    code = "import json, sys; sys.path.insert(0, 'bench'); import %s as b; print(b.render(json.load(open(%r))))" % (
        bench, path)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120, check=False)
    text = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    assert text.startswith("<!-- %s:begin" % section) and "<!-- %s:end -->" % section in text, text[:2000]
    return text


def _keys(mapping, *keys):
    missing = [k for k in keys if k not in mapping]
    assert not missing, "missing %s in %s" % (missing, sorted(mapping))


def test_watermarks(tmp_path):
    (port,) = _free_ports(1)
    _out, r = _bench("watermarks", tmp_path, "--rows", 20000, "--port", port, "--ignore-targets")
    _keys(r, "rows", "started", "seconds", "machine", "server_version", "loadavg_start", "loadavg_end",
          "loadavg_sampled", "latest", "cleanup", "json")
    assert r["rows"] == 20000
    _keys(r["latest"], "runbook_group_by_max_ms", "distinct_on_ms", "index_walk_ms", "watermark_info_in_process_ms",
          "watermark_info_exact_counts_in_process_ms", "watermark_info_via_ansible_ms", "ansible_ping_via_ansible_ms")
    _keys(r["cleanup"], "runbook_cte", "runbook_pg_dump_cte", "module_auto_no_backup", "module_delete_no_backup",
          "module_backup_table", "speedup_no_backup")
    for label in ("module_auto_no_backup", "module_delete_no_backup", "module_backup_table"):
        row = r["cleanup"][label]
        # every template row but the newest 10 per table (the writer's own rows come after them)
        assert row["deleted"] >= 20000 - 2 * 10 and row["writer"]["errors"] == 0, (label, row)
    assert r["machine"]["cpu_model"] in _render("watermark_bench", tmp_path, "watermarks")


def test_coldtier(tmp_path):
    if not shutil.which("clickhouse-server", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")):
        pytest.skip("clickhouse-server is not installed (make setup installs it)")
    http, tcp, interserver = _free_ports(3)
    _out, r = _bench("coldtier", tmp_path, "--rows", 20000, "--files", 5, "--ch-rows", 20000, "--repeat", 1,
                     "--ch-http-port", http, "--ch-tcp-port", tcp, "--ch-interserver-port", interserver)
    _keys(r, "date", "command", "machine", "seconds", "loadavg_start", "loadavg_end", "loadavg_sampled",
          "iceberg", "clickhouse", "json")
    ice = r["iceberg"]
    _keys(ice["results"], "module", "module_one_group", "cold_tier_max_pair", "naive", "ansible_module")
    assert ice["results"]["module"]["duplicate_rows"] == 1000
    through_ansible = ice["results"]["ansible_module"]
    assert not through_ansible["failed"] and through_ansible["duplicate_rows"] == 1000, through_ansible
    _keys(r["clickhouse"], "rows", "module", "runbook", "watermark")
    assert r["clickhouse"]["rows"] == 20000 and len(r["clickhouse"]["module"]) == 3
    assert "%d CPUs" % r["machine"]["nproc"] in _render("coldtier_bench", tmp_path, "coldtier")


def test_dedupe(tmp_path):
    _out, r = _bench("dedupe", tmp_path, "--rows", 20000, "--files", 5, "--dup-keys", 400, "--repeat", 1,
                     "--ignore-targets")
    _keys(r, "table", "module", "naive", "module_system_allocator", "module_one_group",
          "module_one_group_system_allocator", "module_one_group_uncut", "ansible", "summary", "goals", "machine",
          "date", "command", "seconds", "loadavg_start", "loadavg_sampled", "json")
    assert r["table"]["rows"] == 20000 and r["table"]["unique_keys"] == 19600
    assert r["ansible"]["rows_removed"] == 400 and r["ansible"]["verified"]["ok"], r["ansible"]
    assert all(run["verified"]["ok"] for run in r["module"] + r["naive"])
    assert r["machine"]["cpu_model"] in _render("dedupe_bench", tmp_path, "dedupe")


@pytest.mark.parametrize("what", ["mttr", "chaos", "html", "engines"])
def test_lab_bench_help(what):
    """The lab's benches are not run here (they need the K2 lab): they import and parse options."""
    proc = subprocess.run(["bash", RUN, what, "--help"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ, K2_VENV=os.environ.get("K2_VENV") or sys.prefix),
                          timeout=120, check=False)
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0 and "--no-doc" in out and "--out" in out, out[-4000:]


def test_benches_do_not_import_the_test_harness():
    """A bench runs outside pytest: importing one must not bring in pytest-ansible or the tests'
    run_module (which needs pytest-ansible's pytest set-up); bench/_ansible.py is theirs."""
    for path in glob.glob(os.path.join(REPO, "bench", "*.py")):
        with open(path) as fh:
            text = fh.read()
        for name in ("tests.support.ansible_module", "pytest_ansible"):
            assert name not in text, "%s refers to %s" % (os.path.relpath(path, REPO), name)
    code = ("import sys; sys.path.insert(0, 'bench'); "
            "import watermark_bench, coldtier_bench, dedupe_bench, mttr_bench, chaos_bench, html_report_bench, "
            "engines_bench, _ansible; "
            "print(sorted(m for m in sys.modules if m.startswith(('pytest_ansible', 'tests.support.ansible_module'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    assert proc.stdout.decode().strip().splitlines()[-1] == "[]", proc.stdout.decode()

# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The execution environment's definition (execution-environment.yml, meta/execution-environment.yml):
its Python requirements are exactly what the plugins import, with a pyiceberg extra for each catalog
the docs offer; ansible-builder makes its build context and reads the collection's own EE metadata."""
import ast
import os
import re
import subprocess
import sys

from tests.support import ee

# import name -> distribution
DISTRIBUTIONS = {"psycopg2": "psycopg2-binary", "requests": "requests", "pyiceberg": "pyiceberg", "pyarrow": "pyarrow",
                 "pygal": "pygal"}
# What ansible-core itself requires (the HTML report renders its template with jinja2 and markupsafe).
ANSIBLE_CORE_REQUIRES = ("jinja2", "markupsafe")
# iceberg_catalog_properties type (as the docs offer them) -> the pyiceberg extra it needs (None: none)
CATALOG_EXTRAS = {"sql": "sql-sqlite", "rest": None, "hive": "hive", "glue": "glue",
                  "hadoop": None}   # the collection's own reader of Spark's hadoop catalog: pyarrow only
STDLIB = set(sys.stdlib_module_names)
# Programs the collection ships to another runtime rather than imports: the cold tier's Spark job runs
# under spark-submit on the k2_spark host (pyspark comes with Spark there), never in the EE's Python.
SHIPPED_PROGRAMS = {"iceberg_spark_job.py"}


def plugin_imports():
    found = set()
    for dirpath, _dirs, files in os.walk(os.path.join(ee.REPO, "plugins")):
        for f in files:
            if not f.endswith(".py") or f in SHIPPED_PROGRAMS:
                continue
            with open(os.path.join(dirpath, f)) as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                found |= {n.split(".")[0] for n in names}
    return {n for n in found if n not in STDLIB and n not in ("ansible", "ansible_collections", "__future__")
            and n not in ANSIBLE_CORE_REQUIRES}


def requirement_names(lines):
    return {re.split(r"[\[<>=!~; ]", line)[0].lower() for line in lines}


def test_python_requirements_are_what_the_plugins_import():
    imported = plugin_imports()
    assert imported <= set(DISTRIBUTIONS), imported - set(DISTRIBUTIONS)
    required = requirement_names(ee.requirement_lines(os.path.join(ee.REPO, "meta", "ee-requirements.txt")))
    assert required == {DISTRIBUTIONS[i] for i in imported}, (required, imported)   # docker is not one of them


def test_pyiceberg_has_an_extra_for_each_catalog_the_docs_offer():
    (line,) = [x for x in ee.requirement_lines(os.path.join(ee.REPO, "meta", "ee-requirements.txt"))
               if x.startswith("pyiceberg")]
    extras = set(re.search(r"\[(.*)\]", line).group(1).split(","))
    with open(os.path.join(ee.REPO, "plugins", "doc_fragments", "iceberg.py")) as fh:
        offered = set(re.findall(r"\{type: (\w+)", fh.read()))
    assert offered <= set(CATALOG_EXTRAS), offered
    assert {CATALOG_EXTRAS[t] for t in offered if CATALOG_EXTRAS[t]} <= extras, (offered, extras)


def test_top_level_definition_points_at_the_collection_metadata():
    d = ee.definition()
    assert d["version"] == 3
    assert d["dependencies"]["python"] == "meta/ee-requirements.txt"
    assert d["dependencies"]["system"] == "meta/ee-bindep.txt"
    import yaml
    with open(os.path.join(ee.REPO, "meta", "execution-environment.yml")) as fh:
        meta = yaml.safe_load(fh)
    for path in meta["dependencies"].values():
        assert os.path.exists(os.path.join(ee.REPO, path)), path


def test_ansible_builder_create(tmp_path):
    context = ee.create_context(str(tmp_path / "context"))
    with open(os.path.join(context, "Dockerfile")) as fh:
        dockerfile = fh.read()
    d = ee.definition()
    assert 'ARG EE_BASE_IMAGE="%s"' % d["images"]["base_image"]["name"] in dockerfile
    assert d["dependencies"]["ansible_core"]["package_pip"] in dockerfile
    assert "ansible-galaxy collection install --offline --no-deps" in dockerfile
    build = os.path.join(context, "_build")
    assert os.listdir(os.path.join(build, "k2-dist")) == [os.path.basename(ee.build_collection())]
    assert ee.requirement_lines(os.path.join(build, "requirements.txt")) == ee.requirement_lines(
        os.path.join(ee.REPO, "meta", "ee-requirements.txt"))
    with open(os.path.join(build, "requirements.yml")) as fh:
        assert "community.docker" in fh.read()
    assert os.path.exists(os.path.join(build, "bindep.txt"))


def test_ansible_builder_reads_the_installed_collections_requirements(tmp_path):
    """What the builder stage of the image does: introspect the installed collections."""
    dest = str(tmp_path / "collections")
    # --force: without it ansible-galaxy may answer "Nothing to do" when it finds the collection
    # already installed on another configured path, and dest stays empty.
    inst = subprocess.run([os.path.join(ee.VENV_BIN, "ansible-galaxy"), "collection", "install", "--offline",
                           "--no-deps", "--force", "-p", dest, ee.build_collection()],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    installed = os.path.join(dest, "ansible_collections", "k2", "iceberg_offload", "MANIFEST.json")
    assert inst.returncode == 0 and os.path.exists(installed), inst.stdout.decode()
    proc = subprocess.run([os.path.join(ee.VENV_BIN, "ansible-builder"), "introspect", "--sanitize", dest],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out
    for name in ("psycopg2-binary", "requests", "pyiceberg", "pyarrow", "postgresql-client"):
        assert name in out, (name, out)
    assert "docker>" not in out and "# from collection k2.iceberg_offload" in out, out

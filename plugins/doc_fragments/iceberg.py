# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # The options of module_utils/iceberg.py: iceberg_argument_spec().
    DOCUMENTATION = r"""
options:
  iceberg_catalog:
    description:
      - Name of the pyiceberg catalog. With empty O(iceberg_catalog_properties), pyiceberg looks it up
        in C(~/.pyiceberg.yaml) and the E(PYICEBERG_CATALOG__<NAME>__<PROPERTY>) environment.
    type: str
    default: default
  iceberg_catalog_properties:
    description:
      - "The catalog's properties exactly as pyiceberg's C(load_catalog) takes them, for example
        C({type: sql, uri: 'sqlite:////home/iceberg/warehouse/catalog.db',
        warehouse: 'file:///home/iceberg/warehouse'}) (the lab), C({type: rest, uri: ...}),
        C({type: hive, uri: 'thrift://...'}) or C({type: glue})."
      - "C({type: hadoop, warehouse: /home/iceberg/warehouse}) reads the table directory
        C(<warehouse>/<namespace>/<table>) the way Spark's hadoop catalog writes it (the runbook's
        spark-shell configuration); pyiceberg has no hadoop catalog, so the metadata file named by
        C(metadata/version-hint.text) is opened directly."
      - Put credentials in O(iceberg_catalog_secrets), not here.
    type: dict
    default: {}
  iceberg_catalog_secrets:
    description:
      - Catalog or FileIO properties that are secrets (C(token), C(credential), C(s3.secret-access-key)
        ...), merged over O(iceberg_catalog_properties) and never logged.
    type: dict
    default: {}
  iceberg_table_location:
    description:
      - Open the table without a catalog, from a Hadoop-catalog table directory (holding
        C(metadata/version-hint.text) and C(metadata/vN.metadata.json)) or from a C(.metadata.json)
        file. O(iceberg_catalog_properties) then only configure the FileIO.
    type: str
requirements:
  - pyiceberg
  - pyarrow
notes:
  - Iceberg C(timestamp) (without zone) values are read as naive UTC; C(timestamptz) values are
    converted to UTC.
"""

    # The options of module_utils/iceberg_spark.py: engine_argument_spec().
    ENGINE = r"""
options:
  engine:
    description:
      - Which engine reads (and repairs) the cold tier. V(pyiceberg) runs in this module's process on the host
        (pyiceberg and pyarrow, bounded memory). V(spark) runs the work as a Spark job with C(spark-submit) on the
        host, on O(spark_master) (a cluster's executors, for tables that outgrow one host).
      - Both answer in the same shape. With V(spark), the table is opened through the catalog of
        O(iceberg_catalog_properties) translated for Iceberg's Spark catalog (C(type=sql) becomes Iceberg's
        C(jdbc) catalog on the same database, named O(iceberg_catalog)); O(iceberg_table_location) is not
        supported; the catalog settings and secrets reach Spark through a properties file of mode 0600 in a private
        temporary directory, never the command line.
      - "With V(spark), a few values are V(null) that only the pyiceberg engine measures: C(duplicates.overlap_groups),
        C(scan.batches), C(scan.arrow_*); C(scan.peak_rss_bytes) is the peak of the largest child process
        (Spark's driver JVM in local mode)."
    type: str
    choices: [pyiceberg, spark]
    default: pyiceberg
    version_added: 1.1.0
  spark_master:
    description:
      - The Spark master for O(engine=spark) - V(local[*]) (the runbook's), V(local[N]), V(spark://HOST:PORT),
        V(yarn) or V(k8s://URL). A V(spark://) master whose port does not accept a connection in 10 s is
        reported before Spark starts. Spark Connect (V(sc://)) is not supported.
    type: str
    default: local[*]
    version_added: 1.1.0
  spark_submit:
    description: Path (or name on E(PATH)) of Spark's C(spark-submit) on the host, for O(engine=spark).
    type: str
    default: spark-submit
    version_added: 1.1.0
  spark_jars:
    description:
      - Jars for O(engine=spark) (C(spark.jars)); the Iceberg Spark runtime must be among them unless Spark
        already has it. Local paths must exist. No Maven (C(--packages)).
    type: list
    elements: str
    default: [/opt/iceberg/iceberg-spark-runtime-3.5_2.12-1.10.2.jar]
    version_added: 1.1.0
  spark_timeout:
    description:
      - Seconds the Spark job may take (O(engine=spark)); then it is stopped and the task fails with nothing
        committed.
    type: int
    default: 3600
    version_added: 1.1.0
"""

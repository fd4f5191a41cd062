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

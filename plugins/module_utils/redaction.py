# -*- coding: utf-8 -*-
# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What no module of this collection may print or write: secrets. Pure Python, no server.

Private to this collection: the functions may change without notice.

A secret is the value of any option whose argument spec says ``no_log`` (at any depth of
``options``, whatever the name, whether it came from the task or an environment fallback
such as ``PGPASSWORD`` or ``CLICKHOUSE_PASSWORD``), the password of a URL's userinfo
(``http://user:secret@host/``) in any option, and the value of a dictionary key that names a
secret (``token``, ``s3.secret-access-key``...) in a free-form property option (named
``*_properties``, such as ``iceberg_catalog_properties``). ``harden(module)`` adds all of them to the module's
``no_log_values`` so Ansible masks them in everything the module returns (results, messages,
warnings, ``invocation``); ``audit_parameters()`` is what may be written to the audit table.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from urllib.parse import unquote

MASK = "********"

# user:password@ in a URL; the user stays (it is not a secret), the password goes.
_URL_USERINFO_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@/\s]*)@")
# Free-form property dictionaries (options named *_properties, such as iceberg_catalog_properties):
# a key whose name says secret holds a credential. Other dictionaries (offload_source_info's
# watermarks, keyed by table name) are not read this way.
PROPERTIES = "_properties"
# Keys of free-form property dictionaries that hold credentials.
_SECRET_KEY_RE = re.compile(
    r"pass(word|wd|phrase)?|secret|token|credential|private|api[-_.]?key|access[-_.]?key|session"
    r"|signature|\bsas\b|auth", re.I)


def redact_urls(text):
    """``scheme://user:secret@host`` -> ``scheme://user:********@host`` everywhere in ``text``."""
    if not isinstance(text, str) or "@" not in text:
        return text
    return _URL_USERINFO_RE.sub(lambda m: m.group("head") + ":" + MASK + "@", text)


def url_passwords(text):
    """The passwords of the URLs' userinfo in ``text`` (raw and percent-decoded)."""
    out = set()
    if not isinstance(text, str) or "@" not in text:
        return out
    for m in _URL_USERINFO_RE.finditer(text):
        password = m.group("password")
        if password:
            out.update((password, unquote(password)))
    return out


def is_secret_key(key):
    return isinstance(key, str) and bool(_SECRET_KEY_RE.search(key))


def _leaves(value):
    """Every scalar inside value, as text."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _leaves(v)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def no_log_options(argument_spec):
    """Names of the options marked ``no_log`` in an argument spec, with sub-options as dotted paths."""
    out = set()
    for name, spec in (argument_spec or {}).items():
        if spec.get("no_log"):
            out.add(name)
        for sub in no_log_options(spec.get("options")):
            out.add(name + "." + sub)
    return out


def secret_values(argument_spec, params):
    """Every value in ``params`` that is a secret (see the module docstring), as text."""
    found = set()

    def walk(value, spec, under_secret, keyed):
        if isinstance(value, dict):
            for key, item in value.items():
                sub = (spec or {}).get(key) if isinstance(spec, dict) else None
                secret = under_secret or bool(sub and sub.get("no_log")) or (keyed and is_secret_key(key))
                walk(item, (sub or {}).get("options"), secret, keyed or (sub is not None and key.endswith(PROPERTIES)))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, spec, under_secret, keyed)
        elif under_secret:
            found.update(_leaves(value))
        elif isinstance(value, str):
            found.update(url_passwords(value))

    walk(params or {}, argument_spec or {}, False, False)
    return set(v for v in found if v)


def scrub(value, secrets):
    """A copy of value with every secret (and every URL password) in its text replaced by the mask."""
    ordered = sorted((s for s in secrets if s), key=len, reverse=True)

    def clean(v):
        if isinstance(v, dict):
            return dict((clean(k), clean(x)) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return type(v)(clean(x) for x in v)
        if isinstance(v, str):
            for s in ordered:
                if s in v:
                    v = v.replace(s, MASK)
            return redact_urls(v)
        return v
    return clean(value)


def audit_parameters(params, argument_spec, extra_secrets=()):
    """The parameters worth recording: no ``no_log`` option (at any depth), no unset value, and no
    secret value anywhere inside the others (a password repeated in a URL or a property)."""
    hidden = no_log_options(argument_spec)
    secrets = secret_values(argument_spec, params) | set(str(s) for s in extra_secrets if s)

    def keep(value, spec, path):
        if isinstance(value, dict) and isinstance(spec, dict) and spec:
            out = {}
            for key, item in value.items():
                sub_path = path + "." + key if path else key
                if sub_path in hidden or item is None:
                    continue
                out[key] = keep(item, (spec.get(key) or {}).get("options"), sub_path)
            return out
        return value
    return scrub(keep(dict(params or {}), argument_spec or {}, ""), secrets)


def harden(module):
    """Make Ansible mask every secret of the module's parameters in whatever the module returns."""
    module.no_log_values.update(secret_values(module.argument_spec, module.params))
    return module

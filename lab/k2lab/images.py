# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Local images for the K2 lab.

There is no registry: the base image is made with debootstrap from the mirror
this machine's apt sources name, imported with ``docker import``, and each
service image is ``docker build``-ed FROM it. Every tag is a hash of the
image's inputs, so an image is built once per machine and reused until one of
its inputs changes.
"""

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from . import LAB_DIR, engine, log, run

IMAGES_DIR = os.path.join(LAB_DIR, "images")
SERVICES = ("postgres", "clickhouse", "spark-iceberg")

# Everything every lab and molecule container needs; service packages are
# installed by the service images' Dockerfiles.
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv",
    "ca-certificates", "procps", "iproute2", "cron", "gzip", "util-linux",
    "postgresql-client", "sudo", "less",
)


def os_codename():
    with open("/etc/os-release") as fh:
        for line in fh:
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("cannot read VERSION_CODENAME from /etc/os-release")


def apt_mirror(codename=None):
    """The Debian mirror this machine's apt sources use for ``codename``.

    Reads deb822 ``*.sources`` files and one-line ``sources.list`` entries;
    never falls back to a hard-coded host.
    """
    codename = codename or os_codename()
    candidates = []
    paths = ["/etc/apt/sources.list"]
    d = "/etc/apt/sources.list.d"
    if os.path.isdir(d):
        paths += sorted(os.path.join(d, f) for f in os.listdir(d)
                        if f.endswith((".list", ".sources")))
    for path in paths:
        if not os.path.isfile(path):
            continue
        with open(path) as fh:
            text = fh.read()
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    k, v = line.split(":", 1)
                    fields[k.strip().lower()] = v.strip()
                if ("deb" in fields.get("types", "").split()
                        and codename in fields.get("suites", "").split()
                        and "main" in fields.get("components", "").split()):
                    candidates += fields.get("uris", "").split()
        else:
            for line in text.splitlines():
                parts = re.sub(r"\[[^\]]*\]", "", line).split()
                if len(parts) >= 4 and parts[0] == "deb" and parts[2] == codename:
                    candidates.append(parts[1])
    for uri in candidates:
        if uri.startswith(("http://", "https://", "file:")):
            return uri.rstrip("/")
    raise RuntimeError("no Debian mirror for %s found in the apt sources" % codename)


def _hash(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def _dir_digest(path):
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            full = os.path.join(root, f)
            h.update(os.path.relpath(full, path).encode())
            with open(full, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def image_exists(ref):
    return engine.image_exists(ref)


def base_ref():
    codename = os_codename()
    tag = _hash(codename, apt_mirror(codename), " ".join(BASE_PACKAGES),
                _dir_digest(os.path.join(IMAGES_DIR, "base")))
    return "k2lab/base:" + tag


# Wheels a service image installs, fetched on this machine (with its pip settings and CA
# store) so that no build reaches PyPI: (requirements file in the image's directory, folder
# of the build context, how).
#   download  ``pip download --only-binary=:all:``, into the context at every build;
#   build     ``pip wheel --no-deps`` (every requirement pinned; an sdist such as pyspark's is
#             built into a wheel here), kept in CACHE_DIR by the requirements' content and
#             reused, so the bytes, and with them docker's layer cache, stay the same.
WHEEL_SETS = (
    ("requirements.txt", "wheels", "download"),
    ("spark/requirements.txt", "spark-wheels", "build"),
)
CACHE_DIR = os.environ.get("K2LAB_CACHE_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "k2lab")


# Build stages kept under a tag of their own (k2lab/<image>-<stage>:<the image's tag>): an
# untagged stage is never removed by prune_old_tags and would stay on disk after its inputs
# changed; tagged, the current one stays as the next build's layer cache and an outdated one
# goes with the image it served.
BUILD_STAGES = {"spark-iceberg": ("spark-build",)}


def stage_refs(name):
    tag = service_ref(name).split(":", 1)[1]
    return ["k2lab/%s-%s:%s" % (name, stage, tag) for stage in BUILD_STAGES.get(name, ())]


def _wheel_sets(name):
    return [ws for ws in WHEEL_SETS if os.path.exists(os.path.join(IMAGES_DIR, name, ws[0]))]


def service_ref(name):
    parts = [base_ref(), _dir_digest(os.path.join(IMAGES_DIR, name))]
    # How the wheels are fetched is an input too; images without wheel sets beyond
    # requirements.txt keep the tags they had.
    extra = [ws for ws in _wheel_sets(name) if ws != WHEEL_SETS[0]]
    if extra:
        parts.append(repr(extra))
    tag = _hash(*parts)
    return "k2lab/%s:%s" % (name, tag)


_held = []


@contextlib.contextmanager
def build_lock(poll=5.0, say_every=30.0):
    """One image build at a time on this machine (CACHE_DIR/build.lock).

    `make test` builds the images in the background while its first suites run (scripts/test.sh);
    the lab and molecule fixtures that need them take this lock, so they wait for that build and then
    find the images instead of building them a second time alongside it. Re-entrant in one process
    (build_all holds it while build_base and build_service take it again). A wait says so, every
    `say_every` seconds, with the holder's PID.
    """
    if _held:
        yield
        return
    os.makedirs(CACHE_DIR, exist_ok=True)
    path = os.path.join(CACHE_DIR, "build.lock")
    with open(path, "a+") as fh:
        start = last = time.time()
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.time()
                if now - last >= say_every or last == start:
                    fh.seek(0)
                    holder = fh.read().strip() or "?"
                    log("waiting for the image build of PID %s (%s), %.0f s so far" % (holder, path, now - start))
                    last = now
                time.sleep(poll)
        if time.time() - start > poll:
            log("the other image build finished after %.0f s" % (time.time() - start))
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        _held.append(path)
        try:
            yield
        finally:
            _held.pop()
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_base(force=False):
    with build_lock():
        return _build_base(force)


def _build_base(force):
    ref = base_ref()
    if image_exists(ref) and not force:
        log("base image %s already built" % ref)
        return ref
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (make setup installs it)")
    codename = os_codename()
    mirror = apt_mirror(codename)
    start = time.time()
    root = tempfile.mkdtemp(prefix="k2lab-rootfs-")
    try:
        log("debootstrap %s from %s into %s (a few minutes)" % (codename, mirror, root))
        run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
             codename, root, mirror], quiet=True)
        # The image uses the same mirror as this machine, nothing else.
        with open(os.path.join(root, "etc/apt/sources.list"), "w") as fh:
            fh.write("deb %s %s main\n" % (mirror, codename))
        shutil.copy(os.path.join(IMAGES_DIR, "base", "policy-rc.d"),
                    os.path.join(root, "usr/sbin/policy-rc.d"))
        os.chmod(os.path.join(root, "usr/sbin/policy-rc.d"), 0o755)
        run(["chroot", root, "apt-get", "clean"], quiet=True)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        engine.image_import(tar.stdout, ref, changes=['CMD ["/bin/bash"]'])
        if tar.wait() != 0:
            raise RuntimeError("tar of the rootfs failed")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    log("built %s in %.0f s" % (ref, time.time() - start))
    return ref


def _fetch_wheels(name, reqs, dest, how):
    if how == "download":
        log("downloading wheels for %s" % name)
        run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
             "-r", reqs, "-d", dest], quiet=True)
        return
    with open(reqs, "rb") as fh:
        key = _hash(how, sys.version_info[:2], fh.read())
    cached = os.path.join(CACHE_DIR, "wheels", key)
    if not os.path.exists(os.path.join(cached, ".complete")):
        log("fetching wheels for %s (%s) into %s" % (name, os.path.basename(os.path.dirname(reqs)) or name, cached))
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=key + ".", dir=os.path.dirname(cached))
        try:
            run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-r", reqs, "-w", tmp], quiet=True)
            open(os.path.join(tmp, ".complete"), "w").close()
            shutil.rmtree(cached, ignore_errors=True)
            os.rename(tmp, cached)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        log("wheels for %s from %s" % (name, cached))
    os.makedirs(dest, exist_ok=True)
    for f in sorted(os.listdir(cached)):
        if f.endswith(".whl"):
            try:
                os.link(os.path.join(cached, f), os.path.join(dest, f))
            except OSError:  # another file system
                shutil.copy2(os.path.join(cached, f), os.path.join(dest, f))


def build_service(name, force=False):
    with build_lock():
        return _build_service(name, force)


def _build_service(name, force):
    ref = service_ref(name)
    if image_exists(ref) and not force:
        log("image %s already built" % ref)
        return ref
    base = build_base()
    start = time.time()
    context = tempfile.mkdtemp(prefix="k2lab-context-")
    try:
        shutil.copytree(os.path.join(IMAGES_DIR, name), context, dirs_exist_ok=True)
        for reqs, dest, how in _wheel_sets(name):
            _fetch_wheels(name, os.path.join(context, reqs), os.path.join(context, dest), how)
        log("docker build %s FROM %s" % (ref, base))
        engine.image_build(context, ref, buildargs={"BASE": base})
        for stage, stage_ref in zip(BUILD_STAGES.get(name, ()), stage_refs(name)):
            engine.image_build(context, stage_ref, buildargs={"BASE": base}, target=stage)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    log("built %s in %.0f s" % (ref, time.time() - start))
    return ref


# A tag built this recently may be another checkout's lab between its build and its
# `docker run` (two labs on one machine: K2LAB_PREFIX); it is left for a later build.
PRUNE_MIN_AGE_SECONDS = int(os.environ.get("K2LAB_PRUNE_MIN_AGE_SECONDS", 3600))


def prune_old_tags(ref):
    """Remove this image's earlier tags (other input hashes), except those of an image any
    container uses (running or stopped, of any lab) and those built in the last hour."""
    repo = ref.split(":")[0]
    in_use = engine.images_in_use()
    now = time.time()
    for old in engine.image_tags(repo):
        if old == ref:
            continue
        info = engine.image_inspect(old)
        if info is None:
            continue
        if info["Id"] in in_use or old in in_use:
            log("keeping %s: a container uses it" % old)
            continue
        if now - engine.image_created(info) < PRUNE_MIN_AGE_SECONDS:
            log("keeping %s: built less than %d s ago" % (old, PRUNE_MIN_AGE_SECONDS))
            continue
        engine.image_remove(old)


def build_all(force=False):
    with build_lock():
        refs = {"base": build_base(force)}
        for name in SERVICES:
            refs[name] = build_service(name, force)
        for ref in list(refs.values()) + [r for name in SERVICES for r in stage_refs(name)]:
            prune_old_tags(ref)
        return refs


if __name__ == "__main__":
    build_all("--force" in sys.argv)

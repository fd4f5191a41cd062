# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Docker Engine for the lab, through the Docker SDK for Python (docker-py), not the CLI.

One client (``docker.from_env()``: DOCKER_HOST or the local socket) for every container,
network, exec and image operation of the lab. Errors come back as RuntimeError with the
engine's message, so the lab's callers need not know the SDK.
"""

import datetime
import os
import re

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

_CLIENT = []


def client():
    if not _CLIENT:
        try:
            _CLIENT.append(docker.from_env(timeout=600))
        except DockerException as e:
            raise RuntimeError("no Docker Engine answers (%s); make setup starts dockerd" % e)
    return _CLIENT[0]


def api():
    return client().api


# -- containers ---------------------------------------------------------------------------------
def inspect(name):
    """``docker inspect`` of a container as a dict, or None when there is none."""
    try:
        return api().inspect_container(name)
    except NotFound:
        return None


def running(name):
    info = inspect(name)
    return bool(info and info["State"]["Running"])


def run(image, name, network, labels, env=None, ports=None, volumes=None, tmpfs=None, cgroupns=None,
        hostname=None):
    """``docker run -d``: create and start a container; returns its id."""
    try:
        c = client().containers.run(
            image, name=name, hostname=hostname or name, network=network, labels=labels, environment=env or {},
            ports=ports or {}, volumes=volumes or {}, tmpfs=tmpfs or {}, cgroupns=cgroupns, detach=True)
    except (APIError, ImageNotFound) as e:
        raise RuntimeError("docker run %s failed: %s" % (name, e.explanation or e))
    return c.id


def start(name):
    _call("start", name, lambda: api().start(name))


def stop(name, timeout=60):
    _call("stop", name, lambda: api().stop(name, timeout=timeout))


def kill(name, signal="KILL"):
    _call("kill", name, lambda: api().kill(name, signal=signal))


def crash(name):
    """The container's main process dies by SIGKILL from outside Docker's API, as a crash would:
    Docker applies its restart policy (``docker kill`` counts as a manual stop, which it does not
    restart). Only for a container of this machine's Docker Engine, found by name."""
    import os
    import signal
    pid = ((inspect(name) or {}).get("State") or {}).get("Pid")
    if not pid:
        raise RuntimeError("%s has no running process to crash" % name)
    os.kill(int(pid), signal.SIGKILL)


def remove(name, volumes=True):
    try:
        api().remove_container(name, v=volumes, force=True)
    except NotFound:
        pass


def update_restart_policy(name, policy, retries=0):
    """``docker update --restart POLICY``: "no", "on-failure", "always" or "unless-stopped"."""
    spec = {"Name": policy} if policy != "on-failure" else {"Name": policy, "MaximumRetryCount": int(retries)}
    _call("update", name, lambda: api().update_container(name, restart_policy=spec))


def put_file(name, path, content, mode=0o600, uid=0, gid=0):
    """Write one file into a container, running or not (``docker cp``): its directory must exist."""
    import io
    import tarfile
    data = content.encode() if isinstance(content, str) else content
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(os.path.basename(path))
        info.size, info.mode, info.uid, info.gid = len(data), mode, uid, gid
        tar.addfile(info, io.BytesIO(data))
    _call("cp", name, lambda: api().put_archive(name, os.path.dirname(path), buf.getvalue()))


def logs(name, tail=30):
    """``docker logs --tail N`` (stdout and stderr) as text."""
    return _call("logs", name, lambda: api().logs(name, tail=tail)).decode(errors="replace")


def containers_with_label(label):
    return [c["Id"] for c in api().containers(all=True, filters={"label": label})]


def _call(what, name, fn):
    try:
        return fn()
    except (APIError, NotFound) as e:
        raise RuntimeError("docker %s %s failed: %s" % (what, name, getattr(e, "explanation", None) or e))


def exec_(name, cmd, env=None, check=True, user=None):
    """``docker exec``: returns (exit code, stdout, stderr) as text; raises on a non-zero exit
    when ``check``, with the command's output in the message."""
    try:
        ex = api().exec_create(name, cmd, environment=env or None, stdout=True, stderr=True, user=user or "")
        out, err = api().exec_start(ex["Id"], demux=True)
        rc = api().exec_inspect(ex["Id"])["ExitCode"]
    except (APIError, NotFound) as e:
        if check:
            raise RuntimeError("docker exec %s %s failed: %s" % (name, " ".join(cmd), e.explanation or e))
        return 1, "", str(getattr(e, "explanation", None) or e)
    out = (out or b"").decode(errors="replace")
    err = (err or b"").decode(errors="replace")
    if check and rc != 0:
        raise RuntimeError("command failed (%d): docker exec %s %s\n%s%s" % (
            rc, name, " ".join(cmd), out[-4000:], err[-4000:]))
    return rc, out, err


# -- networks -----------------------------------------------------------------------------------
def network_inspect(name):
    try:
        return api().inspect_network(name)
    except NotFound:
        return None


def network_create(name, labels):
    _call("network create", name, lambda: api().create_network(name, labels=labels))


def network_connect(network, container):
    _call("network connect", container, lambda: api().connect_container_to_network(container, network))


def network_disconnect(network, container):
    _call("network disconnect", container, lambda: api().disconnect_container_from_network(container, network))


def networks_with_label(label):
    return [n["Id"] for n in api().networks(filters={"label": label})]


def network_remove(name):
    try:
        api().remove_network(name)
    except (NotFound, APIError):
        pass


def volumes_with_label(label):
    return [v["Name"] for v in (api().volumes(filters={"label": label}) or {}).get("Volumes") or []]


def volume_remove(name):
    try:
        api().remove_volume(name)
    except (NotFound, APIError):
        pass


# -- images -------------------------------------------------------------------------------------
def image_exists(ref):
    try:
        api().inspect_image(ref)
        return True
    except (ImageNotFound, NotFound):
        return False


def image_import(tar_stream, ref, changes=None):
    """``docker import -``: a root file system tarball (a file object) as image ``ref``."""
    repo, tag = ref.rsplit(":", 1)
    try:
        api().import_image_from_stream(tar_stream, repository=repo, tag=tag, changes=changes or [])
    except APIError as e:
        raise RuntimeError("docker import %s failed: %s" % (ref, e.explanation or e))
    if not image_exists(ref):
        raise RuntimeError("docker import %s did not produce the image" % ref)


def image_build(context, ref, buildargs=None, target=None):
    """``docker build --network host [--target STAGE]``; the build's last output lines are in the error on
    failure."""
    lines = []
    try:
        for chunk in api().build(path=context, tag=ref, buildargs=buildargs or {}, network_mode="host", rm=True,
                                 decode=True, target=target):
            if "stream" in chunk:
                lines.append(chunk["stream"])
            if "error" in chunk:
                raise RuntimeError("docker build %s failed: %s\n%s" % (ref, chunk["error"], "".join(lines[-40:])))
    except APIError as e:
        raise RuntimeError("docker build %s failed: %s\n%s" % (ref, e.explanation or e, "".join(lines[-40:])))
    if not image_exists(ref):
        raise RuntimeError("docker build %s did not produce the image\n%s" % (ref, "".join(lines[-40:])))


def image_inspect(ref):
    try:
        return api().inspect_image(ref)
    except (ImageNotFound, NotFound):
        return None


def image_created(info):
    """An image's creation time (``image_inspect``'s Created, RFC 3339) in seconds since the epoch."""
    created = info.get("Created") or ""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", created)
    if not m:
        return 0.0
    stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    offset = m.group(3) or "Z"
    if offset != "Z":
        sign = 1 if offset[0] == "+" else -1
        stamp -= sign * datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    return (stamp - datetime.datetime(1970, 1, 1)).total_seconds()


def images_in_use():
    """Image ids, and the names they were started from, of every container (running or not)."""
    used = set()
    for c in api().containers(all=True):
        used.add(c.get("ImageID"))
        used.add(c.get("Image"))
    used.discard(None)
    return used


def image_tags(repo):
    return [t for img in api().images(name=repo) for t in (img.get("RepoTags") or []) if t.startswith(repo + ":")]


def image_remove(ref):
    try:
        api().remove_image(ref)
    except (NotFound, APIError):
        pass  # in use by a container, or gone already

# Copyright (c) K2 Platform Engineering
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real servers on 127.0.0.1 that receive what incident_notify sends, for tests.

- ``SMTPReceiver``: aiosmtpd on a port the kernel picks, plain, with STARTTLS offered
  (``tls=True``) or TLS from the first byte (``implicit_tls=True``); it takes any login
  and records it, and keeps every message parsed (``messages``).
- ``HTTPReceiver``: http.server in a thread, on a port the kernel picks; records every request
  (``requests``: method, path, headers, body) and answers ``status`` (200 by default) with
  ``answer`` (a function of the request, for a server that echoes what it got), and a
  ``Location`` header when given one (a redirect).
- ``SilentReceiver``: a listening socket that never accepts: the TCP handshake completes (the
  kernel does it) and nothing ever answers, as a hung server.
- ``closed_port()``: a port nothing listens on (connection refused).
- ``self_signed(dir)``: a certificate for 127.0.0.1 and its key, for the TLS servers; the
  client trusts it through SSL_CERT_FILE.

Each is a context manager; leaving it stops the server (its thread joined, its socket closed).
Nothing listens on another address than 127.0.0.1.
"""
import datetime
import email
import email.policy
import http.server
import ipaddress
import json
import os
import socket
import ssl
import threading

LOOPBACK = "127.0.0.1"


def closed_port():
    """A port on 127.0.0.1 that was free a moment ago, and nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def self_signed(directory):
    """(certificate path, key path): a self-signed certificate for 127.0.0.1 (IP SAN), valid a day."""
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # pylint: disable=import-outside-toplevel

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k2 test receiver")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path = os.path.join(str(directory), "receiver-cert.pem")
    key_path = os.path.join(str(directory), "receiver-key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path


def _server_context(cert):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


class SMTPReceiver(object):
    """aiosmtpd on 127.0.0.1, a port of its own. ``messages``: [{"mail_from", "rcpt_tos", "message"
    (an email.message.EmailMessage), "raw" (bytes)}]; ``logins``: [(user, password)]."""

    def __init__(self, cert=None, starttls=False, implicit_tls=False):
        self.cert, self.starttls, self.implicit_tls = cert, starttls, implicit_tls
        self.messages, self.logins, self.sessions = [], [], 0
        self.port = None
        self._controller = None

    # aiosmtpd handler hooks
    async def handle_DATA(self, server, session, envelope):  # pylint: disable=unused-argument,invalid-name
        raw = envelope.original_content or envelope.content
        self.messages.append({"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos), "raw": raw,
                              "message": email.message_from_bytes(raw, policy=email.policy.default)})
        return "250 OK"

    def _authenticate(self, server, session, envelope, mechanism, auth_data):  # pylint: disable=unused-argument
        from aiosmtpd.smtp import AuthResult  # pylint: disable=import-outside-toplevel
        login = getattr(auth_data, "login", b"") or b""
        password = getattr(auth_data, "password", b"") or b""
        self.logins.append((login.decode(), password.decode()))
        return AuthResult(success=True)

    def start(self):
        from aiosmtpd.controller import Controller  # pylint: disable=import-outside-toplevel

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((LOOPBACK, 0))
        self.port = sock.getsockname()[1]

        class _Bound(Controller):
            """aiosmtpd's Controller on a socket bound beforehand (port 0: the kernel picks it)."""

            def _create_server(self):
                return self.loop.create_server(self._factory_invoker, sock=sock, ssl=self.ssl_context)

        kwargs = {"authenticator": self._authenticate, "auth_require_tls": False}
        if self.starttls:
            kwargs["tls_context"] = _server_context(self.cert)
        if self.implicit_tls:
            kwargs["ssl_context"] = _server_context(self.cert)
        self._controller = _Bound(self, hostname=LOOPBACK, port=self.port, ready_timeout=30, **kwargs)
        self._controller.start()
        return self

    def stop(self):
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class HTTPReceiver(object):
    """An HTTP server on 127.0.0.1 that records requests. ``requests``: [{"method", "path", "headers"
    (dict, names lower-case), "body" (bytes), "json" (parsed body or None)}]."""

    def __init__(self, status=200, answer=None, tls_cert=None, location=None):
        self.status = status
        self.location = location
        self.answer = answer or (lambda request: b"ok")
        self.tls_cert = tls_cert
        self.requests = []
        self.port = None
        self._server = self._thread = None

    @property
    def base_url(self):
        return "%s://%s:%d" % ("https" if self.tls_cert else "http", LOOPBACK, self.port)

    def start(self):
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # pylint: disable=invalid-name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    parsed = json.loads(body.decode("utf-8"))
                except ValueError:
                    parsed = None
                request = {"method": "POST", "path": self.path, "body": body, "json": parsed,
                           "headers": dict((k.lower(), v) for k, v in self.headers.items())}
                receiver.requests.append(request)
                out = receiver.answer(request)
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self._server.server_address[1]
        self._server.daemon_threads = True
        if self.tls_cert:
            self._server.socket = _server_context(self.tls_cert).wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="k2 test HTTP receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class SilentReceiver(object):
    """A socket on 127.0.0.1 that listens and never accepts: connections complete (the kernel's
    backlog), what is sent is never read, nothing answers. A hung SMTP or HTTP server."""

    def __init__(self):
        self._sock = None
        self.port = None

    def start(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((LOOPBACK, 0))
        self.port = self._sock.getsockname()[1]
        self._sock.listen(16)
        return self

    def stop(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

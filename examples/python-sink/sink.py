"""python-sink: a sluice sink plugin written in Python with grpcio. It appends each record's payload to a
file, one line per record, and acknowledges a batch once its lines are written (and fsynced).

What a plugin in any language must do is in docs/plugins-in-other-languages.md; this file does it in order:
check the environment, make a TLS certificate, serve the services, print the handshake line, stop when
asked. Run it through build.sh's launcher, which puts the generated stubs (sluice_pb2*) on PYTHONPATH.
"""

import base64
import datetime
import json
import os
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import sluice_pb2
import sluice_pb2_grpc
import wire

# The handshake sluice and its plugins share (sdk.Handshake in the Go SDK).
MAGIC_COOKIE_KEY = "SLUICE_PLUGIN"
MAGIC_COOKIE_VALUE = "b9f1c3e2-sluice-connector-plugin"
CORE_PROTOCOL_VERSION = 1  # go-plugin's
PROTOCOL_VERSION = 1  # sluice's plugin protocol

SPEC = {
    "name": "python-sink",
    "version": "0.1.0",
    "summary": "Appends record payloads to a file, one line each (an example plugin in Python).",
    "author": "sluice examples",
    "sink": {
        "summary": "Appends each record's payload and a newline to a file; heartbeats write nothing.",
        "capabilities": {},
        "settings": [
            {"name": "path", "type": "string", "required": True,
             "doc": "The file to append to; it is created if missing, its directory must exist."},
            {"name": "sync", "type": "bool", "default": "true",
             "doc": "Fsync the file before acknowledging each batch; false is faster but loses acknowledged lines on a power cut."},
        ],
    },
}


def log(level, message, **fields):
    """Writes one log line to stderr in the JSON form sluice reads (go-plugin's hclog format): the host
    logs it at its level, tagged with the plugin, stage and pipeline."""
    line = {"@level": level, "@message": message,
            "@timestamp": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    line.update(fields)
    print(json.dumps(line), file=sys.stderr, flush=True)


class PluginService(sluice_pb2_grpc.PluginServicer):
    def Spec(self, request, context):
        return sluice_pb2.SpecResponse(spec_json=json.dumps(SPEC).encode())

    # Metrics is optional: left unimplemented, the host reports none for this stage.


class SinkService(sluice_pb2_grpc.SinkServicer):
    """One stage instance: sluice starts a process per stage, so the state here is the stage's."""

    def __init__(self):
        self.file = None
        self.sync = True
        self.path = ""

    def Open(self, request, context):
        # Settings arrive as a JSON object, already checked against the spec and with defaults applied.
        try:
            settings = json.loads(request.settings_json or b"{}")
        except ValueError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"protocol error: settings are not JSON: {e}")
        path = settings.get("path")
        if not isinstance(path, str) or path == "":
            # INVALID_ARGUMENT: the settings are wrong; the pipeline fails at once.
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, 'setting "path": want the file to append to')
        self.path, self.sync = path, settings.get("sync", True) is True
        try:
            self.file = open(path, "ab")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
            # FAILED_PRECONDITION: permanent, no retry can help.
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{path}: {e.strerror}")
        except OSError as e:
            # Any other code is transient: the host restarts the stage with backoff. UNKNOWN, as the Go
            # SDK: the host reads UNAVAILABLE as a lost connection.
            context.abort(grpc.StatusCode.UNKNOWN, f"{path}: {e.strerror}")
        log("info", "appending to file", path=path)
        return sluice_pb2.Empty()

    def Checkpoint(self, request, context):
        # Only asked of sinks that declare atomic_position; this one keeps no positions: the host stores
        # them once batches are acknowledged (at-least-once).
        return sluice_pb2.CheckpointResponse()

    def Write(self, request_iterator, context):
        if self.file is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "protocol error: the stage is not open")
        for batch in request_iterator:
            try:
                records = wire.decode(batch.data, batch.count)
            except wire.CorruptBatch as e:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"protocol error: batch {batch.seq}: {e}")
            lines = [r.payload + b"\n" for r in records if r.op != "heartbeat"]
            try:
                self.file.write(b"".join(lines))
                self.file.flush()
                if self.sync:
                    os.fsync(self.file.fileno())
            except OSError as e:
                # Transient: the host restarts the stage and sends every unacknowledged batch again.
                context.abort(grpc.StatusCode.UNKNOWN, f"{self.path}: {e.strerror}")
            # Acknowledges every batch up to and including this one: they are durable.
            yield sluice_pb2.Ack(seq=batch.seq)

    def Close(self, request, context):
        if self.file is not None:
            self.file.close()
            self.file = None
        return sluice_pb2.Empty()


def go_plugin_services(stopping):
    """go-plugin's controller (Shutdown: the host asks the plugin to exit) and stdio services. Their
    messages are empty or never sent, so they need no generated code."""

    def shutdown(request, context):
        stopping.set()
        return b""

    def stream_stdio(request, context):
        # The host forwards what arrives here as the plugin's stdout and stderr; this plugin sends nothing
        # (it logs on stderr directly) but keeps the stream open, as the host expects, until it stops.
        while context.is_active() and not stopping.wait(0.5):
            pass
        return iter(())

    # A deserializer must return something other than None, which grpcio takes for a failure.
    empty_in, empty_out = (lambda b: b), (lambda m: b"")
    return [
        grpc.method_handlers_generic_handler("plugin.GRPCController", {
            "Shutdown": grpc.unary_unary_rpc_method_handler(
                shutdown, request_deserializer=empty_in, response_serializer=empty_out)}),
        grpc.method_handlers_generic_handler("plugin.GRPCStdio", {
            "StreamStdio": grpc.unary_stream_rpc_method_handler(
                stream_stdio, request_deserializer=empty_in, response_serializer=empty_out)}),
    ]


def make_certificate():
    """A fresh self-signed ECDSA P-256 certificate for "localhost", for both ends of a connection, as PEM
    (certificate, key) and DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert.public_bytes(serialization.Encoding.DER)


def exit_when_orphaned(parent, stopping):
    """Stops the plugin when its host has died without stopping it (the process is re-parented). On Linux
    the host also has the kernel kill its plugins when it dies."""
    while not stopping.wait(0.5):
        if os.getppid() != parent:
            log("warn", "host process is gone; exiting")
            stopping.set()


def main():
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE_VALUE:
        print("This is a sluice plugin: put it in a plugins directory and let sluice start it.", file=sys.stderr)
        return 1
    offered = os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "").split(",")
    if str(PROTOCOL_VERSION) not in offered:
        print(f"this plugin speaks sluice plugin protocol version {PROTOCOL_VERSION}; "
              f"the host offers {','.join(offered)}", file=sys.stderr)
        return 1
    max_msg = int(os.environ.get("SLUICE_MAX_MESSAGE_BYTES", 64 << 20))

    stopping = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[
        ("grpc.max_receive_message_length", max_msg), ("grpc.max_send_message_length", max_msg)])
    sluice_pb2_grpc.add_PluginServicer_to_server(PluginService(), server)
    sluice_pb2_grpc.add_SinkServicer_to_server(SinkService(), server)
    health_service = health.HealthServicer()
    # The host pings service "plugin" every few seconds and restarts a plugin that stops answering.
    health_service.set("plugin", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    server.add_generic_rpc_handlers(go_plugin_services(stopping))

    # The socket goes in the directory the host names (it removes the directory, and any socket a killed
    # plugin left there, when it ends). The path must stay short: sockaddr_un holds about 100 bytes.
    sock = os.path.join(os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or tempfile.gettempdir(), f"python-sink-{os.getpid()}")
    host_cert = os.environ.get("PLUGIN_CLIENT_CERT", "")
    cert_field = ""
    if host_cert:
        # Mutual TLS: serve with our certificate, accept only clients presenting the host's.
        cert_pem, key_pem, cert_der = make_certificate()
        creds = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=host_cert.encode(),
                                            require_client_auth=True)
        server.add_secure_port("unix:" + sock, creds)
        cert_field = base64.b64encode(cert_der).decode().rstrip("=")
    else:
        # The host turned TLS off (it does so only to measure what TLS costs).
        server.add_insecure_port("unix:" + sock)
    server.start()
    threading.Thread(target=exit_when_orphaned, args=(os.getppid(), stopping), daemon=True).start()

    # The handshake: one line on stdout. Nothing else may be printed on stdout before it.
    print(f"{CORE_PROTOCOL_VERSION}|{PROTOCOL_VERSION}|unix|{sock}|grpc|{cert_field}", flush=True)

    stopping.wait()
    server.stop(grace=1).wait()
    try:
        os.remove(sock)
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

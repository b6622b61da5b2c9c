"""A small OTLP/HTTP traces receiver for the tests: it decodes what warren exports with the
OpenTelemetry project's own protobuf definitions (`opentelemetry-proto`) and keeps every span,
so a test can read back the traces a request made."""

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

KINDS = {value: name.removeprefix("SPAN_KIND_").lower() for name, value in ProtoSpan.SpanKind.items()}
STATUSES = {value: name.removeprefix("STATUS_CODE_").lower() for name, value in Status.StatusCode.items()}


@dataclass
class Span:
    service: str
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict = field(default_factory=dict)
    status: str = "unset"
    resource: dict = field(default_factory=dict)


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver:
    """Listens on 127.0.0.1 (a free port) until `close`; `endpoint` is its base URL."""

    def __init__(self):
        self.spans = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _take(self, request):
        taken = []
        for resource_spans in request.resource_spans:
            attributes = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            service = attributes.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    taken.append(Span(
                        service=service,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=KINDS.get(span.kind, str(span.kind)),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        status=STATUSES.get(span.status.code, str(span.status.code)),
                        resource=attributes,
                    ))
        with self._lock:
            self.requests += 1
            self.spans.extend(taken)

    def trace(self, trace_id):
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, trace_id, ready, seconds=60):
        """The spans of `trace_id` once `ready(spans)` holds."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            spans = self.trace(trace_id)
            if ready(spans):
                return spans
            time.sleep(0.1)
        spans = self.trace(trace_id)
        raise AssertionError(f"trace {trace_id} never got what was awaited: {[(s.service, s.name) for s in spans]}")

    def close(self):
        self.server.shutdown()
        self.server.server_close()

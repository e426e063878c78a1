"""XRPC over HTTP: the server-side router, the client, and the metrics both report to.

``server``: routes declared by NSID from the lexicons, every failure mapped to
``{"error", "message"}`` and its status in one place. ``client``: queries and
procedures, error replies raised as the matching ``AtrepoError`` subclass.
``metrics``: a small Prometheus text-format registry served at ``/metrics``.
See docs/xrpc.md.
"""

from .client import XrpcClient, XrpcResponse, error_from_reply
from .metrics import Metrics, add_metrics_route
from .server import (
    RawBody,
    RawOutput,
    SubscriptionContext,
    XrpcContext,
    XrpcRouter,
    enable_cors,
    error_reply,
)

__all__ = [
    "Metrics",
    "RawBody",
    "RawOutput",
    "SubscriptionContext",
    "XrpcClient",
    "XrpcContext",
    "XrpcResponse",
    "XrpcRouter",
    "add_metrics_route",
    "enable_cors",
    "error_from_reply",
    "error_reply",
]

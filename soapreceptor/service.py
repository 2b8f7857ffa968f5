"""The spyne service: the Notify operation, its WSDL, and the protocol that reads it.

spyne describes the service (and so generates the WSDL each running receptor
serves) and drives each request: context, routing to ``Notify``, faults. Two
things are deliberately not left to spyne's generic machinery:

* Reading the request. spyne's lxml validator refuses Amazon's own message
  (``xsi:type`` on ``Timestamp``), and declaring ``Timestamp`` a ``DateTime``
  loses the exact text the signature covers. :class:`NotifyProtocol` hands the
  request to :mod:`soapreceptor.wire`, which keeps the raw text and reads the
  three versions alike (and costs a tenth of spyne's object deserialisation).
* Writing the answer. The response is the version's constant
  ``NotifyResponse``; faults are written by :func:`soapreceptor.wire.render_fault`
  so that every refusal, whichever layer makes it, looks the same.

The three notification versions differ only in namespace, so they are routed
to one operation and the version travels as data in the :class:`Notification`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar, Final

from lxml import etree
from spyne import Application, ComplexModel, DateTime, Fault, Service, Unicode, rpc
from spyne.const.http import HTTP_200
from spyne.interface.wsdl import Wsdl11
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

from . import errors, versions, wire
from .model import Notification

#: The WSDL binding transport for SOAP over HTTP (spyne leaves a placeholder without a server).
SOAP_HTTP_TRANSPORT: Final[str] = "http://schemas.xmlsoap.org/soap/http"
_WSDL: Final[str] = "http://schemas.xmlsoap.org/wsdl/"
_WSDL_SOAP11: Final[str] = "http://schemas.xmlsoap.org/wsdl/soap/"
_XSD: Final[str] = "http://www.w3.org/2001/XMLSchema"

#: The WSGI environ key where the service leaves what it learnt about the request (for the access log).
ENVIRON_KEY: Final[str] = "soapreceptor.request"

#: Called with the parsed notification, the request body as received, and the WSGI environ.
Handler = Callable[[Notification, bytes, dict[str, Any]], None]

logger = logging.getLogger("soapreceptor")

# spyne logs a full traceback for every Client fault and the whole body on every
# XML syntax error; soapreceptor logs one line per request itself instead.
# spyne's process-wide registry of applications by (namespace, name) warns when
# a second one is built; soapreceptor builds one per contract (and tests one per
# receptor) and never uses that registry.
for _noisy in ("spyne.application.client", "spyne.protocol.soap.soap11.invalid", "spyne.util.appreg"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL + 1)


def _event_model(namespace: str) -> type[ComplexModel]:
    class Event(ComplexModel):
        __namespace__ = namespace
        __type_name__ = "Event"
        _type_info: ClassVar = [
            # A string, not an enumeration: new event types must never be refused.
            ("EventType", Unicode(min_occurs=1, nillable=False)),
            ("EventTime", DateTime(min_occurs=0, nillable=False)),
            ("HITTypeId", Unicode(min_occurs=0, nillable=False)),
            ("HITId", Unicode(min_occurs=0, nillable=False)),
            ("AssignmentId", Unicode(min_occurs=0, nillable=False)),
        ]

    return Event


def build_application(version: str, handler: Handler | None = None) -> Application:
    """A spyne Application for ``version``'s contract.

    With a ``handler`` it receives calls: :class:`NotifyProtocol` reads every
    supported version's ``Notify`` and the operation passes the parsed
    :class:`Notification` and the WSGI environ to ``handler``. Without one it
    only describes the contract (for the WSDL).
    """
    namespace = versions.namespace(version)
    event = _event_model(namespace)

    class NotificationService(Service):
        __service_name__ = versions.SERVICE_NAME
        __port_types__ = ()

        @rpc(
            Unicode(min_occurs=0, nillable=False),
            DateTime(min_occurs=1, nillable=False),
            Unicode(min_occurs=1, nillable=False),
            event.customize(min_occurs=1, max_occurs="unbounded", nillable=False),
            _in_message_name=f"{{{namespace}}}Notify",
            _out_message_name=f"{{{namespace}}}NotifyResponse",
            _in_variable_names={
                "signature": "Signature",
                "timestamp": "Timestamp",
                "version": "Version",
                "event": "Event",
            },
            _returns=None,
        )
        def Notify(  # noqa: N802 (the operation's name in the WSDL)
            ctx: Any,  # noqa: N805 (spyne passes the method context, not an instance)
            signature: Any = None,
            timestamp: Any = None,
            version: Any = None,
            event: Any = None,
        ) -> None:
            # NotifyProtocol has read the message already; its Notification
            # (not spyne's objects) is what the handler needs.
            try:
                if handler is None:
                    raise errors.ServerFault("this service only describes the contract")
                invoke(handler, ctx.udc.notification, ctx.udc.body, ctx.transport.req_env)
            except errors.NotifyFault as fault:
                raise _WireFault(fault) from None

    protocol: Soap11 = NotifyProtocol() if handler is not None else Soap11()
    app = Application(
        [NotificationService],
        tns=namespace,
        name=versions.SERVICE_NAME,
        in_protocol=protocol,
        out_protocol=NotifyProtocol() if handler is not None else Soap11(),
    )
    app.transport = SOAP_HTTP_TRANSPORT
    return app


def invoke(handler: Handler, notification: Notification, body: bytes, environ: dict[str, Any]) -> None:
    """The Notify operation: ``handler`` takes the message, or a :class:`~soapreceptor.errors.NotifyFault` says why not.

    Any other error becomes a Server fault that names the request id, with
    the traceback in the log (never in the answer).
    """
    try:
        handler(notification, body, environ)
    except errors.NotifyFault:
        raise
    except Exception:
        request_id = environ.get(ENVIRON_KEY, {}).get("request_id", "-")
        logger.exception("request %s: unexpected error while handling Notify", request_id)
        raise errors.ServerFault(
            f"internal error; the receptor's log has the details under request id {request_id}"
        ) from None


class NotifyServer(WsgiApplication):
    """spyne's WSGI server for the Notify application, with Notify calls answered on a short path.

    Every call this service takes is a ``Notify``, and :class:`NotifyProtocol`
    reads it with :mod:`soapreceptor.wire`, not with spyne's object
    deserialisation. What spyne's generic request machinery adds around that
    (a method context, its events, generic routing to the one operation)
    cost more than reading a 10-event message, so :meth:`handle_rpc` goes
    straight from the wire reader to the operation (:func:`invoke`) to the
    answer. spyne still owns the service: its definition (and so the WSDL),
    its protocol's mapping of faults to HTTP statuses, and the generic path,
    which answers every request exactly as this one does
    (``tests/test_service.py`` compares them on every fixture and hostile input).
    """

    def __init__(self, app: Application, handler: Handler, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.handler = handler

    def handle_rpc(self, req_env: dict[str, Any], start_response: Any) -> list[bytes]:
        body = req_env["wsgi.input"].read()
        info = req_env.setdefault(ENVIRON_KEY, {})
        try:
            notification = wire.parse_notify(body, req_env.get("HTTP_SOAPACTION"))
            invoke(self.handler, notification, body, req_env)
        except errors.NotifyFault as fault:
            info["outcome"] = fault.faultcode
            status = self.app.out_protocol.fault_to_http_response_code(_WireFault(fault))
            answer = wire.render_fault(fault)
        else:
            info["outcome"] = "accepted"
            status = HTTP_200
            answer = wire.render_response(notification.version)
        start_response(status, [("Content-Type", wire.CONTENT_TYPE), ("Content-Length", str(len(answer)))])
        return [answer]


class _Incoming:
    """What NotifyProtocol read from the request, kept in spyne's per-request ``ctx.udc``."""

    __slots__ = ("body", "notification")

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.notification: Notification | None = None


class _WireFault(Fault):
    """Carries a :class:`~soapreceptor.errors.NotifyFault` through spyne's Fault-only error paths."""

    def __init__(self, cause: errors.NotifyFault) -> None:
        super().__init__(faultcode=cause.faultcode, faultstring=cause.faultstring)
        self.cause = cause


class NotifyProtocol(Soap11):
    """SOAP 1.1 whose request reading and answer writing are :mod:`soapreceptor.wire`'s.

    The request is parsed while spyne generates the method context (where a
    fault is answered without spyne logging a traceback); every supported
    version is routed to the one ``Notify`` operation of the application.
    """

    def create_in_document(self, ctx: Any, charset: str | None = None) -> None:
        body = b"".join(chunk if isinstance(chunk, bytes) else chunk.encode("utf-8") for chunk in ctx.in_string)
        ctx.udc = _Incoming(body)
        try:
            ctx.in_document = wire.parse_envelope(body)
        except errors.NotifyFault as fault:
            raise _WireFault(fault) from None

    def decompose_incoming_envelope(self, ctx: Any, message: Any = None) -> None:
        environ = ctx.transport.req_env
        try:
            header, notify = wire.split_envelope(ctx.in_document)
            ctx.udc.notification = wire.read_notify(notify, header=header, soap_action=environ.get("HTTP_SOAPACTION"))
        except errors.NotifyFault as fault:
            raise _WireFault(fault) from None
        ctx.in_header_doc = header
        ctx.in_body_doc = notify
        ctx.method_request_string = f"{{{self.app.interface.get_tns()}}}{versions.OPERATION}"

    def deserialize(self, ctx: Any, message: Any) -> None:
        self.event_manager.fire_event("before_deserialize", ctx)
        ctx.in_object = []  # the operation reads ctx.udc, the Notification
        self.event_manager.fire_event("after_deserialize", ctx)

    def serialize(self, ctx: Any, message: Any) -> None:
        self.event_manager.fire_event("before_serialize", ctx)
        self.event_manager.fire_event("after_serialize", ctx)

    def create_out_string(self, ctx: Any, charset: str | None = None) -> None:
        error = ctx.out_error
        info = ctx.transport.req_env.setdefault(ENVIRON_KEY, {})
        if error is None:
            info["outcome"] = "accepted"
            ctx.out_string = [wire.render_response(ctx.udc.notification.version)]
            return
        if isinstance(error, _WireFault):
            fault = error.cause
        else:
            # A fault from spyne's own machinery: its text is spyne's, never ours or the user's.
            fault_class = errors.ClientFault if str(error.faultcode).startswith("Client") else errors.ServerFault
            fault = fault_class(str(error.faultstring))
        info["outcome"] = fault.faultcode
        ctx.out_string = [wire.render_fault(fault)]


def build_wsdl(version: str, address: str) -> bytes:
    """The WSDL of ``version``'s contract as spyne generates it, with ``soap:address`` = ``address``.

    spyne's output is brought to what the contract in ``wsdl/`` says and what
    SOAP 1.1 clients need: SOAP 1.1 namespaces only (gSOAP speaks SOAP 1.2 to
    a WSDL that declares both), Amazon's soapAction, the SOAP/HTTP transport,
    and no stray global ``Event`` element.
    """
    interface = Wsdl11(build_application(version).interface)
    interface.build_interface_document(address)
    root = etree.fromstring(interface.get_interface_document())
    for operation in root.iter(f"{{{_WSDL_SOAP11}}}operation"):
        operation.set("soapAction", versions.SOAP_ACTION)
    for schema in root.iter(f"{{{_XSD}}}schema"):
        for element in schema.findall(f"{{{_XSD}}}element"):
            if element.get("name") not in ("Notify", "NotifyResponse"):
                schema.remove(element)
    for port_type_op in root.iter(f"{{{_WSDL}}}operation"):
        if "parameterOrder" in port_type_op.attrib:
            del port_type_op.attrib["parameterOrder"]
    return _with_nsmap(
        root,
        {
            "wsdl": _WSDL,
            "soap": _WSDL_SOAP11,
            "xsd": _XSD,
            "tns": versions.namespace(version),
        },
    )


def _with_nsmap(root: etree._Element, nsmap: dict[str, str]) -> bytes:
    """Re-root ``root`` under exactly ``nsmap`` (spyne declares SOAP 1.2 and a dozen more)."""
    fresh = etree.Element(root.tag, nsmap=nsmap)
    for key, value in root.attrib.items():
        fresh.set(key, value)
    fresh.extend(list(root))
    # QName-valued attributes (type="tns:Event") keep working: tns and xsd are
    # declared above, and spyne's xs: prefix is rewritten to xsd: here.
    for element in fresh.iter():
        for name in ("type", "element", "message", "binding", "base"):
            reference = element.get(name)
            if reference and reference.startswith("xs:"):
                element.set(name, "xsd:" + reference[3:])
    etree.cleanup_namespaces(fresh, top_nsmap=nsmap, keep_ns_prefixes=list(nsmap))
    return etree.tostring(fresh, xml_declaration=True, encoding="UTF-8", pretty_print=True)

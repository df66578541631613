"""Serialising answers: JSON by default, XML on ``Format=XML``; errors always JSON.

Errors stay JSON whatever ``Format`` says: the legacy SDK cannot read an XML
error body, and the new SDK reads one only with V3 (wire-protocol.md).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

from starlette.responses import Response

from rkvstore.errors import ApiError

HOST_ID = "rkvstore"
_XML_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
JSON_TYPE = "application/json;charset=utf-8"
XML_TYPE = "text/xml;charset=utf-8"


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def _xml_fill(parent: Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, list):
                # Lists repeat the element name, once per item.
                for element in item:
                    _xml_fill(SubElement(parent, key), element)
            else:
                _xml_fill(SubElement(parent, key), item)
    elif isinstance(value, bool):
        parent.text = "true" if value else "false"
    elif value is not None:
        # XML 1.0 has no place for most control characters: they would make
        # the answer unparsable.
        parent.text = _XML_UNSAFE.sub("\ufffd", str(value))


def to_xml(root_name: str, body: dict[str, Any]) -> bytes:
    root = Element(root_name)
    _xml_fill(root, body)
    xml: bytes = tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + xml


def success(action: str, request_id: str, body: dict[str, Any], fmt: str) -> Response:
    payload = {"RequestId": request_id, **body}
    headers = {"x-acs-request-id": request_id}
    if fmt.upper() == "XML":
        return Response(to_xml(f"{action}Response", payload), 200, headers, XML_TYPE)
    return Response(_json(payload), 200, headers, JSON_TYPE)


def error(request_id: str, err: ApiError) -> Response:
    payload: dict[str, Any] = {
        "RequestId": request_id,
        "HostId": HOST_ID,
        "Code": err.code,
        "Message": err.message,
        "Recommend": "",
    }
    if err.detail is not None:
        payload["AccessDeniedDetail"] = err.detail
    headers = {"x-acs-request-id": request_id, **err.headers}
    return Response(_json(payload), err.http_status, headers, JSON_TYPE)


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

"""A reader's beacon YAML: the common object keys plus the BLISS communication keys.

``tcp: {url: host:port}`` or ``serial: {url: /dev/ttyS0, baudrate: 9600}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bliss_sampletrack.config_node import ObjectConfig
from bliss_sampletrack.readers.transports import SerialTransport, TcpTransport, Transport


class ReaderConfig(ObjectConfig):
    def transport(self, default_tcp_port: int | None = None) -> Transport:
        has_tcp, has_serial = "tcp" in self.config, "serial" in self.config
        if has_tcp == has_serial:
            raise self.error("tcp", "or 'serial' must be given (exactly one of them)")
        if has_tcp:
            node = self._node("tcp")
            url = node.get("url")
            if not isinstance(url, str) or not url:
                raise self.error("tcp.url", f"must be 'host:port', got {url!r}")
            host, colon, port_text = url.removeprefix("tcp://").rpartition(":")
            if not colon:
                host, port_text = port_text, str(default_tcp_port or "")
            if not host.strip():
                raise self.error("tcp.url", f"must be 'host:port' with a host name, got {url!r}")
            # isascii: str.isdigit() is also true of "²", which int() refuses
            if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5) or not (
                0 < int(port_text) < 65536
            ):
                raise self.error("tcp.url", f"must be 'host:port' with a port number, got {url!r}")
            return TcpTransport(self.name, host, int(port_text))
        node = self._node("serial")
        url = node.get("url")
        if not isinstance(url, str) or not url:
            raise self.error("serial.url", f"must be a device path such as /dev/ttyS0, got {url!r}")
        baudrate = node.get("baudrate", 9600)
        if not isinstance(baudrate, int) or isinstance(baudrate, bool) or baudrate <= 0:
            raise self.error("serial.baudrate", f"must be a positive integer, got {baudrate!r}")
        return SerialTransport(self.name, url, baudrate)

    def _node(self, key: str) -> Mapping[str, Any]:
        node = self.config.get(key)
        if not isinstance(node, Mapping):
            raise self.error(key, f"must be a mapping with a 'url', got {node!r}")
        return node

"""Descriptors of an exported device: read once per device through an import, kept, parsed for pyusb.

Device, configuration and the strings every scan reads (serial number above all) are read by
importing the device, and kept while the server lists the same device (bus id, bus and device
number, ids): scans then cost no import. A device another host has imported cannot be read
(USB/IP import is exclusive): it enumerates without strings, so no driver takes it.
"""

from __future__ import annotations

import errno
import struct
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import structlog
import usb.core
from usbip import core as usbip_core  # type: ignore[import-untyped]

from device_gateway.transports.usb_errors import io_error, no_device
from device_gateway.transports.usbip.links import Connector, Link, RemoteDevice

log = structlog.get_logger("clearcard.gateway")

GET_DESCRIPTOR = 6
DT_DEVICE, DT_CONFIG, DT_STRING, DT_INTERFACE, DT_ENDPOINT = 1, 2, 3, 4, 5
BUS_STRIDE = 1000  # bus numbers: 1000 x (server position + 1) + the server's own bus number
_WIRE_SPEED_TO_PYUSB = {1: 1, 2: 2, 3: 3, 4: 3, 5: 4, 6: 4}  # kernel usb_device_speed -> usb.util.SPEED_*
_DEVICE_FIELDS = ("bLength", "bDescriptorType", "bcdUSB", "bDeviceClass", "bDeviceSubClass", "bDeviceProtocol",
                  "bMaxPacketSize0", "idVendor", "idProduct", "bcdDevice", "iManufacturer", "iProduct",
                  "iSerialNumber", "bNumConfigurations")

Interfaces = list[list[tuple[SimpleNamespace, list[SimpleNamespace]]]]  # [number][alt] = (intf, endpoints)


@dataclass
class Descriptors:
    identity: tuple[int, int, int, int]
    device: bytes
    configs: list[bytes]
    strings: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (index, langid) -> descriptor

    def cached(self, ref: RemoteDevice, wValue: int, wIndex: int) -> bytes | None:
        """A GET_DESCRIPTOR answer from what was read, if it is for this device."""
        if self.identity != ref.identity:
            return None
        kind, index = wValue >> 8, wValue & 0xFF
        if kind == DT_DEVICE:
            return self.device
        if kind == DT_CONFIG and index < len(self.configs):
            return self.configs[index]
        if kind == DT_STRING:
            return self.strings.get((index, wIndex if index else 0))
        return None


def describe(connector: Connector, link: Link, ref: RemoteDevice) -> Descriptors | None:
    """The device's descriptors (kept per identity), or None if it cannot be read now."""
    cached = link.descriptors
    if cached is not None and cached.identity == ref.identity:
        return cached
    deadline = time.monotonic() + connector.connect_timeout
    if not link.lock.acquire(timeout=connector.connect_timeout):
        return None
    try:
        cached = link.descriptors
        if cached is not None and cached.identity == ref.identity:
            return cached
        if cached is not None:  # another device now: older handles are dead
            connector.drop(link, broken=True)
            link.descriptors = None
        transient = link.sock is None
        try:
            described = _read(connector, link, ref, deadline)
        except usb.core.USBError as exc:
            log.info("USB/IP device descriptors not readable", device=str(ref), error=str(exc))
            return None
        finally:
            if transient and link.users == 0:
                connector.drop(link, broken=False)
        link.descriptors = described
        return described
    finally:
        link.lock.release()


def _read(connector: Connector, link: Link, ref: RemoteDevice, deadline: float) -> Descriptors:
    def get(kind: int, index: int, langid: int, length: int) -> bytes:
        return connector.control_in(link, ref, (0x80, GET_DESCRIPTOR, kind << 8 | index, langid), length, deadline)

    device = get(DT_DEVICE, 0, 0, 18)
    if len(device) < 18:
        raise io_error("short device descriptor")
    configs = []
    for index in range(device[17]):
        head = get(DT_CONFIG, index, 0, 9)
        total = struct.unpack("<H", head[2:4])[0] if len(head) >= 4 else 9
        configs.append(get(DT_CONFIG, index, 0, total))
    described = Descriptors(ref.identity, device, configs)
    # the strings every scan reads (serial number above all), so scans need no import
    try:
        langids = get(DT_STRING, 0, 0, 255)
    except usb.core.USBError as exc:
        if exc.errno != errno.EPIPE:
            raise
        return described  # no strings at all
    described.strings[(0, 0)] = langids
    if len(langids) >= 4:
        langid = struct.unpack("<H", langids[2:4])[0]
        for index in {device[14], device[15], device[16]} - {0}:
            try:
                described.strings[(index, langid)] = get(DT_STRING, index, langid, 255)
            except usb.core.USBError as exc:
                if exc.errno != errno.EPIPE:
                    raise
    return described


def readable(described: Descriptors | None, ref: RemoteDevice) -> Descriptors:
    if described is None:
        raise no_device(f"{ref}: descriptors not readable (imported by another host?)")
    return described


def device_descriptor(dev: RemoteDevice, described: Descriptors | None) -> SimpleNamespace:
    """The device descriptor as pyusb reads it, with bus, address, ports and speed."""
    ports = tuple(int(p) for p in dev.busid.split("-", 1)[-1].split(".") if p.isdigit())
    common = {"bus": BUS_STRIDE * (dev.position + 1) + dev.busnum, "address": dev.devnum,
              "port_number": ports[-1] if ports else None, "port_numbers": ports,
              "speed": _WIRE_SPEED_TO_PYUSB.get(dev.speed)}
    if described is None:
        # not readable now (another host holds it): what the device list says, no strings
        return SimpleNamespace(bLength=18, bDescriptorType=DT_DEVICE, bcdUSB=0x0200, bDeviceClass=0,
                               bDeviceSubClass=0, bDeviceProtocol=0, bMaxPacketSize0=64,
                               idVendor=dev.idVendor, idProduct=dev.idProduct, bcdDevice=0,
                               iManufacturer=0, iProduct=0, iSerialNumber=0, bNumConfigurations=0,
                               **common)
    fields = struct.unpack("<BBHBBBBHHHBBBB", described.device[:18])
    return SimpleNamespace(**dict(zip(_DEVICE_FIELDS, fields, strict=True)), **common)


def config_tree(blob: bytes) -> tuple[SimpleNamespace, Interfaces]:
    """A configuration descriptor set -> (configuration, interfaces[number][alt] = (intf, endpoints))."""
    if len(blob) < 9:
        raise io_error("short configuration descriptor")
    length, kind, total, n_if, value, i_config, attrs, power = struct.unpack("<BBHBBBBB", blob[:9])
    config = SimpleNamespace(bLength=length, bDescriptorType=kind, wTotalLength=total, bNumInterfaces=n_if,
                             bConfigurationValue=value, iConfiguration=i_config, bmAttributes=attrs,
                             bMaxPower=power, extra_descriptors=[])
    groups: dict[int, list[tuple[SimpleNamespace, list[SimpleNamespace]]]] = {}
    owner: Any = config
    endpoints: list[SimpleNamespace] = []
    for desc in usbip_core.iter_descriptors(blob, offset=length):
        if desc[1] == DT_INTERFACE and len(desc) >= 9:
            fields = struct.unpack("<BBBBBBBBB", desc[:9])
            owner = SimpleNamespace(bLength=fields[0], bDescriptorType=fields[1], bInterfaceNumber=fields[2],
                                    bAlternateSetting=fields[3], bNumEndpoints=fields[4],
                                    bInterfaceClass=fields[5], bInterfaceSubClass=fields[6],
                                    bInterfaceProtocol=fields[7], iInterface=fields[8], extra_descriptors=[])
            endpoints = []
            groups.setdefault(fields[2], []).append((owner, endpoints))
        elif desc[1] == DT_ENDPOINT and len(desc) >= 7 and owner is not config:
            b_length, kind, address, attributes, packet, interval = struct.unpack("<BBBBHB", desc[:7])
            owner = SimpleNamespace(bLength=b_length, bDescriptorType=kind, bEndpointAddress=address,
                                    bmAttributes=attributes, wMaxPacketSize=packet, bInterval=interval,
                                    bRefresh=desc[7] if len(desc) > 7 else 0,
                                    bSynchAddress=desc[8] if len(desc) > 8 else 0, extra_descriptors=[])
            endpoints.append(owner)
        else:
            owner.extra_descriptors.extend(desc)  # class-specific: belongs to what precedes it
    return config, [groups[number] for number in sorted(groups)]

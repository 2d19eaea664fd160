"""USB descriptors of an emulated device, with every field pyusb reads."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from device_gateway.protocol.usb_ids import EP_IN, EP_OUT, INTERFACE, MAX_PACKET, PRODUCT_IDS, VENDOR_ID

DESC_DEVICE, DESC_CONFIG, DESC_STRING, DESC_INTERFACE, DESC_ENDPOINT = 1, 2, 3, 4, 5
SPEED_HIGH = 3  # usb.util.SPEED_HIGH
STRING_MANUFACTURER, STRING_PRODUCT, STRING_SERIAL = 1, 2, 3
LANGID_EN_US = 0x0409
CONFIG_VALUE = 1


@dataclass(frozen=True)
class DeviceDescriptor:
    idVendor: int
    idProduct: int
    bus: int
    address: int
    port_number: int
    port_numbers: tuple[int, ...]
    speed: int = SPEED_HIGH
    bLength: int = 18
    bDescriptorType: int = DESC_DEVICE
    bcdUSB: int = 0x0200
    bDeviceClass: int = 0
    bDeviceSubClass: int = 0
    bDeviceProtocol: int = 0
    bMaxPacketSize0: int = 64
    bcdDevice: int = 0x0100
    iManufacturer: int = STRING_MANUFACTURER
    iProduct: int = STRING_PRODUCT
    iSerialNumber: int = STRING_SERIAL
    bNumConfigurations: int = 1

    def to_bytes(self) -> bytes:
        """The 18-byte wire form (GET_DESCRIPTOR device)."""
        return struct.pack("<BBHBBBBHHHBBBB", self.bLength, self.bDescriptorType, self.bcdUSB,
                           self.bDeviceClass, self.bDeviceSubClass, self.bDeviceProtocol,
                           self.bMaxPacketSize0, self.idVendor, self.idProduct, self.bcdDevice,
                           self.iManufacturer, self.iProduct, self.iSerialNumber,
                           self.bNumConfigurations)


@dataclass(frozen=True)
class ConfigurationDescriptor:
    bLength: int = 9
    bDescriptorType: int = DESC_CONFIG
    wTotalLength: int = 9 + 9 + 7 + 7
    bNumInterfaces: int = 1
    bConfigurationValue: int = CONFIG_VALUE
    iConfiguration: int = 0
    bmAttributes: int = 0x80  # bus powered
    bMaxPower: int = 50  # 100 mA
    extra_descriptors: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class InterfaceDescriptor:
    bLength: int = 9
    bDescriptorType: int = DESC_INTERFACE
    bInterfaceNumber: int = INTERFACE
    bAlternateSetting: int = 0
    bNumEndpoints: int = 2
    bInterfaceClass: int = 0xFF  # vendor specific
    bInterfaceSubClass: int = 0
    bInterfaceProtocol: int = 0
    iInterface: int = 0
    extra_descriptors: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class EndpointDescriptor:
    bEndpointAddress: int
    bLength: int = 7
    bDescriptorType: int = DESC_ENDPOINT
    bmAttributes: int = 0x02  # bulk
    wMaxPacketSize: int = MAX_PACKET
    bInterval: int = 0
    bRefresh: int = 0
    bSynchAddress: int = 0
    extra_descriptors: list[int] = field(default_factory=list)


CONFIGURATION = ConfigurationDescriptor()
INTERFACE_DESCRIPTOR = InterfaceDescriptor()
ENDPOINTS = (EndpointDescriptor(EP_OUT), EndpointDescriptor(EP_IN))


def device_descriptor(family: str, port: int) -> DeviceDescriptor:
    """The device descriptor of an emulated device of `family` on hub port `port`."""
    return DeviceDescriptor(idVendor=VENDOR_ID, idProduct=PRODUCT_IDS[family], bus=1,
                            address=port + 1, port_number=port, port_numbers=(port,))


def configuration_bytes() -> bytes:
    """The full configuration descriptor set (configuration, interface, endpoints)."""
    c, i = CONFIGURATION, INTERFACE_DESCRIPTOR
    out = struct.pack("<BBHBBBBB", c.bLength, c.bDescriptorType, c.wTotalLength, c.bNumInterfaces,
                      c.bConfigurationValue, c.iConfiguration, c.bmAttributes, c.bMaxPower)
    out += struct.pack("<BBBBBBBBB", i.bLength, i.bDescriptorType, i.bInterfaceNumber,
                       i.bAlternateSetting, i.bNumEndpoints, i.bInterfaceClass,
                       i.bInterfaceSubClass, i.bInterfaceProtocol, i.iInterface)
    for e in ENDPOINTS:
        out += struct.pack("<BBBBHB", e.bLength, e.bDescriptorType, e.bEndpointAddress,
                           e.bmAttributes, e.wMaxPacketSize, e.bInterval)
    return out


def string_descriptor(text: str) -> bytes:
    """A USB string descriptor (UTF-16-LE with its 2-byte header)."""
    data = text.encode("utf-16-le")[:252]
    return bytes([2 + len(data), DESC_STRING]) + data


def langid_descriptor() -> bytes:
    """String descriptor zero: the supported language ids."""
    return bytes([4, DESC_STRING]) + struct.pack("<H", LANGID_EN_US)

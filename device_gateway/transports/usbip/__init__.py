"""The USB/IP transport: devices in USB-sharing cabinets as a pyusb backend (`backend.py`)."""

from device_gateway.transports.usbip.backend import UsbipBackend
from device_gateway.transports.usbip.links import RemoteDevice

__all__ = ["RemoteDevice", "UsbipBackend"]

"""Validation of Kubernetes names and label values, before anything is sent.

The API server would reject a bad name too, but only after the caller has connected and
perhaps written other objects; a :class:`~konductor_sdk._kernel.errors.ConfigurationError` at
construction names the argument and the rule instead.
"""

from __future__ import annotations

import re

from konductor_sdk._kernel.errors import ConfigurationError

# RFC 1123 subdomain: what metadata.name of a custom resource must be.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
NAME_MAX = 253
LABEL_VALUE_MAX = 63


def check_object_name(name: object, *, field: str = "name") -> str:
    """Return ``name`` if it is a valid object name (RFC 1123 subdomain, <= 253 chars).

    Raises:
        ConfigurationError: naming ``field`` and the rule.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{field} must be a non-empty string, got {name!r}")
    if len(name) > NAME_MAX or not _SUBDOMAIN.match(name):
        raise ConfigurationError(
            f"{field} must be a DNS subdomain (lowercase letters, digits, '-' and '.', "
            f"starting and ending alphanumeric, at most {NAME_MAX} characters), got {name!r}"
        )
    return name


def check_label_value(value: object, *, field: str) -> str:
    """Return ``value`` if it is a valid label value (<= 63 chars, alphanumeric ends).

    Raises:
        ConfigurationError: naming ``field`` and the rule.
    """
    if not isinstance(value, str) or len(value) > LABEL_VALUE_MAX or not _LABEL_VALUE.match(value):
        raise ConfigurationError(
            f"{field} must be a label value (at most {LABEL_VALUE_MAX} characters of "
            f"letters, digits, '-', '_' and '.', starting and ending alphanumeric), "
            f"got {value!r}"
        )
    return value


def check_namespace(value: object, *, field: str = "namespace") -> str:
    """Return ``value`` if it is a valid namespace name (an RFC 1123 label: at most 63
    lowercase letters, digits and '-', starting and ending alphanumeric).

    Raises:
        ConfigurationError: naming ``field`` and the rule.
    """
    if not isinstance(value, str) or len(value) > LABEL_VALUE_MAX or not _LABEL.match(value):
        raise ConfigurationError(
            f"{field} must be a namespace name (at most {LABEL_VALUE_MAX} lowercase letters, "
            f"digits and '-', starting and ending alphanumeric), got {value!r}"
        )
    return value

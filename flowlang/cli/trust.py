"""Which certificate authorities the command line trusts: ``--ca-file`` and ``SSL_CERT_FILE``.

The default is the certifi bundle, as for httpx. ``SSL_CERT_FILE`` (or ``SSL_CERT_DIR``)
replaces it, as OpenSSL, curl and httpx do; ``--ca-file`` adds a private certificate authority
to what is trusted already, so that an internal server and public APIs both verify in one run.
A file that cannot be read or holds no certificate is a usage error naming it.
"""

from __future__ import annotations

__all__ = ["trusted_authorities"]

import os
import ssl
import stat
from collections.abc import Mapping

import certifi

from flowlang.cli.inputs import UsageError


def _load(context: ssl.SSLContext, *, cafile: str | None = None, capath: str | None = None) -> None:
    what = cafile or capath
    if cafile is not None:
        try:
            regular = stat.S_ISREG(os.stat(cafile).st_mode)
        except OSError:
            regular = True  # missing or unreadable: said below, by the loader
        if not regular:  # a FIFO would block forever, a device never end
            raise UsageError(f"certificate authority file {cafile} is not a regular file")
    try:
        context.load_verify_locations(cafile=cafile, capath=capath)
    except FileNotFoundError:
        raise UsageError(f"certificate authority file {what}: no such file") from None
    except (OSError, ssl.SSLError, ValueError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise UsageError(f"certificate authority file {what} is unusable: {reason}") from None


def trusted_authorities(
    ca_files: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> ssl.SSLContext | None:
    """The TLS context for outbound requests: None (the runtime's default, the certifi bundle)
    when neither ``ca_files`` nor ``SSL_CERT_FILE``/``SSL_CERT_DIR`` is given."""
    env = os.environ if environ is None else environ
    cert_file, cert_dir = env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR")
    if not ca_files and not cert_file and not cert_dir:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies names and chains; trusts none
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file:
        _load(context, cafile=cert_file)
    elif cert_dir:
        _load(context, capath=cert_dir)
    else:
        _load(context, cafile=certifi.where())
    for name in ca_files or []:
        _load(context, cafile=name)
    return context

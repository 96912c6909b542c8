"""COMPRESS=DEFLATE (RFC 4978) with Python's imaplib against a running cove,
over plain TCP and over TLS: after COMPRESS DEFLATE both directions are raw
deflate (zlib with wbits -15), each client command ending in a sync flush
as the server's responses do.

Run by tests/tests/imap_imaplib.rs with COVE_IMAP and COVE_IMAPS
(host:port), COVE_USER, COVE_PASS; three messages are already in INBOX.
"""
import imaplib
import os
import ssl
import zlib

from checks import check, ok

# imaplib refuses commands it has no table entry for.
imaplib.Commands["COMPRESS"] = ("AUTH", "SELECTED")


class Deflate:
    """imaplib's I/O through raw deflate once compress() succeeded."""

    def compress(self):
        typ, data = self._simple_command("COMPRESS", "DEFLATE")
        if typ == "OK":
            self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._inflate = zlib.decompressobj(-15)
            self._inflated = b""
            self.wire_in = 0
        return typ, data

    def _on(self):
        return getattr(self, "_deflate", None) is not None

    def send(self, data):
        if self._on():
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise self.abort("connection closed")
        self.wire_in += len(chunk)
        self._inflated += self._inflate.decompress(chunk)

    def read(self, size):
        if not self._on():
            return super().read(size)
        while len(self._inflated) < size:
            self._fill()
        out, self._inflated = self._inflated[:size], self._inflated[size:]
        return out

    def readline(self):
        if not self._on():
            return super().readline()
        while b"\n" not in self._inflated:
            self._fill()
        i = self._inflated.index(b"\n") + 1
        out, self._inflated = self._inflated[:i], self._inflated[i:]
        return out


class Plain(Deflate, imaplib.IMAP4):
    pass


class Tls(Deflate, imaplib.IMAP4_SSL):
    pass


def session(imap, label):
    ok(imap.login(os.environ["COVE_USER"], os.environ["COVE_PASS"]), f"{label} login")
    typ, caps = imap.capability()
    check(b"COMPRESS=DEFLATE" in caps[0], f"{label} COMPRESS=DEFLATE in {caps}")
    ok(imap.compress(), f"{label} compress")
    # Everything from here is compressed both ways.
    ok(imap.select("INBOX"), f"{label} select")
    data = ok(imap.fetch("1:*", "(BODY.PEEK[])"), f"{label} fetch")
    bodies = [d[1] for d in data if isinstance(d, tuple)]
    check(len(bodies) == 3, f"{label} three bodies: {data}")
    check(all(b"body of" in b for b in bodies), f"{label} bodies: {bodies}")
    data = ok(imap.search(None, "ALL"), f"{label} search")
    check(data == [b"1 2 3"], f"{label} search: {data}")
    ok(imap.noop(), f"{label} noop")
    # RFC 4978 §3: a second COMPRESS is NO [COMPRESSIONACTIVE].
    typ, data = imap._simple_command("COMPRESS", "DEFLATE")
    check(typ == "NO" and b"COMPRESSIONACTIVE" in data[0], f"{label} second: {typ} {data}")
    check(imap.wire_in > 0, f"{label} read compressed bytes")
    imap.logout()


host, port = os.environ["COVE_IMAP"].rsplit(":", 1)
session(Plain(host, int(port), timeout=30), "plain")
tls_host, tls_port = os.environ["COVE_IMAPS"].rsplit(":", 1)
context = ssl.create_default_context()
context.check_hostname = False
context.verify_mode = ssl.CERT_NONE
session(Tls(tls_host, int(tls_port), ssl_context=context, timeout=30), "tls")
print("imaplib compress ok")

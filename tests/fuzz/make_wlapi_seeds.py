#!/usr/bin/python3
"""Writes the seed corpus of fuzz_wlapi (tests/fuzz/corpus/wlapi/): X509SVIDResponse
messages (hand-encoded protobuf, as tests/integration/wlapi_server.py writes them) around
a throwaway PKI made with python3-cryptography, valid 2025-2035 so that fuzz_wlapi's fixed
time (2030-01-01) is inside it. Run once; the output is committed.

Seeds: a good message; two SVIDs with hints; a federated bundle (by SPIFFE ID and by bare
name); and broken ones (key of another certificate, no URI SAN, the bundle of another
CA, an expired leaf, the federated key naming the SVID's own trust domain, an empty
message, truncated bytes).
"""
import datetime
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "wlapi")
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import wlapi_server as wl  # noqa: E402


def key_new():
    return ec.generate_private_key(ec.SECP256R1())


def cert_new(key, uri, issuer=None, issuer_key=None, ca=False,
             nb=datetime.datetime(2025, 1, 1), na=datetime.datetime(2035, 1, 1)):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca" if ca else "leaf")])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True))
    if uri:
        b = b.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                            critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def der(c):
    return c.public_bytes(serialization.Encoding.DER)


def kder(k):
    return k.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def main():
    ID = "spiffe://example.org/ns/shop/sa/orders"
    cak, pcak = key_new(), key_new()
    cac = cert_new(cak, "spiffe://example.org", ca=True)
    pcac = cert_new(pcak, "spiffe://partner.net", ca=True)
    keys, certs = {}, {}
    for n, uri, extra in (("svid", ID, {}), ("svid2", "spiffe://example.org/ns/shop/sa/other", {}),
                          ("nouri", None, {}),
                          ("expired", ID, {"na": datetime.datetime(2025, 1, 2)})):
        keys[n] = key_new()
        certs[n] = cert_new(keys[n], uri, cac, cak, **extra)
    certs["ca"], certs["pca"] = cac, pcac
    cert = lambda n: der(certs[n])  # noqa: E731
    key = lambda n: kder(keys[n])  # noqa: E731
    good = wl.svid(ID, cert("svid"), key("svid"), cert("ca"))
    seeds = {
        "good": wl.response([good]),
        "hints": wl.response([wl.svid(ID, cert("svid"), key("svid"), cert("ca"), "internal"),
                              wl.svid("spiffe://example.org/ns/shop/sa/other", cert("svid2"),
                                      key("svid2"), cert("ca"), "external")]),
        "federated": wl.response([good], {"spiffe://partner.net": cert("pca")}),
        "federated_bare": wl.response([good], {"partner.net": cert("pca")}),
        "federated_own": wl.response([good], {"spiffe://example.org": cert("pca")}),
        "key_mismatch": wl.response([wl.svid(ID, cert("svid"), key("svid2"), cert("ca"))]),
        "no_uri": wl.response([wl.svid(ID, cert("nouri"), key("nouri"), cert("ca"))]),
        "other_bundle": wl.response([wl.svid(ID, cert("svid"), key("svid"), cert("pca"))]),
        "expired": wl.response([wl.svid(ID, cert("expired"), key("expired"), cert("ca"))]),
        "id_mismatch": wl.response([wl.svid(ID + "x", cert("svid"), key("svid"), cert("ca"))]),
        "empty": b"",
        "truncated": wl.response([good])[:200],
    }
    os.makedirs(OUT, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), OUT))


if __name__ == "__main__":
    main()

"""Test certificates made on the fly with ``cryptography``: a CA, and server
certificates it signs for an IP address (IP SAN) or a DNS name."""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class CertFiles:
    """PEM files of one certificate: ``cert`` (the chain), ``key`` and ``ca`` (the CA)."""

    def __init__(self, cert, key, ca):
        self.cert = str(cert)
        self.key = str(key)
        self.ca = str(ca)


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _validity(builder):
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=2))


class TestCA:
    """A throw-away certificate authority writing its files into ``directory``."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory, name="sipdisp test CA"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = _validity(x509.CertificateBuilder()
                            .subject_name(subject).issuer_name(subject)
                            .public_key(self.key.public_key())
                            .serial_number(x509.random_serial_number()))
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                        critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        self.cert = builder.sign(self.key, hashes.SHA256())
        self.ca_path = self.directory / "ca.pem"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name, ips=(), dns=()):
        """Sign a server certificate for ``ips`` and ``dns`` names; files ``name``.pem/.key."""
        key = _key()
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        sans += [x509.DNSName(d) for d in dns]
        common = (list(dns) + list(ips))[0]
        builder = _validity(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number()))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                        critical=True)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
            critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        return CertFiles(cert_path, key_path, self.ca_path)


def server_certificate(directory, ip="127.0.0.1"):
    """A CA and a server certificate for ``ip`` (IP SAN) signed by it."""
    return TestCA(directory).issue("server", ips=[ip])

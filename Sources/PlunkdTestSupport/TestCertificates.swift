import Foundation
import NIOSSL

/// A test CA and server certificates for 127.0.0.1, made by Debian's `openssl` command
/// in a scratch directory: one the CA signed, one for another name, one expired, and a
/// self-signed one no one trusts.
public struct TestCertificates {
    public let directory: String
    public var caFile: String { "\(directory)/ca.pem" }

    public enum Server: String, Sendable {
        case trusted = "server"
        case otherName = "other"
        case expired = "expired"
        case selfSigned = "self"
    }

    public init() throws {
        directory = try DaemonProcess.makeScratchDirectory()
        let d = directory
        try Self.run([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "\(d)/ca.key", "-out", "\(d)/ca.pem", "-days", "3", "-subj", "/CN=plunkd test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ])
        try Self.run([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "\(d)/server.key", "-out", "\(d)/server.csr", "-subj", "/CN=127.0.0.1",
        ])
        try "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: "\(d)/server.ext", atomically: true, encoding: .utf8)
        try "subjectAltName=DNS:other.example\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: "\(d)/other.ext", atomically: true, encoding: .utf8)
        for (name, ext) in [("server", "server.ext"), ("other", "other.ext")] {
            try Self.run([
                "x509", "-req", "-in", "\(d)/server.csr", "-CA", "\(d)/ca.pem", "-CAkey", "\(d)/ca.key",
                "-CAcreateserial", "-out", "\(d)/\(name).pem", "-days", "3", "-extfile", "\(d)/\(ext)",
            ])
        }
        try Self.run([
            "req", "-x509", "-key", "\(d)/server.key", "-out", "\(d)/self.pem", "-days", "3",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ])
        // An expired one needs `openssl ca`, the only command of OpenSSL 3.0 that takes dates.
        try FileManager.default.createDirectory(atPath: "\(d)/db", withIntermediateDirectories: true)
        try "".write(toFile: "\(d)/db/index.txt", atomically: true, encoding: .utf8)
        try "01\n".write(toFile: "\(d)/db/serial", atomically: true, encoding: .utf8)
        try """
        [ca]
        default_ca = test
        [test]
        database = \(d)/db/index.txt
        serial = \(d)/db/serial
        new_certs_dir = \(d)/db
        default_md = sha256
        policy = any
        unique_subject = no
        [any]
        commonName = supplied
        [ext]
        subjectAltName = IP:127.0.0.1
        basicConstraints = CA:FALSE
        extendedKeyUsage = serverAuth
        """.write(toFile: "\(d)/ca.cnf", atomically: true, encoding: .utf8)
        try Self.run([
            "ca", "-batch", "-config", "\(d)/ca.cnf", "-cert", "\(d)/ca.pem", "-keyfile", "\(d)/ca.key",
            "-in", "\(d)/server.csr", "-out", "\(d)/expired.pem", "-startdate", "20200101000000Z",
            "-enddate", "20200102000000Z", "-extensions", "ext", "-notext",
        ])
    }

    /// A server configuration presenting `server`'s certificate.
    public func serverTLS(_ server: Server) throws -> TLSConfiguration {
        TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile("\(directory)/\(server.rawValue).pem").map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: "\(directory)/server.key", format: .pem)))
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func run(_ arguments: [String]) throws {
        let result = try DaemonProcess.command(arguments, executable: "/usr/bin/openssl")
        guard result.status == 0 else {
            throw DaemonProcess.Failure(description: "openssl \(arguments.first ?? "") failed: \(result.stderr)")
        }
    }
}

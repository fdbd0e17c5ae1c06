import Foundation
import NIOSSL

/// Roots to trust for Plunk besides the system's (`plunk.ca_file`): a PEM bundle, read
/// whole at start and on SIGHUP so that a bad file is refused there, not at the next connect.
public enum TrustedRoots {
    public static func load(_ path: String) throws(ConfigurationError) -> [NIOSSLCertificate] {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw ConfigurationError("plunk.ca_file: cannot read \(path)")
        }
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw ConfigurationError("plunk.ca_file: \(path) is not a PEM bundle of certificates")
        }
        guard !certificates.isEmpty else {
            throw ConfigurationError("plunk.ca_file: \(path) holds no PEM certificate")
        }
        return certificates
    }
}

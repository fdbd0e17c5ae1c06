import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL

/// The one place that turns a failure below HTTP (TLS, DNS, TCP, the proxy, a deadline)
/// into the plain words status, `last_error` and the log show: what failed and where,
/// never a Swift type dump, an error code's build path or a proxy's password.
public enum TransportFailureText {
    /// Where the request was going, for the words.
    public struct Destination: Sendable {
        public var host: String
        public var port: Int
        /// The proxy's `host:port` when one is used (never its credentials).
        public var proxy: String?

        public init(host: String, port: Int, proxy: String? = nil) {
            self.host = host
            self.port = port
            self.proxy = proxy
        }
    }

    public static func describe(_ error: any Error, destination: Destination, timeout: Double) -> String {
        let host = destination.host
        if let error = error as? PlunkTransportError {
            switch error {
            case .deadlineExceeded:
                return "no answer from \(host) within \(format(timeout)) s"
            case .connectTimeout:
                return "connecting to \(destination.proxy.map { "the proxy \($0)" } ?? "\(host):\(destination.port)") timed out"
            case .closedBeforeAnswer:
                return "connection closed by \(host) before an answer"
            case .proxyAuthenticationRequired:
                return
                    "proxy \(destination.proxy ?? "?"): refused the tunnel to \(host): proxy authentication required (407); check the user and password in plunk.proxy or HTTPS_PROXY"
            case .proxyRefusedTunnel:
                return
                    "proxy \(destination.proxy ?? "?"): refused the tunnel to \(host):\(destination.port) (its answer to CONNECT was not 200, for example 403 or 502)"
            case .shutDown:
                return "plunkd is shutting down; the request to \(host) was not sent"
            case .streamReset(let code):
                return "\(host) reset the request's HTTP/2 stream (error code \(code)\(Self.http2ErrorName(code).map { ", \($0)" } ?? ""))"
            }
        }
        if let error = error as? HTTPParserError {
            // NIO's parser names the first byte it could not read ("invalid constant
            // string"): what matters is that the far side did not answer in HTTP.
            return "the answer from \(host) was not HTTP/1.1 (\(error)): is plunk.base_url a Plunk API, and is its scheme right?"
        }
        if error is any NIOHTTP2Error {
            // NIO's errors print their type, fields and the build path of the line that
            // raised them; the type's name is the part an operator can use.
            return
                "\(host) broke HTTP/2 (\(type(of: error))): the connection was dropped and the request is retried; if a proxy or load balancer in between mishandles HTTP/2, set plunk.http_version: http1"
        }
        if let error = error as? NIOSSLExtraError, error == .failedToValidateHostname {
            return "TLS: the certificate of \(host) is for another name (it does not list \(host))"
        }
        if let error = error as? NIOSSLError {
            return tls(error, host: host)
        }
        if let error = error as? BoringSSLError {
            // Raised setting TLS up, before any connection; on a minimal system, most often
            // because there are no CA certificates to load (the text was "unknownError([])").
            let reason = reasonCodes(error).last.map { " (\($0))" } ?? ""
            return
                "TLS: cannot set up TLS for \(host)\(reason): are the system's CA certificates installed (apt-get install ca-certificates)? A private CA goes in plunk.ca_file"
        }
        if let error = error as? NIOConnectionError {
            if error.connectionErrors.isEmpty, error.dnsAError != nil || error.dnsAAAAError != nil {
                return "cannot resolve \(error.host)"
            }
            if let first = error.connectionErrors.first {
                return "\(destination.proxy.map { "proxy \($0): " } ?? "")cannot connect to \(error.host):\(error.port): \(socketReason(first.error))"
            }
        }
        if let error = error as? IOError {
            return "\(destination.proxy.map { "proxy \($0): " } ?? "")connection to \(host) failed: \(String(cString: strerror(error.errnoCode)))"
        }
        if error is ChannelError {
            return "connection to \(host) failed: \(error)"
        }
        // Unknown kinds keep their text but never a path from the build machine.
        return strippingPaths("\(error)")
    }

    /// Whether `error` is a certificate that failed verification (worth a look at its dates).
    static func isCertificateVerifyFailure(_ error: any Error) -> Bool {
        guard case .handshakeFailed(let boring) = error as? NIOSSLError else { return false }
        return reasonCodes(boring).contains("CERTIFICATE_VERIFY_FAILED")
    }

    /// A TLS failure named by what went wrong, with BoringSSL's reason code for searching.
    static func tls(_ error: NIOSSLError, host: String) -> String {
        switch error {
        case .handshakeFailed(let boring):
            let reasons = reasonCodes(boring)
            if reasons.contains("CERTIFICATE_VERIFY_FAILED") {
                return
                    "TLS: the certificate of \(host) is not trusted (CERTIFICATE_VERIFY_FAILED): it is expired, self-signed or signed by a CA this machine does not trust; for a private CA set plunk.ca_file"
            }
            if reasons.contains("WRONG_VERSION_NUMBER") {
                return "TLS: \(host) did not answer TLS (WRONG_VERSION_NUMBER): is plunk.base_url https:// to a plain HTTP port?"
            }
            if let reason = reasons.last {
                return "TLS: the handshake with \(host) failed (\(reason))"
            }
            return "TLS: the handshake with \(host) failed"
        case .uncleanShutdown:
            return "TLS: \(host) closed the connection without a TLS close"
        case .noCertificateToValidate:
            return "TLS: \(host) sent no certificate"
        default:
            return "TLS: connection to \(host) failed (\(strippingPaths("\(error)")))"
        }
    }

    /// BoringSSL's reason codes (`CERTIFICATE_VERIFY_FAILED`) out of its error stack, whose
    /// text reads `error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED at <path>:<line>`.
    static func reasonCodes(_ error: BoringSSLError) -> [String] {
        let stack: NIOBoringSSLErrorStack
        switch error {
        case .sslError(let errors), .unknownError(let errors), .invalidSNIName(let errors), .failedToSetALPN(let errors):
            stack = errors
        default:
            return []
        }
        return stack.compactMap { entry in
            let text = "\(entry)"
            guard let start = text.range(of: "error:") else { return nil }
            var message = text[start.upperBound...]
            if let location = message.range(of: " at ") { message = message[..<location.lowerBound] }
            return message.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) }
        }
    }

    static func socketReason(_ error: any Error) -> String {
        if let error = error as? IOError {
            switch error.errnoCode {
            case ECONNREFUSED: return "connection refused"
            case ENETUNREACH: return "network unreachable"
            case EHOSTUNREACH: return "host unreachable"
            case ETIMEDOUT: return "timed out"
            default: return String(cString: strerror(error.errnoCode))
            }
        }
        return strippingPaths("\(error)")
    }

    /// Drops ` at /…/file.swift:123`-style locations that some errors carry.
    static func strippingPaths(_ text: String) -> String {
        var text = text
        while let range = text.range(of: #" at /[^ \]\)]*:\d+"#, options: .regularExpression) {
            text.removeSubrange(range)
        }
        return text
    }

    /// RFC 9113's name for an HTTP/2 error code, for the ones a server sends a client.
    private static func http2ErrorName(_ code: UInt32) -> String? {
        switch code {
        case 0x0: "NO_ERROR"
        case 0x1: "PROTOCOL_ERROR"
        case 0x2: "INTERNAL_ERROR"
        case 0x3: "FLOW_CONTROL_ERROR"
        case 0x5: "STREAM_CLOSED"
        case 0x7: "REFUSED_STREAM"
        case 0x8: "CANCEL"
        case 0xb: "ENHANCE_YOUR_CALM"
        case 0xd: "HTTP_1_1_REQUIRED"
        default: nil
        }
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

/// What failed below HTTP on plunkd's own connections to Plunk (`PlunkConnections`).
enum PlunkTransportError: Error, Equatable {
    /// `plunk.request_timeout` passed before the answer was read.
    case deadlineExceeded
    case connectTimeout
    case closedBeforeAnswer
    /// The proxy answered CONNECT with 407.
    case proxyAuthenticationRequired
    /// The proxy answered CONNECT with something else than 200.
    case proxyRefusedTunnel
    /// The client shut down before the request could be sent or answered.
    case shutDown
    /// Plunk reset the request's HTTP/2 stream (RST_STREAM, or a GOAWAY that cut it off)
    /// with this error code.
    case streamReset(UInt32)
}

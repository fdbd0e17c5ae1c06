import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// Why Plunk's certificate failed verification, when the dates tell.
///
/// BoringSSL reports every failed chain as `CERTIFICATE_VERIFY_FAILED` and NIO SSL does not
/// pass on its verify result, so an expired certificate reads like an untrusted one. After
/// such a failure this asks the server once more for its certificate, without trusting it
/// (nothing is sent), and reads the leaf's validity. Only after a verify failure, so it
/// costs nothing while TLS works; not through a proxy, where the text stays general.
enum CertificateDiagnosis {
    struct Validity: Sendable {
        var notBefore: Date
        var notAfter: Date
    }

    static func leafValidity(host: String, port: Int, group: any EventLoopGroup, timeout: TimeAmount) -> EventLoopFuture<Validity?> {
        let eventLoop = group.next()
        let found = eventLoop.makePromise(of: Validity?.self)
        let context: NIOSSLContext
        do {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .noHostnameVerification
            context = try NIOSSLContext(configuration: tls)
        } catch {
            found.succeed(nil)
            return found.futureResult
        }
        let isAddress = (try? SocketAddress(ipAddress: host, port: port)) != nil
        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = try NIOSSLClientHandler(
                        context: context, serverHostname: isAddress ? nil : host,
                        customVerificationCallback: { chain, verdict in
                            let leaf = chain.first.map {
                                Validity(
                                    notBefore: Date(timeIntervalSince1970: Double($0.notValidBefore)),
                                    notAfter: Date(timeIntervalSince1970: Double($0.notValidAfter)))
                            }
                            found.succeed(leaf)
                            // Refused on purpose: only the certificate was wanted.
                            verdict.succeed(.failed)
                        })
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port)
        connected.whenFailure { _ in found.succeed(nil) }
        let deadline = eventLoop.scheduleTask(in: timeout) { found.succeed(nil) }
        found.futureResult.whenComplete { _ in
            deadline.cancel()
            connected.whenSuccess { $0.close(promise: nil) }
        }
        return found.futureResult
    }

    /// The plain words for a verify failure, given what the dates say.
    static func text(host: String, validity: Validity?, now: Date) -> String? {
        guard let validity else { return nil }
        if validity.notAfter < now {
            return "TLS: the certificate of \(host) has expired (on \(iso(validity.notAfter))) (CERTIFICATE_VERIFY_FAILED)"
        }
        if validity.notBefore > now {
            return
                "TLS: the certificate of \(host) is not valid yet (from \(iso(validity.notBefore))); is this machine's clock right? (CERTIFICATE_VERIFY_FAILED)"
        }
        return nil
    }

    private static func iso(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: date)
    }
}

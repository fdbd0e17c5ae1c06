import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// Sends one event to Plunk and reports the answer; the sender decides what it means.
public protocol PlunkTransport: Sendable {
    func post(body: Data, idempotencyKey: String, apiKey: APIKey, completion: @escaping @Sendable (PlunkAnswer) -> Void)
    func shutdown() async
}

/// Which HTTP `PlunkClient` speaks (`plunk.http_version`).
public enum PlunkHTTPVersion: String, Sendable, Equatable {
    /// HTTP/2 where TLS's ALPN offers it: every request in flight shares one connection
    /// (one handshake, one slow start) instead of one connection each; HTTP/1.1 otherwise,
    /// and always over plain http://.
    case auto
    /// HTTP/1.1 only: the way out for a proxy or load balancer that mishandles HTTP/2.
    case http1
}

/// `POST {base_url}/track` (or `/send`, for the email line's client) on plunkd's own
/// connections (`PlunkConnections`): HTTP/2 where TLS's ALPN offers it (`auto`), else
/// keep-alive HTTP/1.1, directly or through a proxy's CONNECT tunnel. No redirects
/// followed (a redirect means a wrong `base_url`, which the operator should see rather
/// than have silently followed), and a per-request deadline.
///
/// A connection that cannot be made (refused, DNS, a TLS handshake the certificate
/// fails) fails its request at once instead of being retried inside the client until the
/// connect deadline: the sender has its own backoff, and the operator sees the cause in
/// status seconds sooner.
public final class PlunkClient: PlunkTransport {
    private let userAgent = "plunkd/\(PlunkdVersion.string)"
    private let requestTimeout: TimeAmount
    private let destination: TransportFailureText.Destination
    private let eventLoopGroup: any EventLoopGroup
    private let connections: PlunkConnections
    /// The request's target: the path on Plunk's host.
    private let path: String

    public init(
        baseURL: URL, concurrency: Int, requestTimeout: Double, eventLoopGroup: any EventLoopGroup,
        extraTrustRoots: [NIOSSLCertificate]? = nil, proxy: ProxyEndpoint? = nil, httpVersion: PlunkHTTPVersion = .auto,
        kind: EventKind = .track
    ) {
        let timeout = TimeAmount.nanoseconds(Int64(requestTimeout * 1e9))
        self.eventLoopGroup = eventLoopGroup
        self.requestTimeout = timeout
        let https = baseURL.scheme?.lowercased() == "https"
        let host = baseURL.host ?? "?"
        let port = baseURL.port ?? (https ? 443 : 80)
        destination = .init(host: host, port: port, proxy: proxy?.address)
        var path = baseURL.path
        if path.hasSuffix("/") { path.removeLast() }
        self.path = path + kind.plunkPath + (baseURL.query.map { "?\($0)" } ?? "")
        let bracketed = host.contains(":") ? "[\(host)]" : host
        let authority = baseURL.port.map { "\(bracketed):\($0)" } ?? bracketed
        connections = PlunkConnections(
            target: .init(
                host: host, port: port, tls: https, authority: authority, offersHTTP2: httpVersion == .auto,
                proxy: proxy.map { ($0.host, $0.port, $0.authorization) }),
            limit: concurrency, connectTimeout: min(timeout, .seconds(10)), loop: eventLoopGroup.next(),
            tls: Self.tlsConfiguration(trusting: extraTrustRoots))
    }

    /// Trusts `roots` besides the system's from the next request on (nil: the system's only).
    public func trust(extraRoots roots: [NIOSSLCertificate]?) {
        connections.useTLS(Self.tlsConfiguration(trusting: roots))
    }

    private static func tlsConfiguration(trusting roots: [NIOSSLCertificate]?) -> TLSConfiguration? {
        guard let roots, !roots.isEmpty else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.certificates(roots)]
        return tls
    }

    public func post(body: Data, idempotencyKey: String, apiKey: APIKey, completion: @escaping @Sendable (PlunkAnswer) -> Void) {
        var headers = HTTPHeaders()
        headers.reserveCapacity(6)
        headers.add(name: "Authorization", value: "Bearer \(apiKey.value)")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Idempotency-Key", value: idempotencyKey)
        headers.add(name: "User-Agent", value: userAgent)
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)
        let exchange = PlunkExchange(head: head, body: ByteBuffer(bytes: body), deadline: .now() + requestTimeout) { result in
            self.finish(result, completion: completion)
        }
        connections.send(exchange)
    }

    /// Hands the answer on, or a failure in plain words (a certificate that failed
    /// verification is looked at for its dates first).
    private func finish(_ result: Result<PlunkAnswer, any Error>, completion: @escaping @Sendable (PlunkAnswer) -> Void) {
        switch result {
        case .success(let answer): completion(answer)
        case .failure(let error):
            let timeoutSeconds = Double(requestTimeout.nanoseconds) / 1e9
            let destination = destination
            let text = TransportFailureText.describe(error, destination: destination, timeout: timeoutSeconds)
            guard destination.proxy == nil, TransportFailureText.isCertificateVerifyFailure(error) else {
                completion(.transportFailure(text))
                return
            }
            CertificateDiagnosis.leafValidity(
                host: destination.host, port: destination.port, group: eventLoopGroup, timeout: .seconds(5)
            ).whenComplete { validity in
                let dated = CertificateDiagnosis.text(host: destination.host, validity: try? validity.get(), now: Date())
                completion(.transportFailure(dated ?? text))
            }
        }
    }

    public func shutdown() async {
        await connections.shutdown()
    }
}

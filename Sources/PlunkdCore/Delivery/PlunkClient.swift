import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
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

/// `POST {base_url}/track` (or `/send`, for the email line's client) by one of two paths:
/// plunkd's own keep-alive HTTP/1.1 connections (`PlunkHTTP1Connections`) for `http://`
/// and `http_version: http1` without a proxy, where async-http-client's per-request cost
/// was about a third of delivery's CPU; AsyncHTTPClient for HTTP/2 and proxies, where its
/// multiplexing and CONNECT tunnels earn their cost. Over h2 the requests in flight are
/// streams of one connection, else a pooled keep-alive connection each; no
/// redirects followed (a redirect means a wrong `base_url`, which the operator should see
/// rather than have silently followed), and a per-request deadline.
///
/// A connection that cannot be made (refused, DNS, a TLS handshake the certificate
/// fails) fails its request at once instead of being retried inside the client until the
/// connect deadline: the sender has its own backoff, and the operator sees the cause in
/// status seconds sooner.
public final class PlunkClient: PlunkTransport {
    private let client: HTTPClient
    private let url: String
    /// Built once: every request differs only in headers and body, and building one from
    /// the URL text parses it again, with Foundation's URL, for every event.
    private let template: Result<HTTPClient.Request, any Error>
    private let userAgent = "plunkd/\(PlunkdVersion.string)"
    private let requestTimeout: TimeAmount
    private let destination: TransportFailureText.Destination
    /// The TLS configuration with `plunk.ca_file`'s roots, or nil for the client's own
    /// (the system store). Replaced on SIGHUP; requests use it from then on.
    private let customTLS: NIOLockedValueBox<TLSConfiguration?>
    private let eventLoopGroup: any EventLoopGroup
    /// plunkd's own HTTP/1.1 path, for `http://` and `http_version: http1` without a
    /// proxy; nil where async-http-client serves (HTTP/2, proxies).
    private let http1: PlunkHTTP1Connections?
    private let http1Path: String

    public init(
        baseURL: URL, concurrency: Int, requestTimeout: Double, eventLoopGroup: any EventLoopGroup,
        extraTrustRoots: [NIOSSLCertificate]? = nil, proxy: ProxyEndpoint? = nil, httpVersion: PlunkHTTPVersion = .auto,
        kind: EventKind = .track
    ) {
        let timeout = TimeAmount.nanoseconds(Int64(requestTimeout * 1e9))
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            timeout: .init(connect: min(timeout, .seconds(10))),
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: concurrency))
        configuration.httpVersion = httpVersion == .http1 ? .http1Only : .automatic
        configuration.connectionPool.retryConnectionEstablishment = false
        // No spans: plunkd bootstraps no tracer, and the no-op one still cost a span, its
        // attributes and the URL's text per request (about 3 % of delivery's CPU).
        configuration.tracing.tracer = nil
        if let proxy {
            let authorization = proxy.username.map { HTTPClient.Authorization.basic(username: $0, password: proxy.password ?? "") }
            configuration.proxy = .server(host: proxy.host, port: proxy.port, authorization: authorization)
        }
        client = HTTPClient(eventLoopGroupProvider: .shared(eventLoopGroup), configuration: configuration)
        self.eventLoopGroup = eventLoopGroup
        let url = baseURL.absoluteString + kind.plunkPath
        self.url = url
        template = Result { try HTTPClient.Request(url: url, method: .POST) }
        self.requestTimeout = timeout
        let https = baseURL.scheme?.lowercased() == "https"
        let host = baseURL.host ?? "?"
        let port = baseURL.port ?? (https ? 443 : 80)
        destination = .init(host: host, port: port, proxy: proxy?.address)
        let tls = Self.tlsConfiguration(trusting: extraTrustRoots)
        customTLS = NIOLockedValueBox(tls)
        if proxy == nil, !https || httpVersion == .http1 {
            var path = baseURL.path
            if path.hasSuffix("/") { path.removeLast() }
            path += kind.plunkPath
            let bracketed = host.contains(":") ? "[\(host)]" : host
            let authority = baseURL.port.map { "\(bracketed):\($0)" } ?? bracketed
            http1 = PlunkHTTP1Connections(
                target: .init(host: host, port: port, tls: https, authority: authority), limit: concurrency,
                connectTimeout: min(timeout, .seconds(10)), loop: eventLoopGroup.next(), tls: tls)
            http1Path = path + (baseURL.query.map { "?\($0)" } ?? "")
        } else {
            http1 = nil
            http1Path = ""
        }
    }

    /// Trusts `roots` besides the system's from the next request on (nil: the system's only).
    public func trust(extraRoots roots: [NIOSSLCertificate]?) {
        let tls = Self.tlsConfiguration(trusting: roots)
        customTLS.withLockedValue { $0 = tls }
        http1?.useTLS(tls)
    }

    private static func tlsConfiguration(trusting roots: [NIOSSLCertificate]?) -> TLSConfiguration? {
        guard let roots, !roots.isEmpty else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.certificates(roots)]
        return tls
    }

    public func post(body: Data, idempotencyKey: String, apiKey: APIKey, completion: @escaping @Sendable (PlunkAnswer) -> Void) {
        if let http1 {
            var headers = HTTPHeaders()
            headers.reserveCapacity(6)
            headers.add(name: "Authorization", value: "Bearer \(apiKey.value)")
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(body.count))
            headers.add(name: "Idempotency-Key", value: idempotencyKey)
            headers.add(name: "User-Agent", value: userAgent)
            let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: http1Path, headers: headers)
            let exchange = PlunkExchange(head: head, body: ByteBuffer(bytes: body), deadline: .now() + requestTimeout) { result in
                self.finish(result, completion: completion)
            }
            http1.send(exchange)
            return
        }
        var request: HTTPClient.Request
        do {
            request = try template.get()
        } catch {
            completion(.transportFailure("cannot build the request to \(url): \(error)"))
            return
        }
        request.headers.reserveCapacity(4)
        request.headers.add(name: "Authorization", value: "Bearer \(apiKey.value)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Idempotency-Key", value: idempotencyKey)
        request.headers.add(name: "User-Agent", value: userAgent)
        request.body = .data(body)
        if let tls = customTLS.withLockedValue({ $0 }) { request.tlsConfiguration = tls }
        client.execute(request: request, delegate: AnswerCollector(), deadline: .now() + requestTimeout)
            .futureResult.whenComplete { result in self.finish(result, completion: completion) }
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
        await http1?.shutdown()
        try? await client.shutdown()
    }
}

/// Keeps the status, `Retry-After`, the `RateLimit-*` headers and the first 4 KiB of the
/// body; drops the rest, so a large error page cannot grow memory or turn a clear status
/// into a body-size error.
private final class AnswerCollector: HTTPClientResponseDelegate, @unchecked Sendable {
    typealias Response = PlunkAnswer

    private var status = 0
    private var retryAfter: String?
    private var rateLimit: RateLimitHeaders?
    private var body = Data()

    func didReceiveHead(task: HTTPClient.Task<PlunkAnswer>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        status = Int(head.status.code)
        retryAfter = head.headers.first(name: "Retry-After")
        rateLimit = RateLimitHeaders.read { head.headers.first(name: $0) }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<PlunkAnswer>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        let room = PlunkAnswer.keptBodyBytes - body.count
        if room > 0 {
            body.append(contentsOf: buffer.readableBytesView.prefix(room))
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<PlunkAnswer>) throws -> PlunkAnswer {
        .response(status: status, retryAfter: retryAfter, rateLimit: rateLimit, body: body)
    }
}

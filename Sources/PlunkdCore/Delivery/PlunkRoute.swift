import Foundation

/// An HTTP proxy to reach Plunk through (`plunk.proxy`, or `HTTPS_PROXY`): HTTPS to
/// Plunk goes through it in a CONNECT tunnel. Its description never shows the password.
public struct ProxyEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var username: String?
    public var password: String?

    public init(host: String, port: Int, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
    }

    /// `host:port`, for errors about the proxy.
    public var address: String { HostAndPort(host: host, port: port).description }

    /// The `Proxy-Authorization` header's value for the tunnel (Basic), nil without a user.
    var authorization: String? {
        username.map { "Basic " + Data("\($0):\(password ?? "")".utf8).base64EncodedString() }
    }

    public var description: String {
        "http://\(username != nil ? "<credentials>@" : "")\(address)"
    }

    /// Reads `http://[user:password@]host[:port]` (port 80 when absent, as curl does for
    /// http). Returns nil for anything else; the caller says what was wrong without
    /// repeating the text, which may hold a password.
    public static func parse(_ text: String) -> ProxyEndpoint? {
        var text = text.trimmingCharacters(in: .whitespaces)
        // `host:port` without a scheme is what curl and most tools take too.
        if !text.contains("://") { text = "http://" + text }
        guard let components = URLComponents(string: text), components.scheme?.lowercased() == "http",
            let host = components.host, !host.isEmpty,
            components.path.isEmpty || components.path == "/", components.query == nil
        else { return nil }
        let port = components.port ?? 80
        guard (1...65535).contains(port) else { return nil }
        return ProxyEndpoint(
            host: host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port,
            username: components.percentEncodedUser.flatMap { $0.removingPercentEncoding },
            password: components.percentEncodedPassword.flatMap { $0.removingPercentEncoding })
    }
}

/// `NO_PROXY` / `no_proxy` as curl reads it: comma-separated names, each matching the host
/// itself and every name under it (`example.com` and `.example.com` both match
/// `api.example.com`), or `*` for every host. Ports and CIDR ranges are not read.
public struct NoProxyList: Sendable, Equatable {
    public let entries: [String]

    public init(_ text: String) {
        entries = text.split(separator: ",").map {
            $0.trimmingCharacters(in: .whitespaces).lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "."))
        }.filter { !$0.isEmpty }
    }

    public func excludes(host: String) -> Bool {
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]."))
        return entries.contains { $0 == "*" || host == $0 || host.hasSuffix("." + $0) }
    }
}

import Foundation

/// Valid configurations that will still not work as meant: said by `check-config` and at start.
public enum ConfigAdvice {
    /// The host of Plunk's v2 API, where track accepts only public (`pk_`) keys.
    static let v2Hosts: Set<String> = ["next-api.useplunk.com"]

    public static func warnings(for config: DaemonConfiguration) -> [String] {
        var warnings: [String] = []
        let host = config.plunkBaseURL.host?.lowercased() ?? ""
        if config.apiKey?.kindPrefix == "sk_" && v2Hosts.contains(host) {
            warnings.append(
                "plunk.api_key is a secret (sk_) key, but \(host) runs Plunk v2, where /track needs the public (pk_) key: every event would be refused with 401"
            )
        }
        if let key = config.apiKey, key.kindPrefix.isEmpty {
            warnings.append("plunk.api_key starts with neither sk_ nor pk_; Plunk keys do")
        }
        if config.plunkBaseURL.scheme?.lowercased() == "http" && !["localhost", "127.0.0.1", "::1"].contains(host) {
            warnings.append("plunk.base_url uses plain http to \(host): the API key would cross the network unencrypted")
        }
        if let listen = config.metricsListen, !listen.isLoopback {
            warnings.append("metrics.listen \(listen) is not a loopback address: anyone who can reach it reads plunkd's counts")
        }
        return warnings
    }
}

import Foundation

/// Valid configurations that will still not work as meant: said by `check-config` and at start.
public enum ConfigAdvice {
    /// The host of Plunk's v2 API, whose 0.13-0.16 track accepted only public (`pk_`) keys.
    static let v2Hosts: Set<String> = ["next-api.useplunk.com"]

    /// What plunkd does with a key Plunk kept after a failed first attempt, and for which
    /// Plunk that is right: `check-config`'s explanation of `plunk.rekey_burned_track_keys`.
    public static func burnedKeyChoice(for config: DaemonConfiguration) -> String {
        let email = "emails are parked uncertain and sent again only by plunkd parked retry --email --new-key"
        if config.rekeyBurnedTrackKeys {
            return "re-key track (plunk.rekey_burned_track_keys: true): track events are sent again under a new key, "
                + "right only for self-hosted Plunk 0.13-0.16, which can fail without storing; on a newer Plunk each makes a second event; \(email)"
        }
        return "follow Plunk (plunk.rekey_burned_track_keys: false): Plunk finishes a stored track event itself, so it counts as delivered; "
            + "on self-hosted Plunk 0.13-0.16 such an event can be lost (set true there); \(email)"
    }

    public static func warnings(for config: DaemonConfiguration) -> [String] {
        var warnings: [String] = []
        let host = config.plunkBaseURL.host?.lowercased() ?? ""
        if config.apiKey?.kindPrefix == "sk_" && v2Hosts.contains(host) {
            // Plunk's newest API reference takes pk_ or sk_ on /track; the 0.13-0.16 code
            // (requirePublicKey) refused sk_ with 401. pk_ works on every v2 release.
            warnings.append(
                "plunk.api_key is a secret (sk_) key and \(host) runs Plunk v2: its newest releases take it on /track, but v2 0.13-0.16 refuse it with 401 (every event parked unauthorized); the public (pk_) key works on every v2 release, and keeps the secret key off this host's track line"
            )
        }
        if let key = config.apiKey, key.kindPrefix.isEmpty {
            warnings.append("plunk.api_key starts with neither sk_ nor pk_; Plunk keys do")
        }
        if config.plunkBaseURL.scheme?.lowercased() == "http" && !["localhost", "127.0.0.1", "::1"].contains(host) {
            warnings.append("plunk.base_url uses plain http to \(host): the API key would cross the network unencrypted")
        }
        if let file = config.apiKeyFile, let problem = keyFileProblem(file) {
            warnings.append(problem)
        }
        if let file = config.secretKeyFile, let problem = keyFileProblem(file, key: "plunk.secret_key_file") {
            warnings.append(problem)
        }
        if config.secretKey?.kindPrefix == "pk_" {
            warnings.append("plunk.secret_key is a public (pk_) key: Plunk's /v1/send needs the secret (sk_) key, so every email would be refused with 401")
        }
        if let file = config.ingestTokensFile,
            let problem = keyFileProblem(
                file, key: config.ingestTokensInConfigFile ? "ingest.tokens: the config file" : "ingest.tokens_file",
                movingTo: config.ingestTokensInConfigFile ? "move the tokens to ingest.tokens_file (mode 0640), or" : nil)
        {
            // The config file is 0644 as the package installs it: any local user could
            // read a token there and submit events, whatever socket.allowed_uids says.
            warnings.append(problem)
        }
        if !config.ingestTokens.isEmpty && config.ingestListen == nil {
            warnings.append("ingest.tokens are set but ingest.listen is not: no TCP listener is served, the tokens admit nothing")
        }
        if config.idempotencyWindow < 86_400 {
            // Plunk v2 keeps a key at least 24 h: a key reused after plunkd forgot it is
            // stored as a new event here and answered 409 "already done" there.
            warnings.append(
                "ingest.idempotency_window is shorter than Plunk's 24 h: an Idempotency-Key reused after plunkd forgets it would be queued again, and Plunk v2 would answer it as already stored, so the new event would be counted delivered without reaching Plunk"
            )
        }
        if let listen = config.ingestListen, !listen.isLoopback {
            warnings.append(
                "ingest.listen \(listen) is not a loopback address: other hosts may submit events with a token, and tokens and events cross the network in plain HTTP"
            )
        }
        if let listen = config.metricsListen, !listen.isLoopback {
            warnings.append("metrics.listen \(listen) is not a loopback address: anyone who can reach it reads plunkd's counts")
        }
        return warnings
    }

    /// A key file that every user may read, or that others may change, as OpenSSH warns of
    /// a private key. Group read is fine: the package's file is root:plunkd 0640.
    static func keyFileProblem(_ path: String, key: String = "plunk.api_key_file", movingTo: String? = nil) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        let mode = info.st_mode & 0o777
        let octal = String(mode, radix: 8)
        if mode & 0o022 != 0 {
            return "\(key) \(path) may be changed by users other than its owner (mode 0\(octal)): chmod 0640 \(path)"
        }
        if mode & 0o004 != 0 {
            return
                "\(key) \(path) is readable by every user (mode 0\(octal)): \(movingTo.map { "\($0) " } ?? "")chmod 0640 \(path) (0600 if only its owner runs plunkd)"
        }
        return nil
    }
}

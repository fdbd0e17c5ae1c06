import Configuration
import Foundation
import SystemPackage

/// A configuration as loaded, with what was noticed on the way.
public struct LoadedConfiguration: Sendable {
    public let configuration: DaemonConfiguration
    /// Unknown keys and similar: worth a warning, not worth refusing to start.
    public let warnings: [String]
    /// The file read, if any.
    public let file: String?
}

/// Reads the configuration: defaults, overlaid by the YAML file, overlaid by the environment.
public enum ConfigLoader {
    public static let defaultFile = "/etc/plunkd/plunkd.yaml"

    /// The file read when none is named: the plain service's, or the instance's own.
    public static func defaultFile(for instance: InstanceName?) -> String { instance?.configFile ?? defaultFile }
    /// systemd credential name (`LoadCredential=plunk-api-key:…`).
    public static let credentialName = "plunk-api-key"
    /// The secret key's credential (`LoadCredential=plunk-secret-key:…`), for `/v1/send`.
    public static let secretCredentialName = "plunk-secret-key"

    /// - Parameters:
    ///   - file: an explicit file (`--config`), which must exist; without one,
    ///     `$PLUNKD_CONFIG`, else `defaultFile` when it exists, else none.
    ///   - defaultFile: nil in tests, which must never read the host's configuration.
    ///   - instance: `plunkd@NAME`: its file (`/etc/plunkd/NAME.yaml`) is the default file,
    ///     and its paths the default paths.
    public static func load(
        file explicitFile: String?, environment: [String: String], uid: UInt32, defaultFile: String? = defaultFile,
        instance: InstanceName? = nil
    ) async throws(ConfigurationError) -> LoadedConfiguration {
        let file =
            explicitFile ?? environment[ConfigKeys.configFileVariable].flatMap { $0.isEmpty ? nil : $0 }
            ?? defaultFile.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        var warnings: [String] = []
        var providers: [any ConfigProvider] = [
            KeyMappingProvider(upstream: EnvironmentVariablesProvider(environmentVariables: environment), keyMapper: ConfigKeys.environmentKey)
        ]
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ConfigurationError(
                    "cannot read config file \(file): \(FileManager.default.fileExists(atPath: file) ? "permission denied" : "no such file")")
            }
            warnings += try ConfigFileShape.check(yaml: String(decoding: data, as: UTF8.self), file: file)
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
            } catch {
                throw ConfigurationError("cannot load config file \(file): \(error)")
            }
        }
        for name in environment.keys where name.hasPrefix("PLUNKD_") && name != ConfigKeys.configFileVariable {
            if !ConfigKeys.all.contains(where: { ConfigKeys.environmentVariable(for: $0) == name }) {
                warnings.append("unknown environment variable \(name) is ignored")
            }
        }
        let values = ConfigValues(reader: ConfigReader(providers: providers), environment: environment, file: file)
        var config = DaemonConfiguration.defaults(uid: uid, environment: environment, instance: instance)
        try values.apply(to: &config)
        return LoadedConfiguration(configuration: config, warnings: warnings, file: file)
    }
}

/// Reads each known key as text and parses it into the configuration.
private struct ConfigValues {
    let reader: ConfigReader
    let environment: [String: String]
    let file: String?

    func apply(to config: inout DaemonConfiguration) throws(ConfigurationError) {
        for setting in Settings.all {
            switch setting.reading {
            case .value(let read):
                if let text = value(setting.key, secret: setting.isSecret) { try read(text, &config) }
            case .list(let read):
                if let items = list(setting.key) { try read(items, &config) }
            case .derived:
                break
            }
        }
        guard config.initialBackoff <= config.maxBackoff else {
            throw ConfigurationError("retry.initial_backoff (\(config.initialBackoff) s) must not exceed retry.max_backoff (\(config.maxBackoff) s)")
        }
        (config.apiKey, config.apiKeyFile) = try key(setting: "plunk.api_key", credential: ConfigLoader.credentialName)
        (config.secretKey, config.secretKeyFile) = try key(setting: "plunk.secret_key", credential: ConfigLoader.secretCredentialName)
        (config.proxy, config.proxySource) = try proxy(for: config.plunkBaseURL)
        (config.ingestTokens, config.ingestTokensFile) = try ingestTokens()
        config.ingestTokensInConfigFile = config.ingestTokensFile != nil && config.ingestTokensFile == file
        if let listen = config.ingestListen {
            guard !config.ingestTokens.isEmpty else {
                throw ConfigurationError(
                    "ingest.listen \(listen) needs at least one token in ingest.tokens or ingest.tokens_file: TCP carries no peer credentials, so a client proves itself with Authorization: Bearer <token>"
                )
            }
            guard listen.isLoopback || config.ingestListenBeyondLoopback else {
                throw ConfigurationError(
                    "ingest.listen \(listen) is not a loopback address: set ingest.listen_beyond_loopback: true to serve other hosts (plain HTTP: tokens and events would cross the network unencrypted)"
                )
            }
        }
    }

    /// `ingest.tokens`, else the lines of `ingest.tokens_file`. Errors name a token by its
    /// place, never its text.
    private func ingestTokens() throws(ConfigurationError) -> (IngestTokens, file: String?) {
        if let listed = list("ingest.tokens", secret: true), !listed.items.isEmpty {
            if let problem = IngestTokens.problem(listed.items, key: "ingest.tokens") { throw ConfigurationError(problem) }
            let fromEnvironment = environment[ConfigKeys.environmentVariable(for: "ingest.tokens")].map { !$0.isEmpty } ?? false
            return (IngestTokens(listed.items), fromEnvironment ? nil : file)
        }
        guard let v = value("ingest.tokens_file") else { return (IngestTokens([]), nil) }
        let path = try v.path()
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError("ingest.tokens_file: cannot read \(path)")
        }
        let tokens = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        if let problem = IngestTokens.problem(tokens, key: "ingest.tokens_file \(path)") { throw ConfigurationError(problem) }
        return (IngestTokens(tokens), path)
    }

    /// `plunk.proxy`, else the environment's proxy for Plunk's scheme as curl reads it
    /// (`https_proxy`/`HTTPS_PROXY` for https, `http_proxy` for http), unless `no_proxy`/
    /// `NO_PROXY` names Plunk's host. Errors never repeat the value: it may hold a password.
    private func proxy(for baseURL: URL) throws(ConfigurationError) -> (ProxyEndpoint?, String?) {
        let expected = "an http:// proxy URL such as http://proxy.example.com:3128 or http://user:password@proxy:3128"
        if let v = value("plunk.proxy", secret: true) {
            guard let proxy = ProxyEndpoint.parse(v.text) else {
                throw ConfigurationError("plunk.proxy: expected \(expected) (from \(v.source))")
            }
            return (proxy, "plunk.proxy")
        }
        let names = baseURL.scheme?.lowercased() == "https" ? ["https_proxy", "HTTPS_PROXY"] : ["http_proxy"]
        guard let name = names.first(where: { environment[$0].map { !$0.isEmpty } ?? false }), let text = environment[name] else {
            return (nil, nil)
        }
        let noProxy = NoProxyList(environment["no_proxy"] ?? environment["NO_PROXY"] ?? "")
        if noProxy.excludes(host: baseURL.host ?? "") { return (nil, nil) }
        guard let proxy = ProxyEndpoint.parse(text) else {
            throw ConfigurationError("environment variable \(name): expected \(expected)")
        }
        return (proxy, name)
    }

    /// The key from `setting` (`plunk.api_key`), else the file `<setting>_file` names,
    /// else the systemd credential. Errors name the key and the file, never the key's value.
    private func key(setting: String, credential: String) throws(ConfigurationError) -> (APIKey?, file: String?) {
        if let v = value(setting, secret: true) {
            return (APIKey(v.text.trimmingCharacters(in: .whitespacesAndNewlines)), nil)
        }
        if let v = value("\(setting)_file") {
            // An empty file means "no key yet", as an empty credential does: the service's
            // key file exists from installation on, empty until the operator writes the key.
            let path = try v.path()
            switch KeyFile.read(path) {
            case .key(let key): return (key, path)
            case .empty: return (nil, path)
            case .unreadable, .missing: throw ConfigurationError("\(setting)_file: cannot read \(path)")
            }
        }
        if let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty {
            // An empty credential means "no key yet" (the unit's LoadCredential= needs a
            // file to exist): events are kept and status says no_api_key.
            let path = "\(directory)/\(credential)"
            switch KeyFile.read(path) {
            case .key(let key): return (key, nil)
            case .empty, .missing, .unreadable: break
            }
        }
        return (nil, nil)
    }

    /// The items of a list key: a YAML list, or one comma-separated string.
    private func list(_ key: String, secret: Bool = false) -> ConfigListParser? {
        let items: [String]
        if let array = reader.stringArray(forKey: ConfigKey(key), isSecret: secret) {
            items = array
        } else if let text = reader.string(forKey: ConfigKey(key), isSecret: secret) {
            items = text.split(separator: ",").map(String.init)
        } else {
            return nil
        }
        let trimmed = items.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return ConfigListParser(key: key, items: trimmed, source: source(of: key))
    }

    /// The text for `key`, or nil when unset or empty (`key:` with no value, or `~`).
    private func value(_ key: String, secret: Bool = false) -> ConfigValueParser? {
        guard let text = reader.string(forKey: ConfigKey(key), isSecret: secret),
            !["", "~", "null"].contains(text.trimmingCharacters(in: .whitespaces))
        else { return nil }
        return ConfigValueParser(key: key, text: text.trimmingCharacters(in: .whitespaces), source: source(of: key))
    }

    /// Where the value of `key` came from, for errors: its environment variable, else the file.
    private func source(of key: String) -> String {
        let variable = ConfigKeys.environmentVariable(for: key)
        return environment[variable].map { !$0.isEmpty } == true ? "environment variable \(variable)" : (file ?? "defaults")
    }
}

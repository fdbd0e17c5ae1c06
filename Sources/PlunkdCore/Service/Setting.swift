import Foundation

/// One configuration key: see `Settings`.
public struct Setting: Sendable {
    public let key: String
    public let defaultValue: String
    public let meaning: String
    /// Applied by SIGHUP (`systemctl reload plunkd`); the others need a restart.
    public let reloads: Bool
    /// A YAML list, or one comma-separated string.
    public let isList: Bool
    /// Never shown: read with swift-configuration's secret flag, so its value stays out of
    /// access logs and errors.
    public let isSecret: Bool

    /// How the key's text is read into the configuration.
    enum Reading: Sendable {
        case value(@Sendable (ConfigValueParser, inout DaemonConfiguration) throws(ConfigurationError) -> Void)
        case list(@Sendable (ConfigListParser, inout DaemonConfiguration) throws(ConfigurationError) -> Void)
        /// Read by a rule of its own after the others (the API key's sources, the proxy's
        /// fallback to the environment): see `ConfigValues`.
        case derived
    }

    let reading: Reading
    /// Whether two configurations differ in this key's field.
    let changed: @Sendable (DaemonConfiguration, DaemonConfiguration) -> Bool

    /// Reads the stated default as though it were the key's text, so that each default is
    /// written once, here in `Settings.all`. False when the default describes a value rather
    /// than spelling it ("none", "one second of plunk.max_rate"), or the key is derived:
    /// `DaemonConfiguration.defaults` sets those itself.
    @discardableResult
    func readStatedDefault(into config: inout DaemonConfiguration) -> Bool {
        let source = "the stated default"
        do {
            switch reading {
            case .value(let read):
                try read(ConfigValueParser(key: key, text: defaultValue, source: source), &config)
            case .list(let read):
                // "empty (anyone the socket's mode lets in)": no items; the rest is why.
                let items = defaultValue == "none" || defaultValue.hasPrefix("empty") ? [] : defaultValue.split(separator: ",").map(String.init)
                try read(ConfigListParser(key: key, items: items, source: source), &config)
            case .derived:
                return false
            }
            return true
        } catch {
            return false
        }
    }

    static func value<T: Equatable & Sendable>(
        _ key: String, _ field: WritableKeyPath<DaemonConfiguration, T> & Sendable, default defaultValue: String,
        reloads: Bool = false, _ meaning: String,
        parse: @escaping @Sendable (ConfigValueParser) throws(ConfigurationError) -> T
    ) -> Setting {
        Setting(
            key: key, defaultValue: defaultValue, meaning: meaning, reloads: reloads, isList: false, isSecret: false,
            reading: .value { text, config throws(ConfigurationError) in config[keyPath: field] = try parse(text) },
            changed: { $0[keyPath: field] != $1[keyPath: field] })
    }

    static func list<T: Equatable & Sendable>(
        _ key: String, _ field: WritableKeyPath<DaemonConfiguration, T> & Sendable, default defaultValue: String,
        reloads: Bool = false, _ meaning: String,
        parse: @escaping @Sendable (ConfigListParser) throws(ConfigurationError) -> T
    ) -> Setting {
        Setting(
            key: key, defaultValue: defaultValue, meaning: meaning, reloads: reloads, isList: true, isSecret: false,
            reading: .list { items, config throws(ConfigurationError) in config[keyPath: field] = try parse(items) },
            changed: { $0[keyPath: field] != $1[keyPath: field] })
    }

    static func derived<T: Equatable & Sendable>(
        _ key: String, _ field: KeyPath<DaemonConfiguration, T> & Sendable, default defaultValue: String,
        reloads: Bool = false, secret: Bool = false, list: Bool = false, _ meaning: String
    ) -> Setting {
        Setting(
            key: key, defaultValue: defaultValue, meaning: meaning, reloads: reloads, isList: list, isSecret: secret,
            reading: .derived, changed: { $0[keyPath: field] != $1[keyPath: field] })
    }
}

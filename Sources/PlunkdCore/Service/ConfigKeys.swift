import Configuration

/// The configuration keys plunkd knows (declared in `Settings`), and the environment
/// variable that overrides each.
///
/// Keys under `plunk.` map to `PLUNK_…` (so the usual `PLUNK_API_KEY` works); all others
/// to `PLUNKD_…`, e.g. `socket.path` → `PLUNKD_SOCKET_PATH`.
public enum ConfigKeys {
    public static let all: [String] = Settings.all.map(\.key)

    /// Keys that take a list: a YAML list, or one comma-separated string (as environment
    /// variables must give them).
    public static var lists: Set<String> { Settings.listKeys }

    /// Environment variable naming the config file; not a key itself.
    public static let configFileVariable = "PLUNKD_CONFIG"

    public static func environmentVariable(for key: String) -> String {
        environmentKey(AbsoluteConfigKey(ConfigKey(key))).components.joined(separator: "_").uppercased()
    }

    /// The rule above, as the loader's environment provider applies it to every key it is
    /// asked for (swift-configuration then joins the components with `_` and uppercases).
    static func environmentKey(_ key: AbsoluteConfigKey) -> AbsoluteConfigKey {
        key.components.first == "plunk" ? key : key.prepending(["plunkd"])
    }

    /// The closest known key to a mistyped one, when it is close enough to be a likely typo.
    static func suggestion(for unknown: String) -> String? {
        let scored = all.map { ($0, editDistance(Array(unknown), Array($0))) }
        guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(2, unknown.count / 4) else { return nil }
        return best.0
    }

    private static func editDistance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for (i, ca) in a.enumerated() {
            var current = [i + 1]
            for (j, cb) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }
}

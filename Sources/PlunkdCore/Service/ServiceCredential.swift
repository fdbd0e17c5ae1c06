import Foundation

/// Where the installed `plunkd.service` finds a key (`Environment=PLUNK_API_KEY_FILE=PATH`,
/// or `LoadCredential=plunk-api-key:PATH` in an older or edited unit; the same for the
/// secret key), for `check-config` run from a shell: that setting exists only inside the
/// unit, so without this the check would say "not configured" while the service sends.
public struct ServiceCredential: Sendable, Equatable {
    /// Which of the two keys.
    public enum Key: Sendable, Equatable {
        /// `plunk.api_key`, for track.
        case api
        /// `plunk.secret_key`, for `/v1/send`.
        case secret

        var prefixes: [String] {
            switch self {
            case .api: ["LoadCredential=\(ConfigLoader.credentialName):", "Environment=PLUNK_API_KEY_FILE="]
            case .secret: ["LoadCredential=\(ConfigLoader.secretCredentialName):", "Environment=PLUNK_SECRET_KEY_FILE="]
            }
        }
    }

    /// The unit (or drop-in) that named the file.
    public let unit: String
    public let path: String
    public var key: Key = .api

    /// What the file holds, told without its value.
    public typealias Content = KeyFile

    /// The service's unit name, by which `summary` names it.
    public var service = "plunkd.service"

    static let unitDirectories = ["/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"]

    /// The last line naming `key`'s file in the installed unit and its drop-ins, as systemd
    /// reads them. For an instance: `plunkd@.service` (or a unit of the instance's own)
    /// with the template's and the instance's drop-ins, `%i` read as the name.
    public static func installed(_ key: Key = .api, instance: InstanceName? = nil, root: String = "") -> ServiceCredential? {
        let names = instance.map { [$0.unit, "plunkd@.service"] } ?? ["plunkd.service"]
        let units = names.flatMap { name in unitDirectories.map { "\($0)/\(name)" } }
        guard let unit = units.first(where: { FileManager.default.fileExists(atPath: root + $0) }) else { return nil }
        var files = [unit]
        for directory in ["/usr/lib/systemd/system", "/etc/systemd/system"] {
            for name in names.reversed() {
                let dropIns = "\(directory)/\(name).d"
                let entries = (try? FileManager.default.contentsOfDirectory(atPath: root + dropIns)) ?? []
                files += entries.filter { $0.hasSuffix(".conf") }.sorted().map { "\(dropIns)/\($0)" }
            }
        }
        var found: ServiceCredential?
        for file in files {
            guard let text = try? String(contentsOfFile: root + file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                for prefix in key.prefixes where trimmed.hasPrefix(prefix) {
                    var path = String(trimmed.dropFirst(prefix.count))
                    if let instance { path = path.replacingOccurrences(of: "%i", with: instance.name) }
                    found = ServiceCredential(unit: file, path: path, key: key, service: instance?.unit ?? "plunkd.service")
                }
            }
        }
        return found
    }

    public func content(root: String = "") -> Content {
        KeyFile.read(root + path)
    }

    /// One line for `check-config`.
    public func summary(root: String = "") -> String {
        let source = "\(service) reads its \(key == .api ? "key" : "secret key") from \(path) (\(unit))"
        switch content(root: root) {
        case .key(let value): return "not set here; \(source): configured (\(value)), so the running service sends"
        case .empty where key == .secret:
            return "not set here; \(source), which is empty: an sk_ plunk.api_key serves, else the service keeps emails and sends none"
        case .empty: return "not set here; \(source), which is empty: the service keeps events and sends nothing"
        case .unreadable: return "not set here; \(source), which exists but this user cannot read it (run check-config as root to check it)"
        case .missing: return "not set here; \(source), which does not exist: the service will not start until it does (an empty file means no key yet)"
        }
    }
}

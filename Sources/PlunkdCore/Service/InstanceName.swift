import Foundation

/// One of several plunkd daemons on a host, each forwarding to its own Plunk project:
/// `plunkd@NAME.service` with `plunkd@NAME.socket`, beside (or instead of) the plain
/// `plunkd.service`.
///
/// The name decides every path the instance owns, in code rather than in the unit, so
/// that an app's `plunkd track --instance NAME` finds the same socket the unit listens
/// on without reading a configuration it may not be allowed to read.
public struct InstanceName: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let name: String

    /// Lower-case letters, digits, `-` and `_`, starting with a letter or digit: a unit
    /// instance, a file name and, after `plunkd-`, a group name (at most 32 characters).
    public init(_ text: String) throws(ConfigurationError) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789-_")
        guard !text.isEmpty, text.count <= 25, text.allSatisfy(allowed.contains), text.first != "-", text.first != "_" else {
            throw ConfigurationError(
                "instance name \"\(text.prefix(40))\": use 1 to 25 lower-case letters, digits, - and _, starting with a letter or digit (it names a unit, files and the group plunkd-NAME)"
            )
        }
        guard text != "plunkd" else {
            throw ConfigurationError("instance name \"plunkd\" is taken: /etc/plunkd/plunkd.yaml is the plain plunkd.service's configuration")
        }
        guard text != "clients" else {
            throw ConfigurationError("instance name \"clients\" is taken: plunkd-clients is the plain plunkd.socket's group")
        }
        name = text
    }

    public var description: String { name }
    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.name < rhs.name }

    /// `plunkd@NAME.service`.
    public var unit: String { "plunkd@\(name).service" }
    /// `/etc/plunkd/NAME.yaml`, read when it exists.
    public var configFile: String { "\(Self.configurationDirectory)/\(name).yaml" }
    /// Where `plunkd@NAME.socket` listens, in a directory of its own.
    public var socketPath: String { "\(Self.runtimeRoot)/plunkd-\(name)/plunkd.sock" }
    /// In `plunkd@NAME.service`'s `StateDirectory=plunkd-NAME`.
    public var storagePath: String { "\(Self.stateRoot)/plunkd-\(name)/outbox.sqlite" }

    public static let configurationDirectory = "/etc/plunkd"
    public static let runtimeRoot = "/run"
    public static let stateRoot = "/var/lib"

    /// The instances this host has: named by a configuration (`/etc/plunkd/NAME.yaml`),
    /// a socket directory (`/run/plunkd-NAME`) or a state directory
    /// (`/var/lib/plunkd-NAME`), so one that is stopped or has no file of its own is
    /// found too. The roots are parameters for tests.
    public static func onHost(
        configurationDirectory: String = configurationDirectory, runtimeRoot: String = runtimeRoot, stateRoot: String = stateRoot
    ) -> [InstanceName] {
        let files = FileManager.default
        var names: Set<InstanceName> = []
        for entry in (try? files.contentsOfDirectory(atPath: configurationDirectory)) ?? [] where entry.hasSuffix(".yaml") {
            if let name = try? InstanceName(String(entry.dropLast(5))) { names.insert(name) }
        }
        for root in [runtimeRoot, stateRoot] {
            for entry in (try? files.contentsOfDirectory(atPath: root)) ?? [] where entry.hasPrefix("plunkd-") {
                var isDirectory: ObjCBool = false
                guard files.fileExists(atPath: "\(root)/\(entry)", isDirectory: &isDirectory), isDirectory.boolValue else { continue }
                if let name = try? InstanceName(String(entry.dropFirst(7))) { names.insert(name) }
            }
        }
        return names.sorted()
    }

    /// Whether the plain `plunkd.service` has anything on this host: its configuration,
    /// its socket directory or its store.
    public static func plainServiceOnHost(
        configurationDirectory: String = configurationDirectory, runtimeRoot: String = runtimeRoot, stateRoot: String = stateRoot
    ) -> Bool {
        ["\(configurationDirectory)/plunkd.yaml", "\(runtimeRoot)/plunkd", "\(stateRoot)/plunkd/outbox.sqlite"]
            .contains { FileManager.default.fileExists(atPath: $0) }
    }
}

import Foundation
import PlunkdTestSupport
import Testing

@testable import PlunkdCore

/// Several Plunk projects on one host: `plunkd@NAME`, its paths, its unit, and
/// `plunkd status --all`. The container test runs two instances under a real systemd.
@Suite("Instances: plunkd@NAME", .serialized, .timeLimit(.minutes(2)), .watchdog)
struct InstanceTests {
    @Test("a name is what a unit instance, a file and a group may be; plunkd and clients are taken")
    func names() throws {
        for good in ["shop", "client-a", "staging_2", "9lives", String(repeating: "a", count: 25)] {
            #expect((try? InstanceName(good)) != nil, "\(good)")
        }
        for bad in ["", "Shop", "a/b", "-a", "_a", "a b", "a.yaml", "../etc", String(repeating: "a", count: 26), "plunkd", "clients"] {
            #expect(throws: ConfigurationError.self, "\(bad)") { try InstanceName(bad) }
        }
        let shop = try InstanceName("shop")
        #expect(shop.unit == "plunkd@shop.service")
        #expect(shop.configFile == "/etc/plunkd/shop.yaml")
        #expect(shop.socketPath == "/run/plunkd-shop/plunkd.sock")
        #expect(shop.storagePath == "/var/lib/plunkd-shop/outbox.sqlite")
    }

    @Test("an instance's defaults are its own paths for every user, and its file is read; a setting still wins")
    func loadsTheInstancesConfiguration() async throws {
        let shop = try InstanceName("shop")
        let directory = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for uid: UInt32 in [0, 1000] {
            let loaded = try await ConfigLoader.load(
                file: nil, environment: ["HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1000"], uid: uid, defaultFile: nil, instance: shop)
            #expect(loaded.configuration.socketPath == "/run/plunkd-shop/plunkd.sock")
            #expect(loaded.configuration.storagePath == "/var/lib/plunkd-shop/outbox.sqlite")
            #expect(loaded.configuration.emailStoragePath == "/var/lib/plunkd-shop/outbox-email.sqlite")
        }
        let file = "\(directory)/shop.yaml"
        try "plunk:\n  base_url: http://127.0.0.1:9/v1\nstorage:\n  path: \(directory)/own.sqlite\n".write(
            toFile: file, atomically: true, encoding: .utf8)
        let loaded = try await ConfigLoader.load(file: nil, environment: [:], uid: 1000, defaultFile: file, instance: shop)
        #expect(loaded.file == file)
        #expect(loaded.configuration.plunkBaseURL.absoluteString == "http://127.0.0.1:9/v1")
        #expect(loaded.configuration.storagePath == "\(directory)/own.sqlite")
        #expect(loaded.configuration.socketPath == "/run/plunkd-shop/plunkd.sock")
    }

    @Test("the instances on a host are named by their configuration, socket directory or state directory, nothing else")
    func discovery() throws {
        let root = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        for folder in ["etc/plunkd/shop", "run/plunkd-staging", "var/lib/plunkd-archive", "run/plunkd", "var/lib/plunkd", "run/other"] {
            try fm.createDirectory(atPath: "\(root)/\(folder)", withIntermediateDirectories: true)
        }
        for file in ["etc/plunkd/shop.yaml", "etc/plunkd/plunkd.yaml", "etc/plunkd/Bad Name.yaml", "etc/plunkd/notes.txt", "var/lib/plunkd-file"] {
            _ = fm.createFile(atPath: "\(root)/\(file)", contents: Data())
        }
        let found = InstanceName.onHost(
            configurationDirectory: "\(root)/etc/plunkd", runtimeRoot: "\(root)/run", stateRoot: "\(root)/var/lib")
        #expect(found.map(\.name) == ["archive", "shop", "staging"])
        #expect(InstanceName.plainServiceOnHost(configurationDirectory: "\(root)/etc/plunkd", runtimeRoot: "\(root)/run", stateRoot: "\(root)/var/lib"))
        #expect(!InstanceName.plainServiceOnHost(configurationDirectory: "\(root)/none", runtimeRoot: "\(root)/none", stateRoot: "\(root)/none"))
    }

    @Test("status --all: one object keyed by unit, each report under its unit's name, and the worst severity")
    func hostStatus() throws {
        let now = Date()
        func report(_ severity: StatusReport.Severity, _ reason: String) -> StatusReport {
            var report = StatusAssessment.unknown(reason, context: StatusContext(socketPath: "/s", databasePath: "/d", warnOldestAge: 60), now: now)
            report.severity = severity
            return report
        }
        let host = HostStatus(entries: [
            .init(unit: "plunkd.service", report: report(.ok, "fine")),
            .init(unit: "plunkd@shop.service", report: report(.critical, "held")),
            .init(unit: "plunkd@staging.service", report: report(.warning, "slow")),
        ])
        #expect(host.severity == .critical)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(host.json().utf8)) as? [String: [String: Any]])
        #expect(Set(object.keys) == ["plunkd.service", "plunkd@shop.service", "plunkd@staging.service"])
        #expect(object["plunkd@shop.service"]?["severity"] as? String == "critical")
        let text = host.text(now: now)
        #expect(text.contains("── plunkd@shop.service\n✖ plunkd:"))
        #expect(text.contains("── plunkd@staging.service\n▲ plunkd:"))
        #expect(HostStatus(entries: []).severity == .unknown)
        #expect(HostStatus(entries: []).text().hasPrefix("no plunkd on this host"))
    }

    @Test("an instance's unit names its key files with %i; check-config reads them with the instance's name")
    func instanceCredential() throws {
        let root = try DaemonProcess.makeScratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: "\(root)/usr/lib/systemd/system", withIntermediateDirectories: true)
        let shipped = try String(contentsOfFile: "\(ReferenceTests.root)/systemd/plunkd@.service", encoding: .utf8)
        try shipped.write(toFile: "\(root)/usr/lib/systemd/system/plunkd@.service", atomically: true, encoding: .utf8)
        let shop = try InstanceName("shop")
        let key = try #require(ServiceCredential.installed(.api, instance: shop, root: root))
        #expect(key.path == "/etc/plunkd/shop/api-key")
        #expect(key.summary(root: root).hasPrefix("not set here; plunkd@shop.service reads its key from /etc/plunkd/shop/api-key"))
        #expect(ServiceCredential.installed(.secret, instance: shop, root: root)?.path == "/etc/plunkd/shop/secret-key")
        // The plain unit is not installed here, and an instance's drop-in wins over the template.
        #expect(ServiceCredential.installed(.api, root: root) == nil)
        try fm.createDirectory(atPath: "\(root)/etc/systemd/system/plunkd@shop.service.d", withIntermediateDirectories: true)
        try "[Service]\nEnvironment=PLUNK_API_KEY_FILE=/srv/keys/%i\n".write(
            toFile: "\(root)/etc/systemd/system/plunkd@shop.service.d/key.conf", atomically: true, encoding: .utf8)
        #expect(ServiceCredential.installed(.api, instance: shop, root: root)?.path == "/srv/keys/shop")
    }

    @Test("the binary: a client's --instance names the instance's socket; a bad name is refused in plain words")
    func clientFindsTheInstance() throws {
        let track = try DaemonProcess.command(["track", "--instance", "shop", "--event", "e", "--email", "a@example.com"])
        #expect(track.status != 0)
        #expect(track.stderr.contains("/run/plunkd-shop/plunkd.sock"), "\(track.stderr)")
        let bad = try DaemonProcess.command(["status", "--instance", "Shop/../x"])
        #expect(bad.status != 0)
        #expect(bad.stdout.contains("instance name") || bad.stderr.contains("instance name"), "\(bad.stdout) \(bad.stderr)")
        let all = try DaemonProcess.command(["status", "--all", "--instance", "shop"])
        #expect(all.status == 64, "\(all.stderr)")
        #expect(all.stderr.contains("--all reads each instance's own configuration"), "\(all.stderr)")
    }
}

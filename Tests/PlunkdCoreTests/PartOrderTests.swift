import Foundation
import Testing

/// docs/architecture.md's promise that data flows one way: no part of `Sources/PlunkdCore` uses a
/// type declared in a part after it. A value two parts share lives in the earlier one.
@Suite("Parts in order", .timeLimit(.minutes(1)), .watchdog)
struct PartOrderTests {
    static let order = ["Event", "Outbox", "Ingest", "Delivery", "Control", "Service"]
    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources/PlunkdCore")

    /// The file's code without comments and string literals, where names of later types
    /// may appear as words ("see `Daemon`").
    static func code(of file: URL) throws -> String {
        let text = try String(contentsOf: file, encoding: .utf8)
        let noComments = text.replacing(#/\/\/[^\n]*/#, with: "")
        return noComments.replacing(#/"(?:\\.|[^"\\\n])*"/#, with: "\"\"")
    }

    static func files(in part: String) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: sources.appendingPathComponent(part), includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "swift" }
    }

    /// Every part and the types its files declare at the top level.
    static func declarations() throws -> [String: String] {
        var declaredIn: [String: String] = [:]
        let declaration =
            #/(?m)^(?:public |private |fileprivate |internal |package )?(?:final )?(?:class|struct|enum|protocol|typealias|actor) ([A-Z][A-Za-z0-9_]*)/#
        for part in order {
            for file in try files(in: part) {
                for match in try code(of: file).matches(of: declaration) { declaredIn[String(match.1)] = part }
            }
        }
        return declaredIn
    }

    @Test("no file of a part uses a type declared in a later part")
    func noBackReferences() throws {
        let declaredIn = try Self.declarations()
        #expect(declaredIn.count > 100, "only \(declaredIn.count) types found: the scan lost its reach")
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: Self.sources.path)).subtracting(["Version.swift"]) == Set(Self.order))
        var backReferences: [String] = []
        for (index, part) in Self.order.enumerated() {
            let later = declaredIn.filter { Self.order.firstIndex(of: $0.value)! > index }.keys
            for file in try Self.files(in: part) {
                let code = try Self.code(of: file)
                for name in later where code.contains(try Regex("\\b\(name)\\b")) {
                    backReferences.append("\(part)/\(file.lastPathComponent) uses \(name) from \(declaredIn[name]!)")
                }
            }
        }
        #expect(backReferences.sorted() == [])
    }
}

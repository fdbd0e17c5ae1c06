import Foundation
import Testing

/// Every type the compiler is told to trust across threads says what it trusts: the
/// queue, loop or lock its mutable state stays on. A new `@unchecked Sendable` without
/// that line fails here, so the reason is written when the promise is made.
@Suite("Unchecked Sendable, accounted for", .timeLimit(.minutes(1)), .watchdog)
struct UncheckedSendableTests {
    @Test("each @unchecked Sendable type of PlunkdCore has an \"Unchecked `Sendable`:\" line in its doc comment")
    func everyOneSaysWhy() throws {
        let files = try #require(FileManager.default.enumerator(at: PartOrderTests.sources, includingPropertiesForKeys: nil))
        var declarations = 0
        var unexplained: [String] = []
        for case let file as URL in files where file.pathExtension == "swift" {
            let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            for (index, line) in lines.enumerated() where line.contains("@unchecked Sendable") && !line.hasPrefix("//") {
                declarations += 1
                let docComment = lines[..<index].reversed().prefix { $0.hasPrefix("///") }
                if !docComment.contains(where: { $0.contains("Unchecked `Sendable`:") }) {
                    unexplained.append("\(file.lastPathComponent):\(index + 1)")
                }
            }
        }
        #expect(declarations >= 10, "the scan found \(declarations) declarations: it no longer reads the sources")
        #expect(unexplained.isEmpty, "say what confines their state: \(unexplained)")
    }
}

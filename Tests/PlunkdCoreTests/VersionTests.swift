import Testing
@testable import PlunkdCore
@Test func version() { #expect(!PlunkdVersion.string.isEmpty) }

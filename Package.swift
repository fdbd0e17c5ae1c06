// swift-tools-version: 6.2
import Foundation
import PackageDescription

#if canImport(Glibc)
    import Glibc
#endif

/// `PLUNKD_FUZZ=1 swift build --product plunkd-fuzz` instruments only the code under test
/// (PlunkdCore and the harness) for libFuzzer and links its runtime, so the dependencies'
/// objects are reused from an ordinary debug build instead of being rebuilt with
/// `-Xswiftc -sanitize=fuzzer` (a second full build, about 7 minutes).
let fuzzing = ProcessInfo.processInfo.environment["PLUNKD_FUZZ"] == "1"
let fuzzerInstrumentation: [SwiftSetting] = fuzzing ? [.unsafeFlags(["-sanitize=fuzzer"])] : []

/// A release build of the daemon links with lld, packs its relative relocations (DT_RELR)
/// and exports no symbols. `--static-swift-stdlib` otherwise exports every symbol of every
/// Swift module (32,740, with 2 MB of names) and gold writes 2.9 MB of relocations, all of
/// it read at each start and then resident: together 5 MB of the ingest benchmark's peak
/// RSS (docs/benchmarks.md). The loader must know DT_RELR (glibc 2.36, Debian 12), so it is
/// packed only when the machine building has such a glibc, which is what runs the binary.
/// A toolchain without `ld.lld` (beside `swiftc`, or on the PATH) links as before.
///
/// lld also lays the code out in the order of `Sources/plunkd/code-order.txt`: the
/// functions the benchmarks run, hottest first, from a profile
/// (`Benchmarks/profile-code-order`). A page fault on the binary maps the 15 pages around
/// it too (the kernel's fault-around), so code that runs, spread over all of `.text`,
/// kept 15.6 MB of it resident when idle; gathered at its front, 5 to 6 MB less of the benchmarks'
/// peak RSS. Functions renamed since the profile only fall back to the usual place.
let leanReleaseLink: [LinkerSetting] = {
    #if canImport(Glibc)
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        let toolchains = path.filter { FileManager.default.isExecutableFile(atPath: "\($0)/swiftc") }.map {
            URL(fileURLWithPath: "\($0)/swiftc").resolvingSymlinksInPath().deletingLastPathComponent().path
        }
        guard (path + toolchains).contains(where: { FileManager.default.isExecutableFile(atPath: "\($0)/ld.lld") }) else { return [] }
        var bytes = [UInt8](repeating: 0, count: 64)  // "glibc 2.36"
        let length = bytes.withUnsafeMutableBufferPointer { confstr(Int32(_CS_GNU_LIBC_VERSION), $0.baseAddress, $0.count) }
        let text = String(decoding: bytes.prefix(max(length - 1, 0)), as: UTF8.self)
        let version = text.split(separator: " ").last?.split(separator: ".").compactMap { Int($0) } ?? []
        let packsRelocations = version.count >= 2 && (version[0], version[1]) >= (2, 36)
        let codeOrder = "\(Context.packageDirectory)/Sources/plunkd/code-order.txt"
        let flags =
            ["-use-ld=lld", "-Xlinker", "--no-export-dynamic"]
            + (packsRelocations ? ["-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"] : [])
            + ["-Xlinker", "--symbol-ordering-file=\(codeOrder)", "-Xlinker", "--no-warn-symbol-ordering"]
        return [.unsafeFlags(flags, .when(platforms: [.linux], configuration: .release))]
    #else
        return []
    #endif
}()

let package = Package(
    name: "plunkd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "plunkd", targets: ["plunkd"]),
        .library(name: "PlunkdCore", targets: ["PlunkdCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0", traits: ["YAML"]),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        .target(
            name: "PlunkdCore",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: fuzzerInstrumentation
        ),
        .executableTarget(
            name: "plunkd",
            dependencies: [
                "PlunkdCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            exclude: ["code-order.txt"],
            linkerSettings: leanReleaseLink
        ),
        .target(
            name: "PlunkdTestSupport",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            ],
            path: "Sources/PlunkdTestSupport"
        ),
        .executableTarget(
            name: "plunkd-soak",
            dependencies: [
                "PlunkdTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Benchmarks/Soak"
        ),
        .executableTarget(
            name: "plunkd-ingest-bench",
            dependencies: [
                "PlunkdCore",
                "PlunkdTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Benchmarks/IngestBenchmark"
        ),
        .executableTarget(
            name: "plunkd-delivery-bench",
            dependencies: [
                "PlunkdCore",
                "PlunkdTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            path: "Benchmarks/DeliveryBenchmark"
        ),
        // libFuzzer over the socket framing and validation. Build it on its own, with the
        // fuzzer runtime: see README.md ("Guarantees").
        .executableTarget(
            name: "plunkd-fuzz",
            dependencies: [
                "PlunkdCore",
                "PlunkdTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/IngestFuzzer",
            exclude: ["corpus"],
            swiftSettings: fuzzerInstrumentation + (fuzzing ? [.define("FUZZING")] : []),
            linkerSettings: fuzzing ? [.unsafeFlags(["-sanitize=fuzzer"])] : []
        ),
        .testTarget(
            name: "PlunkdCoreTests",
            dependencies: [
                "PlunkdCore",
                "PlunkdTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

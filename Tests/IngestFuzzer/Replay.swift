import Foundation

#if !FUZZING
    /// Without libFuzzer (a plain `swift build`): replay the given files, such as the seed
    /// corpus or a crash reproducer, through the same entry point.
    @main
    struct ReplayInputs {
        static func main() {
            let files = CommandLine.arguments.dropFirst().flatMap { path -> [String] in
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return [] }
                guard isDirectory.boolValue else { return [path] }
                return ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { "\(path)/\($0)" }
            }
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                _ = data.withUnsafeBytes { raw in
                    fuzzOneInput(raw.bindMemory(to: UInt8.self).baseAddress ?? UnsafePointer(bitPattern: 1)!, raw.count)
                }
            }
            Harness.shared.checkStillServing()
            print("replayed \(files.count) inputs; the server still serves")
        }
    }
#endif

#if FUZZING
    /// libFuzzer's driver, from its runtime (linked by `-sanitize=fuzzer`).
    // swift-format-ignore: AlwaysUseLowerCamelCase
    // (the C symbol libFuzzer exports)
    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32
    ) -> Int32

    /// SwiftPM links a debug executable's `main` to `<module>_main`; hand it to libFuzzer.
    @main
    struct FuzzerEntry {
        static func main() {
            var argc = CommandLine.argc
            var argv = CommandLine.unsafeArgv
            exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })
        }
    }
#endif

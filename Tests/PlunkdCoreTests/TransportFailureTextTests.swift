import NIOSSL
import Testing

@testable import PlunkdCore

/// Failures below HTTP in plain words, for the cases no live connection can stage here.
@Suite("Transport failures in plain words", .timeLimit(.minutes(1)), .watchdog)
struct TransportFailureTextTests {
    @Test("TLS that cannot be set up (no CA certificates on a minimal system) names the fix, not unknownError([])")
    func tlsSetup() {
        let text = TransportFailureText.describe(
            BoringSSLError.unknownError([]), destination: .init(host: "api.useplunk.com", port: 443), timeout: 10)
        #expect(
            text
                == "TLS: cannot set up TLS for api.useplunk.com: are the system's CA certificates installed (apt-get install ca-certificates)? A private CA goes in plunk.ca_file"
        )
    }
}

import Foundation
import PlunkdTestSupport

#if canImport(Glibc)
    import Glibc
#endif

/// nginx in front of the stand-in, speaking TLS 1.3 with h2 and HTTP/1.1 offered by ALPN
/// as Plunk's own front does, and passing each request on to the stand-in over kept-alive
/// plain HTTP. The syslog-ng comparison over TLS needs it: syslog-ng's libcurl delivered
/// nothing to the stand-in's own TLS, and one front for both daemons keeps the job equal.
/// It dies with the benchmark however that ends.
struct TLSFront {
    let url: URL
    let certificates: TestCertificates
    private let process: SpawnedProcess

    static let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Starts nginx before the stand-in on `standPort`, or returns nil without nginx.
    init?(standPort: Int, directory: String) throws {
        guard let binary = Self.binary else { return nil }
        certificates = try TestCertificates()
        let port = 40000 + Int(getpid() % 20000)
        let c = certificates.directory
        let config = """
            worker_processes 1; daemon off; pid \(directory)/nginx-tls.pid; error_log \(directory)/nginx-tls.err;
            events { worker_connections 4096; }
            http { access_log off; keepalive_requests 1000000;
              upstream plunk { server 127.0.0.1:\(standPort); keepalive 64; }
              server { listen 127.0.0.1:\(port) ssl http2;
                ssl_certificate \(c)/server.pem; ssl_certificate_key \(c)/server.key; ssl_protocols TLSv1.3;
                location / { proxy_pass http://plunk; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
            """
        try config.write(toFile: "\(directory)/nginx-tls.conf", atomically: true, encoding: .utf8)
        let pid = try SpawnedCommand.start(
            binary, ["-c", "\(directory)/nginx-tls.conf", "-p", directory], outputPath: "\(directory)/nginx-tls.out", endsWithCaller: true)
        process = SpawnedProcess(pid: pid)
        url = URL(string: "https://127.0.0.1:\(port)/v1")!
        // nginx writes its pid file once it listens.
        guard Poll.blockingUntil(timeout: 10, { FileManager.default.fileExists(atPath: "\(directory)/nginx-tls.pid") }), process.isRunning else {
            stop()
            return nil
        }
    }

    func stop() {
        kill(process.pid, SIGTERM)
        if !Poll.blockingUntil(timeout: 10, { !process.isRunning }) { kill(process.pid, SIGKILL) }
        certificates.remove()
    }
}

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A plain blocking client socket for tests and benchmarks.
///
/// Tests need to misbehave on purpose (half-close, send garbage, stop reading, drip bytes)
/// and benchmarks need a client whose own cost is small and obvious; a blocking socket
/// does both with no event loop between the test and the bytes.
///
/// Sendable so that one thread may write while another reads: the kernel keeps the two
/// directions apart, and only the reading thread touches the receive buffer.
public final class BlockingUnixSocket: @unchecked Sendable {
    public let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    private var chunk = [UInt8](repeating: 0, count: 65536)

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(description: String) { self.description = description }
    }

    /// - Parameter receiveTimeout: how long one read or write may wait (nil: 120 s).
    public init(path: String, receiveTimeout: Double? = 30) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        // No close here: every stored property is set, so a throw from here on runs
        // `deinit`, which closes `fd`. Closing it here too closed it twice, and the second
        // close hit whatever descriptor another thread had opened under that number
        // meanwhile (an event loop's socket: NIO's EBADF preconditions in parallel runs,
        // as `waitUntilServing` polls a socket that is not served yet).
        guard result == 0 else {
            throw Failure(description: "connect \(path): \(String(cString: strerror(errno)))")
        }
        // Reads and writes both end: a write to a daemon that stopped reading fails after
        // a while instead of holding the test (and the run) for ever.
        let timeout = receiveTimeout ?? 120
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { Glibc.close(fd) }

    public func write(_ text: String) throws { try write(Array(text.utf8)) }

    public func write(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(description: "send: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }

    /// Closes the sending side; replies can still be read.
    public func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Reads one line without its newline; nil at end of stream.
    public func readLine() throws -> String? {
        while true {
            if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[start..<newline], as: UTF8.self)
                start = newline + 1
                compact()
                return line
            }
            guard try fill() else {
                return nil
            }
        }
    }

    /// Reads whatever arrives until the peer closes; what was buffered comes first.
    public func readToEnd() throws -> String {
        while try fill() {}
        let text = String(decoding: buffer[start...], as: UTF8.self)
        buffer.removeAll()
        start = 0
        return text
    }

    /// Reads one HTTP/1.1 response with a Content-Length body.
    public func readHTTPResponse() throws -> (status: Int, headers: [String: String], body: String)? {
        var headerLines: [String] = []
        while true {
            guard var line = try readLine() else { return nil }
            if line.hasSuffix("\r") { line.removeLast() }
            if line.isEmpty { break }
            headerLines.append(line)
        }
        guard let statusLine = headerLines.first, statusLine.split(separator: " ").count >= 2,
            let status = Int(statusLine.split(separator: " ")[1])
        else { throw Failure(description: "bad status line: \(headerLines.first ?? "")") }
        var headers: [String: String] = [:]
        for line in headerLines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        while buffer.count - start < length {
            guard try fill() else { throw Failure(description: "connection closed inside a response body") }
        }
        let body = String(decoding: buffer[start..<(start + length)], as: UTF8.self)
        start += length
        compact()
        if status == 100 { return try readHTTPResponse() }
        return (status, headers, body)
    }

    /// True when the peer has closed (a read returns end of stream) within the receive timeout.
    public func peerClosed() -> Bool {
        (try? fill()) == false
    }

    private func fill() throws -> Bool {
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                buffer.append(contentsOf: chunk[0..<n])
                return true
            }
            if n == 0 { return false }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { throw Failure(description: "timed out waiting for the daemon") }
            if errno == ECONNRESET { return false }
            throw Failure(description: "recv: \(String(cString: strerror(errno)))")
        }
    }

    private func compact() {
        if start > 65536 && start * 2 > buffer.count {
            buffer.removeFirst(start)
            start = 0
        }
    }
}

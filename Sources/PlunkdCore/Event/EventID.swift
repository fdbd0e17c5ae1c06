import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension UUID {
    /// A random (version 4) UUID from the system generator.
    ///
    /// Foundation's `UUID()` on Linux opens, reads and closes `/dev/urandom` for every id:
    /// three system calls and a file descriptor on the path of every event.
    /// glibc's `arc4random_buf` (2.36 and later) fills all 16 bytes from the kernel's
    /// CSPRNG with one `getrandom`; the standard generator makes one call per 8 bytes.
    public static func randomEventID() -> UUID {
        var bytes: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &bytes) { raw in
            #if canImport(Glibc)
                arc4random_buf(raw.baseAddress!, 16)
            #else
                var generator = SystemRandomNumberGenerator()
                raw.storeBytes(of: generator.next() as UInt64, toByteOffset: 0, as: UInt64.self)
                raw.storeBytes(of: generator.next() as UInt64, toByteOffset: 8, as: UInt64.self)
            #endif
        }
        bytes.6 = (bytes.6 & 0x0F) | 0x40
        bytes.8 = (bytes.8 & 0x3F) | 0x80
        return UUID(uuid: bytes)
    }
}

extension UUID {
    /// The lower-case text form: the stored id, the Idempotency-Key and the id in acks.
    /// Written directly instead of `uuidString.lowercased()`, which builds two strings and
    /// maps case through Unicode tables, twice on every event's path (store and ack).
    public var lowercasedText: String {
        withUnsafeBytes(of: uuid) { raw in
            String(unsafeUninitializedCapacity: 36) { text in
                let digits: StaticString = "0123456789abcdef"
                var position = 0
                for (index, byte) in raw.enumerated() {
                    if index == 4 || index == 6 || index == 8 || index == 10 {
                        text[position] = UInt8(ascii: "-")
                        position += 1
                    }
                    text[position] = digits.utf8Start[Int(byte >> 4)]
                    text[position + 1] = digits.utf8Start[Int(byte & 0x0F)]
                    position += 2
                }
                return position
            }
        }
    }
}
